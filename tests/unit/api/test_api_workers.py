"""Several API worker processes agree on the read-token signing key."""

from __future__ import annotations

import pytest
from agentrun_api.auth import sign_read_token, verify_read_token
from agentrun_api.main import READ_TOKEN_KEY_ENV, share_read_token_key
from agentrun_api.settings import APISettings


def _worker_settings(environ: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> APISettings:
    """The settings a spawned worker reads from the environment it inherited."""
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    return APISettings()


def test_workers_without_a_configured_key_share_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(READ_TOKEN_KEY_ENV, raising=False)
    environ: dict[str, str] = {}
    share_read_token_key(APISettings(), environ)
    assert len(environ[READ_TOKEN_KEY_ENV]) >= 32
    first, _ = _worker_settings(environ, monkeypatch).read_token_keys()
    second, verify = _worker_settings(environ, monkeypatch).read_token_keys()
    assert first is not None
    assert first == second
    token = sign_read_token("run_abc", "uid-1", first, 900, now=1000.0)
    assert verify_read_token(token, "run_abc", "uid-1", verify, now=1001.0)


def test_a_configured_key_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    configured = "k" * 40
    monkeypatch.setenv(READ_TOKEN_KEY_ENV, configured)
    environ: dict[str, str] = {READ_TOKEN_KEY_ENV: configured}
    share_read_token_key(APISettings(), environ)
    assert environ == {READ_TOKEN_KEY_ENV: configured}

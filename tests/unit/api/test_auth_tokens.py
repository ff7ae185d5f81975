"""Token matching, signed read tokens and settings-derived keys."""

from __future__ import annotations

from pathlib import Path

import pytest
from agentrun_api.auth import (
    Authenticator,
    match_token,
    presented_token,
    sign_read_token,
    verify_read_token,
)
from agentrun_api.settings import APISettings

KEY = b"k" * 32


def test_read_token_round_trip_and_expiry() -> None:
    token = sign_read_token("run_a", KEY, ttl=900, now=1000.0)
    assert verify_read_token(token, "run_a", KEY, now=1000.0)
    assert verify_read_token(token, "run_a", KEY, now=1900.0)
    assert not verify_read_token(token, "run_a", KEY, now=1900.5)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda t: t.replace("v1.", "v2.", 1),
        lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),
        lambda t: "v1.99999999999." + t.split(".")[2],
        lambda t: "garbage",
        lambda t: "v1.x.y",
        lambda t: "",
    ],
)
def test_tampered_read_tokens_fail(mutate) -> None:  # type: ignore[no-untyped-def]
    token = sign_read_token("run_a", KEY, ttl=900, now=1000.0)
    assert not verify_read_token(mutate(token), "run_a", KEY, now=1000.0)


def test_read_tokens_are_run_scoped_and_key_scoped() -> None:
    token = sign_read_token("run_a", KEY, ttl=900, now=1000.0)
    assert not verify_read_token(token, "run_b", KEY, now=1000.0)
    assert not verify_read_token(token, "run_a", b"other", now=1000.0)


def test_match_token_returns_the_name() -> None:
    tokens = {"ci": "alpha", "laptop": "beta"}
    assert match_token("beta", tokens) == "laptop"
    assert match_token("gamma", tokens) is None
    assert match_token("alph", tokens) is None
    assert match_token("é", tokens) is None


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"authorization": "Bearer abc"}, "abc"),
        ({"authorization": "bearer  abc "}, "abc"),
        ({"authorization": "Basic abc"}, None),
        ({"authorization": "Bearer "}, None),
        ({"x-api-key": "k1"}, "k1"),
        ({"authorization": "Basic x", "x-api-key": "k1"}, "k1"),
        ({}, None),
    ],
)
def test_presented_token(headers: dict[str, str], expected: str | None) -> None:
    assert presented_token(headers) == expected


def test_authenticator_with_auth_off_is_anonymous() -> None:
    auth = Authenticator(enabled=False, tokens={}, key=KEY, read_token_ttl=60)
    assert auth.token_name({}) == "anonymous"
    assert auth.read_token_for("run_a") is None


def test_settings_merge_tokens_dir_and_env(tmp_path: Path) -> None:
    (tmp_path / "ci").write_text("from-file\n")
    (tmp_path / "..data").mkdir()
    (tmp_path / ".hidden").write_text("nope")
    (tmp_path / "empty").write_text("   ")
    settings = APISettings(tokens_dir=tmp_path, tokens={"dev": "from-env"})
    assert settings.all_tokens() == {"ci": "from-file", "dev": "from-env"}


def test_signing_key_is_shared_by_replicas_and_changes_with_tokens() -> None:
    a = APISettings(tokens={"x": "1", "y": "2"}).signing_key()
    b = APISettings(tokens={"y": "2", "x": "1"}).signing_key()
    c = APISettings(tokens={"x": "1", "y": "3"}).signing_key()
    assert a == b != c
    assert APISettings(read_token_key="explicit").signing_key() == b"explicit"


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTRUN_API_TOKENS", '{"ci": "t1"}')
    monkeypatch.setenv("AGENTRUN_API_AUTH_ENABLED", "false")
    monkeypatch.setenv("AGENTRUN_API_STREAM__HEARTBEAT_SECONDS", "3")
    monkeypatch.setenv("AGENTRUN_API_WEBHOOK_POLICY__ALLOW_LOOPBACK", "true")
    monkeypatch.setenv("AGENTRUN_API_FRAMEWORKS", '["praisonai", "crewai"]')
    settings = APISettings()
    assert settings.all_tokens() == {"ci": "t1"}
    assert settings.auth_enabled is False
    assert settings.stream.heartbeat_seconds == 3
    assert settings.webhook_policy.allow_loopback is True
    assert settings.frameworks == ["praisonai", "crewai"]


def test_every_setting_is_documented() -> None:
    for name, field in APISettings.model_fields.items():
        assert field.description, name

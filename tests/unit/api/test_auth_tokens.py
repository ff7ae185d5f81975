"""Token matching, signed read tokens and settings-derived keys."""

from __future__ import annotations

from pathlib import Path

import pytest
from agentrun_api.app import build_authenticator
from agentrun_api.auth import (
    EVERYONE,
    Authenticator,
    Caller,
    match_token,
    presented_token,
    sign_read_token,
    verify_read_token,
)
from agentrun_api.records import RunRecord, record_from_object
from agentrun_api.settings import APISettings
from agentrun_contract import names


def record(name: str, uid: str, submitter: str | None = None) -> RunRecord:
    labels = {names.LABEL_SUBMITTER: submitter} if submitter else {}
    return record_from_object({"metadata": {"name": name, "uid": uid, "labels": labels}})


KEY = b"k" * 32
OLD = b"o" * 32


def test_read_token_round_trip_and_expiry() -> None:
    token = sign_read_token("run_a", "uid-1", KEY, ttl=900, now=1000.0)
    assert verify_read_token(token, "run_a", "uid-1", [KEY], now=1000.0)
    assert verify_read_token(token, "run_a", "uid-1", [KEY], now=1900.0)
    assert not verify_read_token(token, "run_a", "uid-1", [KEY], now=1900.5)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda t: t.replace("v2.", "v1.", 1),
        lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),
        lambda t: "v2.99999999999." + t.split(".")[2],
        lambda t: "garbage",
        lambda t: "v2.x.y",
        lambda t: "",
    ],
)
def test_tampered_read_tokens_fail(mutate) -> None:  # type: ignore[no-untyped-def]
    token = sign_read_token("run_a", "uid-1", KEY, ttl=900, now=1000.0)
    assert not verify_read_token(mutate(token), "run_a", "uid-1", [KEY], now=1000.0)


def test_read_tokens_are_run_scoped_and_key_scoped() -> None:
    token = sign_read_token("run_a", "uid-1", KEY, ttl=900, now=1000.0)
    assert not verify_read_token(token, "run_b", "uid-1", [KEY], now=1000.0)
    assert not verify_read_token(token, "run_a", "uid-1", [b"other" * 8], now=1000.0)


def test_read_tokens_are_bound_to_the_runs_uid() -> None:
    """DELETE and re-create under the same Idempotency-Key: same job_id, new uid; the old
    run's read token must not read the new run."""
    token = sign_read_token("run_a", "uid-old", KEY, ttl=900, now=1000.0)
    assert verify_read_token(token, "run_a", "uid-old", [KEY], now=1000.0)
    assert not verify_read_token(token, "run_a", "uid-new", [KEY], now=1000.0)
    assert not verify_read_token(token, "run_a", "", [KEY], now=1000.0)


def test_read_tokens_verify_under_every_rotation_key() -> None:
    old_token = sign_read_token("run_a", "u", OLD, ttl=900, now=1000.0)
    new_token = sign_read_token("run_a", "u", KEY, ttl=900, now=1000.0)
    overlap = [KEY, OLD]
    assert verify_read_token(old_token, "run_a", "u", overlap, now=1000.0)
    assert verify_read_token(new_token, "run_a", "u", overlap, now=1000.0)
    assert not verify_read_token(old_token, "run_a", "u", [KEY], now=1000.0)  # OLD retired


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
    auth = Authenticator(
        enabled=False, tokens={}, signing_key=KEY, verify_keys=(KEY,), read_token_ttl=60
    )
    assert auth.token_name({}) == "anonymous"
    assert auth.caller({}) == EVERYONE
    assert auth.read_token_for(record("run-a", "u")) is None


def test_settings_merge_tokens_dir_and_env(tmp_path: Path) -> None:
    (tmp_path / "ci").write_text("from-file\n")
    (tmp_path / "..data").mkdir()
    (tmp_path / ".hidden").write_text("nope")
    (tmp_path / "empty").write_text("   ")
    settings = APISettings(tokens_dir=tmp_path, tokens={"dev": "from-env"})
    assert settings.all_tokens() == {"ci": "from-file", "dev": "from-env"}


def test_signing_key_is_its_own_secret_never_derived_from_the_tokens(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "signing-key").write_text("n" * 40 + "\n")
    (keys / "previous").write_text("p" * 40)
    (keys / "..data").mkdir()
    one = APISettings(auth_enabled=True, tokens={"x": "1"}, read_token_keys_dir=keys)
    two = APISettings(auth_enabled=True, tokens={"x": "1", "y": "2"}, read_token_keys_dir=keys)
    assert one.read_token_keys() == two.read_token_keys() == (b"n" * 40, (b"n" * 40, b"p" * 40))
    first, second = build_authenticator(one), build_authenticator(two)
    assert first.signing_key == second.signing_key == b"n" * 40
    # a token signed by one replica (one token set) reads on another (a token added)
    run = record("run-a", "u-1")
    token = first.read_token_for(run)
    assert token is not None
    assert second.can_read(run, token)


def test_read_token_env_keys_and_file_precedence(tmp_path: Path) -> None:
    settings = APISettings(read_token_key="e" * 32, read_token_verify_keys=["v" * 32])
    assert settings.read_token_keys() == (b"e" * 32, (b"e" * 32, b"v" * 32))
    (tmp_path / "signing-key").write_text("f" * 32)
    settings = APISettings(read_token_key="e" * 32, read_token_keys_dir=tmp_path)
    assert settings.read_token_keys()[0] == b"f" * 32


def test_a_short_read_token_key_is_refused() -> None:
    with pytest.raises(ValueError, match="openssl rand"):
        APISettings(read_token_key="short").read_token_keys()


def test_without_a_signing_key_each_process_draws_a_random_one() -> None:
    settings = APISettings(auth_enabled=True, tokens={"x": "1"})
    a, b = build_authenticator(settings), build_authenticator(settings)
    assert len(a.signing_key) == 32
    assert a.signing_key != b.signing_key
    assert a.signing_key in a.verify_keys


def test_scoping_a_token_sees_its_runs_admins_see_all() -> None:
    auth = Authenticator(
        enabled=True,
        tokens={"ci": "t-ci", "laptop": "t-laptop", "ops": "t-ops"},
        signing_key=KEY,
        verify_keys=(KEY,),
        read_token_ttl=60,
        admin_tokens=frozenset({"ops"}),
    )
    ci = auth.caller({"authorization": "Bearer t-ci"})
    laptop = auth.caller({"x-api-key": "t-laptop"})
    ops = auth.caller({"authorization": "Bearer t-ops"})
    assert ci is not None
    assert laptop is not None
    assert ops is not None
    assert auth.caller({"authorization": "Bearer nope"}) is None
    mine = record("run-a", "u1", submitter=names.submitter_label_value("ci"))
    unlabelled = record("run-k", "u2")  # kubectl-made, or submitted before scoping
    assert ci.may_see(mine)
    assert not laptop.may_see(mine)
    assert ops.may_see(mine)
    assert not ci.may_see(unlabelled)
    assert not laptop.may_see(unlabelled)
    assert ops.may_see(unlabelled)
    assert ci.submitter_label == names.submitter_label_value("ci") != laptop.submitter_label
    reader = Caller(token_name=None, sees_all=False, run_uid="u1")
    assert reader.may_see(mine)
    assert not reader.may_see(unlabelled)


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


def test_backpressure_is_on_by_default() -> None:
    assert APISettings().max_queued_runs == 10_000


def test_admin_tokens_and_trusted_proxies_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTRUN_API_ADMIN_TOKENS", '["ops"]')
    monkeypatch.setenv("AGENTRUN_API_TRUSTED_PROXY_CIDRS", '["10.244.0.0/16", "fd00::/8"]')
    settings = APISettings()
    assert settings.admin_tokens == ["ops"]
    assert [str(n) for n in settings.trusted_proxy_cidrs] == ["10.244.0.0/16", "fd00::/8"]
    monkeypatch.setenv("AGENTRUN_API_TRUSTED_PROXY_CIDRS", '["10.244.0.1/16"]')
    with pytest.raises(ValueError, match="not a valid IPv4 or IPv6 network"):
        APISettings()


def test_cache_staleness_must_exceed_the_watch_timeout() -> None:
    with pytest.raises(ValueError, match="must exceed"):
        APISettings(cache_watch_timeout_seconds=60, cache_stale_seconds=30)


def test_every_setting_is_documented() -> None:
    for name, field in APISettings.model_fields.items():
        assert field.description, name

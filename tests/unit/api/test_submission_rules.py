"""Every rule of the POST /runs body table, as pure functions (no cluster, no HTTP)."""

from __future__ import annotations

from typing import Any

import pytest
from agentrun_api.fingerprint import canonical_json, request_fingerprint
from agentrun_api.submission import (
    SubmissionError,
    SubmitRequest,
    decode_json_object,
    parse_submission,
)


def parse(body: dict[str, Any], header_key: str | None = None, **kw: Any) -> SubmitRequest:
    return parse_submission(
        body,
        header_key=header_key,
        frameworks=kw.get("frameworks", ["praisonai"]),
        timeout_max=kw.get("timeout_max", 86400),
    )


def refused(body: dict[str, Any], header_key: str | None = None, **kw: Any) -> SubmissionError:
    with pytest.raises(SubmissionError) as info:
        parse(body, header_key, **kw)
    return info.value


def test_defaults_are_applied() -> None:
    request = parse({"prompt": "hi"})
    assert request == SubmitRequest(
        prompt="hi",
        agent_file="agents.yaml",
        agent_yaml=None,
        framework="praisonai",
        timeout=3600,
        webhook_url=None,
        session_id=None,
        idempotency_key=None,
    )


def test_nulls_read_as_absent_except_for_the_prompt() -> None:
    request = parse(
        {
            "prompt": "hi",
            "agent_file": None,
            "framework": None,
            "timeout": None,
            "webhook_url": None,
            "session_id": None,
            "recipe_name": None,
            "config": None,
        }
    )
    assert request.agent_file == "agents.yaml"
    assert request.timeout == 3600
    assert refused({"prompt": None}).status_code == 400


@pytest.mark.parametrize("prompt", [None, "", "  ", 3, 2.5, True, [], {}])
def test_prompt_faults_are_400(prompt: Any) -> None:
    body = {} if prompt is None else {"prompt": prompt}
    error = refused(body)
    assert error.status_code == 400
    assert "prompt" in error.detail


def test_prompt_size_counts_utf8_bytes() -> None:
    assert parse({"prompt": "a" * 65536}).prompt
    error = refused({"prompt": "é" * 32769})  # 65538 bytes, 32769 characters
    assert error.status_code == 422
    assert "64 KiB" in error.detail


def test_lone_surrogates_are_refused() -> None:
    assert refused({"prompt": "a\ud800"}).status_code == 400
    assert refused({"prompt": "a", "session_id": "\udfff"}).status_code == 422


@pytest.mark.parametrize(
    ("header", "body_key", "expected"),
    [
        ("k1", None, "k1"),
        (None, "k2", "k2"),
        ("same", "same", "same"),
        (None, None, None),
    ],
)
def test_idempotency_key_sources(
    header: str | None, body_key: str | None, expected: str | None
) -> None:
    body: dict[str, Any] = {"prompt": "x"}
    if body_key is not None:
        body["idempotency_key"] = body_key
    assert parse(body, header).idempotency_key == expected


@pytest.mark.parametrize("key", ["", "x" * 256, "é", "a\tb", "a\x00b", "\x7f"])
def test_invalid_keys_are_400_from_either_place(key: str) -> None:
    assert refused({"prompt": "x"}, key).status_code == 400
    assert refused({"prompt": "x", "idempotency_key": key}).status_code == 400


def test_key_limits_are_inclusive() -> None:
    assert parse({"prompt": "x"}, "~" * 255).idempotency_key == "~" * 255
    assert parse({"prompt": "x"}, " ").idempotency_key == " "


def test_keys_that_differ_are_400_and_a_non_string_body_key_too() -> None:
    assert refused({"prompt": "x", "idempotency_key": "a"}, "b").status_code == 400
    assert refused({"prompt": "x", "idempotency_key": 5}).status_code == 400


@pytest.mark.parametrize(
    ("path", "ok"),
    [
        ("agents.yaml", True),
        ("team/agents.yaml", True),
        ("a..b.yaml", True),
        ("../agents.yaml", False),
        ("team/../../x", False),
        ("team\\..\\x", False),
        ("..", False),
        ("/abs.yaml", False),
        ("\\abs.yaml", False),
        ("C:agents.yaml", False),
        ("", False),
        ("a\x00b", False),
        ("x" * 256, False),
    ],
)
def test_agent_file_stays_inside_the_agent_directory(path: str, ok: bool) -> None:
    if ok:
        assert parse({"prompt": "x", "agent_file": path}).agent_file == path
    else:
        assert refused({"prompt": "x", "agent_file": path}).status_code == 422


def test_agent_yaml_rules() -> None:
    request = parse({"prompt": "x", "agent_yaml": "roles: {}"})
    assert request.agent_yaml == "roles: {}"
    assert request.agent_file is None
    assert refused({"prompt": "x", "agent_yaml": "y" * 65537}).status_code == 422
    assert refused({"prompt": "x", "agent_yaml": 1}).status_code == 422
    assert refused({"prompt": "x", "agent_yaml": "  "}).status_code == 422
    error = refused({"prompt": "x", "agent_yaml": "a: 1", "agent_file": "b.yaml"})
    assert error.status_code == 422
    assert "not both" in error.detail


def test_framework_must_be_allowed_by_the_install() -> None:
    assert parse({"prompt": "x", "framework": "crewai"}, frameworks=["praisonai", "crewai"])
    error = refused({"prompt": "x", "framework": "crewai"})
    assert error.status_code == 422
    assert "praisonai" in error.detail


@pytest.mark.parametrize("timeout", [0, -1, 86401, "60", 1.5, 60.0, True, [60]])
def test_timeout_must_be_an_integer_in_range(timeout: Any) -> None:
    assert refused({"prompt": "x", "timeout": timeout}).status_code == 422


def test_timeout_bounds_are_inclusive_and_follow_the_install() -> None:
    assert parse({"prompt": "x", "timeout": 1}).timeout == 1
    assert parse({"prompt": "x", "timeout": 86400}).timeout == 86400
    assert refused({"prompt": "x", "timeout": 601}, timeout_max=600).status_code == 422


def test_session_id_limit() -> None:
    assert parse({"prompt": "x", "session_id": "s" * 256}).session_id == "s" * 256
    assert refused({"prompt": "x", "session_id": "s" * 257}).status_code == 422


@pytest.mark.parametrize(
    "extra",
    [
        {"recipe_name": "r"},
        {"recipe_name": ""},
        {"recipe_config": {}},
        {"config": {"a": 1}},
        {"config": ["x"]},
        {"config": "x"},
    ],
)
def test_unsupported_fields_are_never_ignored(extra: dict[str, Any]) -> None:
    error = refused({"prompt": "x", **extra})
    assert error.status_code == 422
    assert "not supported" in error.detail


def test_empty_config_and_unknown_fields_are_ignored() -> None:
    assert parse({"prompt": "x", "config": {}, "idempotency_scope": "global", "zzz": [1]})


def test_400s_come_before_422s() -> None:
    assert refused({"prompt": "", "timeout": 0}).status_code == 400
    assert refused({"prompt": "x", "timeout": 0}, "é").status_code == 400


@pytest.mark.parametrize(
    "raw",
    [b"", b"   ", b"{", b"[]", b"null", b"1", b'"x"', b"\xff", b'{"a": NaN}', b'{"a": Infinity}'],
)
def test_decoding_refuses_everything_but_a_json_object(raw: bytes) -> None:
    with pytest.raises(SubmissionError) as info:
        decode_json_object(raw)
    assert info.value.status_code == 400


def test_decoding_survives_deep_nesting() -> None:
    with pytest.raises(SubmissionError) as info:
        decode_json_object(b"[" * 100_000 + b"]" * 100_000)
    assert info.value.status_code == 400
    assert "deeply" in info.value.detail


def test_fingerprint_equal_for_seed_curl_and_praisonai_client() -> None:
    seed_curl = parse(
        {
            "prompt": "Analyze the quarterly sales data",
            "timeout": 3600,
            "webhook_url": "https://example.com/callback",
            "session_id": "project-alpha",
        },
        "unique-key-123",
    )
    praisonai_client = parse(
        {
            "prompt": "Analyze the quarterly sales data",
            "framework": "praisonai",
            "timeout": 3600,
            "webhook_url": "https://example.com/callback",
            "session_id": "project-alpha",
            "idempotency_key": "unique-key-123",
            "idempotency_scope": "session",
        },
        "unique-key-123",
    )
    assert request_fingerprint(seed_curl) == request_fingerprint(praisonai_client)


@pytest.mark.parametrize(
    "change",
    [
        {"prompt": "other"},
        {"timeout": 60},
        {"session_id": "s2"},
        {"webhook_url": "https://example.com/other"},
        {"agent_file": "b.yaml"},
    ],
)
def test_fingerprint_differs_for_any_meaningful_change(change: dict[str, Any]) -> None:
    base = {"prompt": "p", "session_id": "s", "webhook_url": "https://example.com/cb"}
    assert request_fingerprint(parse(base)) != request_fingerprint(parse({**base, **change}))


def test_fingerprint_ignores_the_key_and_is_canonical() -> None:
    a = parse({"prompt": "é", "session_id": "s"}, "k1")
    b = parse({"session_id": "s", "prompt": "é"}, "k2")
    assert request_fingerprint(a) == request_fingerprint(b)
    assert canonical_json(a).startswith(b'{"agent_file":"agents.yaml"')
    assert request_fingerprint(a).startswith("v1:")
    assert len(request_fingerprint(a)) == 67

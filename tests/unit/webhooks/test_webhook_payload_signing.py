"""The webhook body (contract fields, 20 KB cap) and Standard Webhooks signing."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from agentrun_contract import limits
from agentrun_contract.resource import (
    AgentRun,
    AgentRunSpec,
    AgentRunStatus,
    ObjectMeta,
    Phase,
    Reason,
)
from agentrun_webhooks.payload import build_webhook_payload, format_timestamp
from agentrun_webhooks.settings import WebhookDeliverySettings
from agentrun_webhooks.signing import (
    InvalidSigningSecret,
    generate_secret,
    load_signing_secrets,
    new_webhook_id,
    sign_headers,
)
from pydantic import SecretStr
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

COMPLETED = datetime(2026, 11, 29, 10, 0, 5, tzinfo=UTC)
FIELDS = {
    "job_id",
    "status",
    "result",
    "error",
    "reason",
    "session_id",
    "completed_at",
    "duration_seconds",
    "result_truncated",
    "result_url",
}


def finished_run(
    phase: Phase,
    reason: Reason | None = None,
    message: str | None = None,
    name: str = "run-abc123",
    session_id: str | None = "s-1",
    excerpt: str | None = None,
    excerpt_truncated: bool | None = None,
) -> AgentRun:
    return AgentRun(
        metadata=ObjectMeta(name=name, namespace="default"),
        spec=AgentRunSpec(
            prompt="hi", webhook_url="https://hooks.example.com/x", session_id=session_id
        ),
        status=AgentRunStatus(
            phase=phase,
            reason=reason,
            message=message,
            completed_at=COMPLETED,
            duration_seconds=4.5,
            result_excerpt=excerpt,
            result_truncated=excerpt_truncated,
        ),
    )


def decode(body: bytes) -> dict[str, object]:
    value = json.loads(body)
    assert isinstance(value, dict)
    assert set(value) == FIELDS
    return value


def test_succeeded_payload() -> None:
    body = decode(
        build_webhook_payload(
            finished_run(Phase.SUCCEEDED), "the answer", "https://agents.example.com/"
        )
    )
    assert body == {
        "job_id": "run_abc123",
        "status": "succeeded",
        "result": "the answer",
        "error": None,
        "reason": None,
        "session_id": "s-1",
        "completed_at": "2026-11-29T10:00:05Z",
        "duration_seconds": 4.5,
        "result_truncated": False,
        "result_url": "https://agents.example.com/api/v1/runs/run_abc123/result",
    }


@pytest.mark.parametrize(
    ("phase", "reason", "message"),
    [
        (Phase.FAILED, Reason.AGENT_ERROR, "The agent raised ValueError: boom"),
        (Phase.FAILED, Reason.TIMEOUT, "The run exceeded its timeout of 5 seconds"),
        (Phase.CANCELLED, Reason.CANCELLED, "Cancelled on request"),
    ],
)
def test_failed_and_cancelled_payloads_have_null_result(
    phase: Phase, reason: Reason, message: str
) -> None:
    body = decode(
        build_webhook_payload(
            finished_run(phase, reason, message), "ignored", "http://localhost:8005"
        )
    )
    assert body["status"] == phase.api_status
    assert body["result"] is None
    assert body["error"] == message
    assert body["reason"] == reason.value
    assert body["result_truncated"] is False


def test_failed_run_without_message_still_has_an_error_sentence() -> None:
    body = decode(build_webhook_payload(finished_run(Phase.FAILED, Reason.EVICTED), None, "h"))
    assert body["error"] == "The run failed (reason: evicted)."


def test_kubectl_named_run_and_no_session() -> None:
    body = decode(
        build_webhook_payload(
            finished_run(Phase.SUCCEEDED, name="my-run", session_id=None), None, "http://h:1"
        )
    )
    assert body["job_id"] == "my-run"
    assert body["session_id"] is None
    assert body["result"] is None  # no result object and no excerpt
    assert body["result_url"] == "http://h:1/api/v1/runs/my-run/result"


def test_excerpt_used_when_result_object_missing() -> None:
    run = finished_run(Phase.SUCCEEDED, excerpt="short part", excerpt_truncated=True)
    body = decode(build_webhook_payload(run, None, "http://h"))
    assert body["result"] == "short part"
    assert body["result_truncated"] is True


@pytest.mark.parametrize(
    "result",
    [
        "x" * (512 * 1024),
        "é" * 100_000,  # two bytes each
        "\x00" * 30_000,  # six bytes each once escaped
        "日本語" * 20_000,
        'quote" back\\slash\n' * 5000,
    ],
)
def test_long_result_cut_under_limit(result: str) -> None:
    raw = build_webhook_payload(finished_run(Phase.SUCCEEDED), result, "http://h")
    assert len(raw) <= limits.WEBHOOK_PAYLOAD_MAX_BYTES
    body = decode(raw)
    assert body["result_truncated"] is True
    cut = body["result"]
    assert isinstance(cut, str)
    assert result.startswith(cut)
    # close to the limit: not cut much more than needed
    assert len(raw) > limits.WEBHOOK_PAYLOAD_MAX_BYTES - 64


def test_result_that_fits_is_whole_and_custom_limit() -> None:
    result = "y" * 19_000
    body = decode(build_webhook_payload(finished_run(Phase.SUCCEEDED), result, "http://h"))
    assert body["result"] == result
    assert body["result_truncated"] is False
    small = build_webhook_payload(finished_run(Phase.SUCCEEDED), result, "http://h", max_bytes=4096)
    assert len(small) <= 4096
    assert decode(small)["result_truncated"] is True


def test_lone_surrogate_does_not_break_encoding() -> None:
    body = decode(build_webhook_payload(finished_run(Phase.SUCCEEDED), "a\ud800b", "http://h"))
    assert body["result"] == "a?b"


def test_timestamps_match_the_api() -> None:
    assert format_timestamp(datetime(2026, 11, 29, 10, 28, 59, 137211, tzinfo=UTC)) == (
        "2026-11-29T10:28:59.137Z"
    )
    assert format_timestamp(datetime(2026, 11, 29, 10, 28, 59)) == "2026-11-29T10:28:59Z"
    assert format_timestamp(None) is None


def test_running_run_has_no_payload() -> None:
    run = finished_run(Phase.RUNNING)
    with pytest.raises(ValueError, match="not finished"):
        build_webhook_payload(run, None, "http://h")


# ---------------------------------------------------------------------------------- signing


def test_signature_verifies_with_standardwebhooks_for_each_secret() -> None:
    old, new = generate_secret(), generate_secret()
    body = build_webhook_payload(finished_run(Phase.SUCCEEDED), "r", "http://h")
    webhook_id = new_webhook_id()
    headers = sign_headers(webhook_id, body, [old, new], datetime.now(UTC))
    assert headers["webhook-id"] == webhook_id
    assert headers["content-type"] == "application/json"
    assert len(headers["webhook-signature"].split(" ")) == 2
    assert all(s.startswith("v1,") for s in headers["webhook-signature"].split(" "))
    # a receiver knowing either key (rotation) verifies the same message
    for secret in (old, new):
        assert Webhook(secret).verify(body, headers) == json.loads(body)
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret()).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(body.replace(b'"r"', b'"R"'), headers)


def test_timestamp_is_the_attempt_time_and_id_is_stable() -> None:
    secret = generate_secret()
    first = sign_headers("msg_fixed", b"{}", [secret], datetime(2026, 1, 1, tzinfo=UTC))
    later = sign_headers("msg_fixed", b"{}", [secret], datetime(2026, 1, 1, 5, tzinfo=UTC))
    assert first["webhook-id"] == later["webhook-id"] == "msg_fixed"
    assert int(later["webhook-timestamp"]) - int(first["webhook-timestamp"]) == 5 * 3600
    assert first["webhook-signature"] != later["webhook-signature"]


def test_no_secret_means_no_signature_header() -> None:
    headers = sign_headers("msg_x", b"{}", [], datetime.now(UTC))
    assert "webhook-signature" not in headers
    assert {"webhook-id", "webhook-timestamp"} <= set(headers)


def test_webhook_ids_are_unique() -> None:
    ids = {new_webhook_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(i.startswith("msg_") for i in ids)


def test_load_secrets_from_mounted_secret_dir_and_env(tmp_path: Path) -> None:
    a, b, c = generate_secret(), generate_secret(), generate_secret()
    (tmp_path / "key-1").write_text(a + "\n")
    (tmp_path / "key-2").write_text(b)
    (tmp_path / "empty").write_text("  \n")
    (tmp_path / "..data").mkdir()  # Kubernetes' bookkeeping in a Secret volume
    (tmp_path / ".hidden").write_text("not-a-secret!")
    settings = WebhookDeliverySettings(signing_secrets_dir=tmp_path, signing_secrets=[SecretStr(c)])
    assert load_signing_secrets(settings) == [a, b, c]
    assert load_signing_secrets(WebhookDeliverySettings()) == []


def test_bad_secret_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("whsec_not base64 !!")
    with pytest.raises(InvalidSigningSecret, match="file key"):
        load_signing_secrets(WebhookDeliverySettings(signing_secrets_dir=tmp_path))
    with pytest.raises(InvalidSigningSecret):
        load_signing_secrets(WebhookDeliverySettings(signing_secrets=[SecretStr("whsec_")]))

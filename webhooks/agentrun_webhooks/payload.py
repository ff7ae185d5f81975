"""The completion webhook's body (shared/CONTRACT.md, "Webhook"): pure, no I/O.

``{job_id, status, result, error, reason, session_id, completed_at, duration_seconds,
result_truncated, result_url}``. ``result`` and ``error`` are always present, null when they do
not apply (as upstream does): ``result`` is the agent's result for a succeeded run, ``error`` the
sentence explaining a failed or cancelled one. The body is UTF-8 JSON of at most
``max_bytes`` (default 20,000): a longer result is cut, ``result_truncated`` is then true and
``result_url`` (always present) fetches the whole of it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from agentrun_contract import limits, names
from agentrun_contract.resource import AgentRun, Phase


def format_timestamp(value: datetime | None) -> str | None:
    """ISO 8601 UTC with a ``Z``, milliseconds only when there is a fraction: the same text
    the API shows for the run."""
    if value is None:
        return None
    value = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    if value.microsecond:
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def result_url_for(public_base_url: str, job_id: str) -> str:
    return f"{public_base_url.rstrip('/')}/api/v1/runs/{job_id}/result"


def _encode(payload: dict[str, Any]) -> bytes:
    # ensure_ascii=False: non-ASCII text costs its UTF-8 size, not six bytes per character.
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _valid_text(text: str) -> str:
    """Lone surrogates cannot be encoded as UTF-8; replace them rather than fail the delivery."""
    return text.encode("utf-8", errors="replace").decode("utf-8")


def build_webhook_payload(
    run: AgentRun,
    result: str | None,
    public_base_url: str,
    *,
    max_bytes: int = limits.WEBHOOK_PAYLOAD_MAX_BYTES,
) -> bytes:
    """The body POSTed for a finished ``run``.

    ``result`` is the full result (from the run's AgentRunResult) or None when there is none;
    then a succeeded run falls back to ``status.resultExcerpt`` (``result_truncated`` follows
    ``status.resultTruncated``). Raises ValueError for a run that is not finished."""
    phase = run.phase
    if not phase.is_terminal:
        raise ValueError(f"run {run.metadata.name} is {phase.value}, not finished")
    status = run.status
    job_id = names.job_id_for_run_name(run.metadata.name)
    truncated = False
    text: str | None = None
    if phase is Phase.SUCCEEDED:
        if result is not None:
            text = result
        elif status.result_excerpt is not None:
            text = status.result_excerpt
            truncated = bool(status.result_truncated)
    error: str | None = None
    if phase is not Phase.SUCCEEDED:
        # The operator always writes a message; a bare status still gets a sentence.
        reason = status.reason.value if status.reason is not None else "unknown"
        error = status.message or f"The run {phase.api_status} (reason: {reason})."
    payload: dict[str, Any] = {
        "job_id": job_id,
        "status": phase.api_status,
        "result": _valid_text(text) if text is not None else None,
        "error": _valid_text(error) if error is not None else None,
        "reason": status.reason.value if status.reason is not None else None,
        "session_id": run.spec.session_id,
        "completed_at": format_timestamp(status.completed_at),
        "duration_seconds": status.duration_seconds,
        "result_truncated": truncated,
        "result_url": result_url_for(public_base_url, job_id),
    }
    body = _encode(payload)
    if len(body) <= max_bytes:
        return body
    if payload["result"] is None:
        # Only the error sentence (at most 4096 characters) could be this long.
        payload["error"] = _cut_to_fit(payload, "error", max_bytes)
        return _encode(payload)
    payload["result_truncated"] = True
    payload["result"] = _cut_to_fit(payload, "result", max_bytes)
    return _encode(payload)


def _cut_to_fit(payload: dict[str, Any], field: str, max_bytes: int) -> str:
    """The longest prefix of ``payload[field]`` with which the whole body fits in max_bytes.

    JSON escaping makes the encoded size of a prefix non-linear in its length (a NUL costs six
    bytes), so search the cut rather than compute it."""
    text: str = payload[field]
    trial = dict(payload)
    trial[field] = ""
    if len(_encode(trial)) > max_bytes:
        raise ValueError(f"webhook body exceeds {max_bytes} bytes even without {field}")
    # Every character costs at least one byte: no prefix longer than max_bytes can fit.
    low, high = 0, min(len(text), max_bytes)  # invariant: the prefix of length `low` fits
    while low < high:
        middle = (low + high + 1) // 2
        trial[field] = text[:middle]
        if len(_encode(trial)) <= max_bytes:
            low = middle
        else:
            high = middle - 1
    return text[:low]

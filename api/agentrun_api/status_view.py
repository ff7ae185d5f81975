"""AgentRun -> the status object and the result view, exactly as shared/CONTRACT.md says.

- ``status`` is the effective phase, lowercased: a cancel requested on a non-terminal run reads
  ``cancelled`` (reason ``cancelled``) at once, everywhere.
- ``progress`` is always an object; ``retry_after`` is 2 queued, 5 running, null finished;
  ``queue_position`` (computed by the caller from the cache) only while queued.
- Timestamps are ISO 8601 UTC with a ``Z``.
- With auth on, ``poll_url`` and ``stream_url`` carry a run-scoped signed read token.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

from agentrun_contract.resource import Phase, Reason

from agentrun_api.records import RunRecord
from agentrun_api.schemas import (
    ProgressView,
    RunResultView,
    RunStatusView,
    SubmitAccepted,
)

API_PREFIX = "/api/v1"
RETRY_AFTER_QUEUED = 2
RETRY_AFTER_RUNNING = 5
CANCELLED_MESSAGE = "The run was cancelled at the client's request."


def iso_z(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with a ``Z``; milliseconds only when the time has a fraction."""
    if value is None:
        return None
    value = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    if value.microsecond:
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class RunLinks:
    """Absolute URLs of one run, with the signed read token when auth is on."""

    poll_url: str
    stream_url: str


def run_links(base_url: str, job_id: str, read_token: str | None) -> RunLinks:
    """``base_url`` is scheme://host[:port][/prefix] without a trailing slash."""
    poll = f"{base_url.rstrip('/')}{API_PREFIX}/runs/{quote(job_id, safe='')}"
    stream = f"{poll}/stream"
    if read_token is not None:
        query = f"?token={quote(read_token, safe='')}"
        return RunLinks(poll + query, stream + query)
    return RunLinks(poll, stream)


def retry_after_for(phase: Phase) -> int | None:
    if phase is Phase.QUEUED:
        return RETRY_AFTER_QUEUED
    if phase is Phase.RUNNING:
        return RETRY_AFTER_RUNNING
    return None


def _reason_and_error(record: RunRecord) -> tuple[Reason | None, str | None]:
    if record.cancel_requested and not record.stored_phase.is_terminal:
        return Reason.CANCELLED, CANCELLED_MESSAGE
    if record.reason is None:
        # a message without a reason is informational (e.g. "Job created"), not an error
        return None, None if record.stored_phase is not Phase.FAILED else record.message
    return record.reason, record.message


def _duration(record: RunRecord) -> float | None:
    if record.duration_seconds is not None:
        return record.duration_seconds
    if record.started_at and record.completed_at:
        return max(0.0, (record.completed_at - record.started_at).total_seconds())
    return None


def _progress(record: RunRecord, phase: Phase) -> ProgressView:
    percentage = record.progress_percentage
    if percentage is None:
        percentage = 100.0 if phase is Phase.SUCCEEDED else 0.0
    return ProgressView(
        percentage=min(100.0, max(0.0, percentage)), current_step=record.progress_step
    )


def status_view(record: RunRecord, links: RunLinks, queue_position: int | None) -> RunStatusView:
    """The status object of one run."""
    phase = record.effective_phase
    reason, error = _reason_and_error(record)
    return RunStatusView(
        job_id=record.job_id,
        status=phase.api_status,
        progress=_progress(record, phase),
        created_at=iso_z(record.created_at),
        started_at=iso_z(record.started_at),
        completed_at=iso_z(record.completed_at),
        duration_seconds=_duration(record),
        session_id=record.session_id,
        error=error,
        reason=reason.value if reason else None,
        queue_position=queue_position if phase is Phase.QUEUED else None,
        retry_after=retry_after_for(phase),
        poll_url=links.poll_url,
        stream_url=links.stream_url,
    )


def accepted_view(record: RunRecord, links: RunLinks) -> SubmitAccepted:
    """The 202 body: the five fields of the seed."""
    return SubmitAccepted(
        job_id=record.job_id,
        status="queued",
        created_at=iso_z(record.created_at) or iso_z(datetime.now(UTC)) or "",
        poll_url=links.poll_url,
        stream_url=links.stream_url,
    )


def result_view(record: RunRecord, result: str | None) -> RunResultView:
    """The ``/result`` body of a finished run (the caller checks :attr:`RunRecord.is_finished`)."""
    phase = record.effective_phase
    reason, error = _reason_and_error(record)
    return RunResultView(
        job_id=record.job_id,
        status=phase.api_status,
        result=result,
        error=error,
        reason=reason.value if reason else None,
        created_at=iso_z(record.created_at),
        started_at=iso_z(record.started_at),
        completed_at=iso_z(record.completed_at),
        duration_seconds=_duration(record),
    )

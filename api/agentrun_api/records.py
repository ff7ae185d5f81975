"""A slim, read-only record of an AgentRun: what the API's views, list and queue need.

The run cache keeps one per run (10,000 runs must stay small: no prompt, no agent YAML, no
kopf bookkeeping), and a direct GET is reduced to the same record, so every reader goes
through one view function.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from agentrun_contract import names
from agentrun_contract.resource import Phase, Reason


def parse_timestamp(value: object) -> datetime | None:
    """A Kubernetes RFC 3339 timestamp as an aware UTC datetime; None if absent or unreadable."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _phase(value: object) -> Phase | None:
    if not isinstance(value, str):
        return None
    try:
        return Phase(value)
    except ValueError:
        return None


def _reason(value: object) -> Reason | None:
    if not isinstance(value, str):
        return None
    try:
        return Reason(value)
    except ValueError:
        # A reason outside the closed list (a hand-edited status) still reads as one of ours.
        return Reason.INTERNAL


def _float(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


@dataclass(frozen=True, slots=True)
class RunRecord:
    """What the views read from one AgentRun."""

    name: str
    uid: str
    resource_version: str
    created_at: datetime | None
    session_id: str | None
    cancel_requested: bool
    phase: Phase | None
    reason: Reason | None
    message: str | None
    started_at: datetime | None
    completed_at: datetime | None
    duration_seconds: float | None
    progress_percentage: float | None
    progress_step: str | None
    deleting: bool = False
    submitter: str | None = None
    """The ``agentrun.dev/submitter`` label (a hash of the submitting token's name), if any."""
    created_ts: float = 0.0
    """``created_at`` as a unix timestamp (0 if unknown), precomputed for ordering."""

    @property
    def job_id(self) -> str:
        return names.job_id_for_run_name(self.name)

    @property
    def stored_phase(self) -> Phase:
        """The operator's phase; an empty status reads as Queued."""
        return self.phase or Phase.QUEUED

    @property
    def effective_phase(self) -> Phase:
        """What every reader shows: a cancel requested on a non-terminal run is Cancelled."""
        phase = self.stored_phase
        if self.cancel_requested and not phase.is_terminal:
            return Phase.CANCELLED
        return phase

    @property
    def is_finished(self) -> bool:
        return self.effective_phase.is_terminal

    @property
    def is_queued(self) -> bool:
        """Does the run wait in the queue (counted by ``queue_position`` and backpressure)?"""
        return not self.deleting and self.effective_phase is Phase.QUEUED

    @property
    def sort_key(self) -> tuple[float, str]:
        """Oldest first; ties broken by name so the order is total."""
        return (self.created_ts, self.name)


def record_from_object(obj: dict[str, Any]) -> RunRecord:
    """Reduce an AgentRun as the API server returns it (a dict) to a record.

    Lenient: a kubectl-made run with odd fields still reads (unknown phase = empty status).
    """
    metadata: dict[str, Any] = obj.get("metadata") or {}
    spec: dict[str, Any] = obj.get("spec") or {}
    status: dict[str, Any] = obj.get("status") or {}
    raw_progress = status.get("progress")
    progress: dict[str, Any] = raw_progress if isinstance(raw_progress, dict) else {}
    session = spec.get("sessionId")
    step = progress.get("currentStep")
    message = status.get("message")
    created_at = parse_timestamp(metadata.get("creationTimestamp"))
    labels = metadata.get("labels")
    submitter = labels.get(names.LABEL_SUBMITTER) if isinstance(labels, dict) else None
    return RunRecord(
        name=str(metadata.get("name", "")),
        uid=str(metadata.get("uid", "")),
        resource_version=str(metadata.get("resourceVersion", "")),
        created_at=created_at,
        session_id=session if isinstance(session, str) else None,
        cancel_requested=spec.get("cancelRequested") is True,
        phase=_phase(status.get("phase")),
        reason=_reason(status.get("reason")),
        message=message if isinstance(message, str) else None,
        started_at=parse_timestamp(status.get("startedAt")),
        completed_at=parse_timestamp(status.get("completedAt")),
        duration_seconds=_float(status.get("durationSeconds")),
        progress_percentage=_float(progress.get("percentage")),
        progress_step=step if isinstance(step, str) else None,
        deleting=metadata.get("deletionTimestamp") is not None,
        submitter=submitter if isinstance(submitter, str) else None,
        created_ts=created_at.timestamp() if created_at else 0.0,
    )

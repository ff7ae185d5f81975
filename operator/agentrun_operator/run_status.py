"""The pure mapping from a run's Job and Pods to its phase, reason and message.

:func:`map_run_status` is the single place where Kubernetes' Job and Pod shapes become the
contract's phases (Queued, Running, Succeeded, Failed, Cancelled) and closed reason list. It reads
plain dicts as the API server returns them (camelCase), so golden files of real objects can be
fed to it unchanged.

Rules, in order:

1. A terminal phase is never changed.
2. ``spec.cancelRequested`` on a non-terminal run is Cancelled, whatever the Job did meanwhile.
3. No Job: Queued while none was created yet; ``job_deleted`` once one had been.
4. A finished Job (``Complete``/``SuccessCriteriaMet``, or ``FailureTarget``/``Failed``: the
   FailureTarget condition comes first, at the deadline, before the pod is gone, and is final).
5. A running Job: ``running`` once the container has started; a pending pod keeps the run Queued
   with a reason (image pull, unschedulable); a missing credentials Secret fails the run at once.
   When the pod's status does not say why it waits, the Events of its Job (no pod: the Job
   controller's ``FailedCreate``) or of its pod do (:mod:`agentrun_operator.pod_start_problems`):
   ``cannot_create_pod`` and the others, with a sentence that names the fix.
6. Pending past the pre-running deadline fails with the reason it waited for (the message says
   the deadline too), or ``pending_timeout`` when nothing said why.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

from agentrun_contract.resource import AgentRun, Phase, Reason
from agentrun_contract.runner import CONTAINER_NAME, ExitCode

from agentrun_operator.pod_start_problems import (
    StartContext,
    missing_credentials_message,
    start_problem,
)

IMAGE_PULL_REASONS: Final = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
)
DEFAULT_CREDENTIALS_SECRET: Final = "agentrun-llm-credentials"

Obj = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class StatusDecision:
    """What the run's status should say, as decided from its Job and Pods."""

    phase: Phase
    reason: Reason | None = None
    message: str | None = None
    pod_name: str | None = None
    started_at: datetime | None = None
    exit_code: int | None = None
    before_start: bool = False
    """Failed before the runner started: its Job must go, so a late pod never runs the agent."""

    @property
    def terminal(self) -> bool:
        return self.phase.is_terminal

    def to_yaml_dict(self) -> dict[str, Any]:
        """A plain dict (for golden files)."""
        out: dict[str, Any] = {"phase": self.phase.value}
        out["reason"] = self.reason.value if self.reason else None
        out["message"] = self.message
        out["podName"] = self.pod_name
        out["startedAt"] = self.started_at.isoformat() if self.started_at else None
        out["exitCode"] = self.exit_code
        return out


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 timestamp (``Z`` or offset) as an aware datetime; None if absent."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value
    text = str(value)
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    return datetime.fromisoformat(text)


def _condition(obj: Obj | None, ctype: str) -> Obj | None:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == ctype and cond.get("status") == "True":
            return dict(cond)
    return None


def _container_status(pod: Obj) -> Obj | None:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    for status in statuses:
        if status.get("name") == CONTAINER_NAME:
            return dict(status)
    return dict(statuses[0]) if statuses else None


def _pod_condition_false(pod: Obj, ctype: str) -> Obj | None:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == ctype and cond.get("status") == "False":
            return dict(cond)
    return None


def pick_pod(pods: list[Obj]) -> Obj | None:
    """The run's pod. A Job with backoffLimit 0 has one; should a controller race ever create
    a second, the pod whose container actually started (the one that ran the agent) wins, then
    the newest."""
    if not pods:
        return None
    return max(
        pods,
        key=lambda p: (
            _started_at(_container_status(p)) is not None,
            str((p.get("metadata") or {}).get("creationTimestamp") or ""),
            str((p.get("metadata") or {}).get("name") or ""),
        ),
    )


def _started_at(cstatus: Obj | None) -> datetime | None:
    state = (cstatus or {}).get("state") or {}
    if "running" in state:
        return parse_time((state["running"] or {}).get("startedAt"))
    if "terminated" in state:
        return parse_time((state["terminated"] or {}).get("startedAt"))
    last = ((cstatus or {}).get("lastState") or {}).get("terminated")
    if last:
        return parse_time(last.get("startedAt"))
    return None


def _terminated(cstatus: Obj | None) -> Obj | None:
    state = (cstatus or {}).get("state") or {}
    term = state.get("terminated") or ((cstatus or {}).get("lastState") or {}).get("terminated")
    return dict(term) if term else None


def _pod_name(pod: Obj | None) -> str | None:
    return None if pod is None else (pod.get("metadata") or {}).get("name")


def _exit_reason(code: int) -> Reason:
    mapping = {
        int(ExitCode.AGENT_ERROR): Reason.AGENT_ERROR,
        int(ExitCode.BAD_INPUT): Reason.BAD_INPUT,
        int(ExitCode.MISSING_CREDENTIALS): Reason.MISSING_CREDENTIALS,
        int(ExitCode.INTERNAL): Reason.INTERNAL,
    }
    return mapping.get(code, Reason.AGENT_ERROR)


def _failed_job_decision(
    run: AgentRun, job: Obj, pod: Obj | None, cond: Obj
) -> StatusDecision | None:
    """A Job with FailureTarget or Failed: why it failed (None: not decidable yet)."""
    job_reason = str(cond.get("reason") or "")
    cstatus = _container_status(pod) if pod else None
    term = _terminated(cstatus)
    exit_code = int(term["exitCode"]) if term and term.get("exitCode") is not None else None
    started = _started_at(cstatus)
    pod_name = _pod_name(pod)

    def fail(reason: Reason, message: str) -> StatusDecision:
        return StatusDecision(
            Phase.FAILED,
            reason,
            message[:4096],
            pod_name=pod_name,
            started_at=started,
            exit_code=exit_code,
        )

    if job_reason == "DeadlineExceeded":
        return fail(Reason.TIMEOUT, f"the run exceeded its timeout of {run.spec.timeout_seconds} s")
    if pod is not None and _condition(pod, "DisruptionTarget") is not None:
        disruption = _condition(pod, "DisruptionTarget") or {}
        detail = disruption.get("message") or disruption.get("reason") or "disruption"
        return fail(Reason.EVICTED, f"the runner pod was evicted: {detail}")
    if job_reason == "PodFailurePolicy":
        return fail(
            Reason.EVICTED, f"the runner pod was disrupted: {cond.get('message') or job_reason}"
        )
    if term is not None and term.get("reason") == "OOMKilled":
        return fail(
            Reason.OOM_KILLED,
            "the runner ran out of memory (OOMKilled); raise the runner's memory limit",
        )
    deleted = pod is None or (pod.get("metadata") or {}).get("deletionTimestamp") is not None
    runner_codes = {int(c) for c in ExitCode} - {int(ExitCode.SUCCESS), int(ExitCode.INTERRUPTED)}
    if exit_code not in runner_codes:
        if exit_code is None and not deleted and cond.get("type") == "FailureTarget":
            # The pod's final state has not been reported yet: decide on the next event.
            return None
        if deleted or exit_code in (None, int(ExitCode.INTERRUPTED), 137):
            return fail(Reason.POD_DELETED, "the runner pod was deleted before the run finished")
    assert exit_code is not None
    reason = _exit_reason(exit_code)
    detail = str(term.get("message") or "").strip() if term else ""
    message = detail or f"the runner exited with code {exit_code}"
    return fail(reason, message)


def map_run_status(
    run: AgentRun,
    job: Obj | None,
    pods: list[Obj],
    now: datetime,
    *,
    pending_timeout_seconds: float | None = None,
    credentials_secret: str = DEFAULT_CREDENTIALS_SECRET,
    events: Sequence[Obj] = (),
) -> StatusDecision:
    """Decide the run's phase, reason and message from its Job and Pods (see module docstring).

    ``events``: the core/v1 Events of the Job while it has no pod, else of the pending pod; they
    are consulted only when the pod's status does not say why it waits."""
    current = run.phase
    if current.is_terminal:
        return StatusDecision(
            current,
            run.status.reason,
            run.status.message,
            pod_name=run.status.pod_name,
            started_at=run.status.started_at,
        )
    if run.spec.cancel_requested:
        return StatusDecision(
            Phase.CANCELLED,
            Reason.CANCELLED,
            "the run was cancelled on request",
            pod_name=run.status.pod_name,
            started_at=run.status.started_at,
        )
    if job is None:
        if run.status.job_name:
            return StatusDecision(
                Phase.FAILED,
                Reason.JOB_DELETED,
                f"the run's Job {run.status.job_name} was deleted before the run finished",
                pod_name=run.status.pod_name,
                started_at=run.status.started_at,
            )
        return StatusDecision(Phase.QUEUED, None, "waiting for a free slot")

    pod = pick_pod(pods)
    if _condition(job, "Complete") or _condition(job, "SuccessCriteriaMet"):
        cstatus = _container_status(pod) if pod else None
        return StatusDecision(
            Phase.SUCCEEDED,
            None,
            None,
            pod_name=_pod_name(pod) or run.status.pod_name,
            started_at=_started_at(cstatus) or run.status.started_at,
            exit_code=0,
        )
    failed = _condition(job, "Failed") or _condition(job, "FailureTarget")
    decision = _failed_job_decision(run, job, pod, failed) if failed is not None else None
    if decision is not None:
        return dataclasses.replace(
            decision,
            pod_name=decision.pod_name or run.status.pod_name,
            started_at=decision.started_at or run.status.started_at,
        )

    # The Job is active: look at the pod.
    cstatus = _container_status(pod) if pod else None
    started = _started_at(cstatus)
    if pod is not None and started is not None:
        return StatusDecision(
            Phase.RUNNING, None, None, pod_name=_pod_name(pod), started_at=started
        )
    if current == Phase.RUNNING:
        # The pod went away (or is going): the Job controller decides next; never go back.
        return StatusDecision(
            Phase.RUNNING,
            None,
            None,
            pod_name=run.status.pod_name,
            started_at=run.status.started_at,
        )

    queued = _pending_decision(pod, cstatus, credentials_secret)
    if queued.reason is None and events:
        namespace = run.metadata.namespace or "default"
        found = start_problem(events, pod, StartContext(namespace, credentials_secret))
        if found is not None:
            phase = Phase.FAILED if found.reason == Reason.MISSING_CREDENTIALS else Phase.QUEUED
            queued = StatusDecision(phase, found.reason, found.message, pod_name=queued.pod_name)
    if queued.terminal:
        return dataclasses.replace(queued, before_start=True)
    created = parse_time((job.get("metadata") or {}).get("creationTimestamp"))
    if (
        pending_timeout_seconds is not None
        and created is not None
        and (now - created).total_seconds() > pending_timeout_seconds
    ):
        deadline = f"the runner pod did not start within {pending_timeout_seconds:g} s"
        return StatusDecision(
            Phase.FAILED,
            queued.reason or Reason.PENDING_TIMEOUT,
            f"{deadline}: {queued.message}" if queued.reason else deadline,
            pod_name=queued.pod_name,
            before_start=True,
        )
    return queued


def _pending_decision(pod: Obj | None, cstatus: Obj | None, secret: str) -> StatusDecision:
    if pod is None:
        return StatusDecision(Phase.QUEUED, None, "waiting for the Job's pod")
    name = _pod_name(pod)
    waiting = ((cstatus or {}).get("state") or {}).get("waiting") or {}
    wreason = str(waiting.get("reason") or "")
    wmessage = str(waiting.get("message") or "")
    if wreason in IMAGE_PULL_REASONS:
        return StatusDecision(
            Phase.QUEUED,
            Reason.IMAGE_PULL,
            f"cannot pull the runner image ({wreason}): {wmessage}".rstrip(": "),
            pod_name=name,
        )
    if wreason == "CreateContainerConfigError":
        if f'"{secret}"' in wmessage or secret in wmessage:
            return StatusDecision(
                Phase.FAILED,
                Reason.MISSING_CREDENTIALS,
                missing_credentials_message(secret),
                pod_name=name,
            )
        return StatusDecision(
            Phase.QUEUED,
            Reason.CANNOT_CREATE_POD,
            f"the runner container cannot start: {wmessage}; create what it names in the "
            f"run's namespace",
            pod_name=name,
        )
    unscheduled = _pod_condition_false(pod, "PodScheduled")
    if unscheduled is not None and unscheduled.get("reason") == "Unschedulable":
        return StatusDecision(
            Phase.QUEUED,
            Reason.UNSCHEDULABLE,
            f"the runner pod cannot be scheduled: {unscheduled.get('message') or ''}".rstrip(": "),
            pod_name=name,
        )
    return StatusDecision(Phase.QUEUED, None, "waiting for the runner pod to start", pod_name=name)

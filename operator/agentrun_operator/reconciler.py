"""Per-run reconciliation: one asyncio task follows one non-terminal AgentRun to its end.

Why a task per run (not kopf's change handlers, nor kopf daemons):

- A run is a long-lived process to follow (admission, Job, pod, log tail, transcript flushes,
  deadlines), which maps naturally onto one coroutine; its state (transcript position, folded
  result) lives in that coroutine and is rebuilt from the API on a restart.
- kopf daemons would add a finalizer to every AgentRun; ours are driven from kopf *event*
  handlers (see :mod:`agentrun_operator.handlers`), which need none: ownerReferences cascade.
- Watches of Jobs, Pods and AgentRuns only *wake* the task; the task then reads the current Job
  and Pods with two live calls, so a decision never rests on a stale cache (a restarted operator
  must not mistake a not-yet-listed Job for a deleted one).

Terminal transitions are written with the run's resourceVersion as a precondition, after a
fresh read: if ``spec.cancelRequested`` was set meanwhile, the run ends Cancelled instead, so an
accepted cancel is never overtaken. The transcript's ``complete`` event follows the terminal
status; a restart between the two finds the status terminal and the transcript incomplete, and
only appends the missing ``complete``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import enum
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import stamina
from agentrun_contract import names, runner
from agentrun_contract.resource import (
    TERMINAL_PHASES,
    AgentRun,
    Phase,
    Reason,
    TranscriptState,
)
from agentrun_kube.errors import TRANSPORT_ERRORS, Conflict, KubeError, NotFound

from agentrun_operator import metrics
from agentrun_operator.admission import Admission, admission_key
from agentrun_operator.job_manifest import (
    build_input_secret,
    build_job_manifest,
    new_nonce,
    nonce_from_job,
)
from agentrun_operator.kube_io import Kube, KubeChunkStore
from agentrun_operator.run_status import StatusDecision, map_run_status, parse_time, pick_pod
from agentrun_operator.settings import OperatorSettings
from agentrun_operator.transcript import (
    FlushBudget,
    LogFolder,
    TranscriptWriter,
    complete_payload,
    result_excerpt,
)

log = logging.getLogger("agentrun.operator")

Obj = dict[str, Any]
RunKey = tuple[str, str]
STARTUP_CONCURRENCY = 32
"""Run tasks in their first pass at once (see :attr:`RunContext.pending`)."""

TERMINAL_PHASE_VALUES = frozenset(p.value for p in TERMINAL_PHASES)
"""The terminal phases as a raw status says them."""

RUNNER_REASONS = {
    Reason.AGENT_ERROR,
    Reason.BAD_INPUT,
    Reason.MISSING_CREDENTIALS,
    Reason.INTERNAL,
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def check_install_limits(run: AgentRun, settings: OperatorSettings) -> str | None:
    """The message for a run that breaks a limit this install configures, else None."""
    if run.spec.framework not in settings.frameworks:
        allowed = ", ".join(settings.frameworks)
        return f"framework {run.spec.framework!r} is not allowed here; use one of: {allowed}"
    if run.spec.timeout_seconds > settings.timeout_max_seconds:
        return (
            f"timeoutSeconds {run.spec.timeout_seconds} exceeds this install's maximum of "
            f"{settings.timeout_max_seconds}; ask for at most {settings.timeout_max_seconds}"
        )
    return None


def is_active(body: Obj) -> bool:
    """Does this AgentRun need a task: non-terminal, or terminal with its transcript unfinished."""
    status = body.get("status") or {}
    phase = status.get("phase")
    if phase not in TERMINAL_PHASE_VALUES:
        return True
    return not bool((status.get("transcript") or {}).get("complete"))


class DriveEnd(enum.Enum):
    """How :meth:`RunReconciler.drive` returned."""

    FINISHED = "finished"
    """The run needs nothing more (terminal with its transcript complete)."""
    PARKED = "parked"
    """The run waits in the admission queue: it keeps no task until admission or a spec
    change wakes it (see :attr:`RunContext.parked`)."""


class TailInterrupted(Exception):
    """A pod log stream ended before the log did, without new lines: re-open with backoff."""


class TailProgressed(Exception):
    """A pod log stream ended before the log did, after new lines: re-open, backoff reset."""


def container_finished(pod: Obj) -> bool:
    """Has the runner container ended (its log is then complete and final)?"""
    status = pod.get("status") or {}
    if status.get("phase") in ("Succeeded", "Failed"):
        return True
    for container in status.get("containerStatuses") or []:
        if container.get("name") == runner.CONTAINER_NAME:
            return bool((container.get("state") or {}).get("terminated"))
    return False


def container_succeeded(pod: Obj) -> bool:
    """Did the runner container exit 0? Its log then ends with the whole result."""
    status = pod.get("status") or {}
    if status.get("phase") == "Succeeded":
        return True
    for container in status.get("containerStatuses") or []:
        if container.get("name") == runner.CONTAINER_NAME:
            terminated = (container.get("state") or {}).get("terminated") or {}
            return terminated.get("exitCode") == 0
    return False


def _retryable(exc: Exception) -> bool:
    """stamina hook: retry retryable API errors and dropped connections."""
    if isinstance(exc, KubeError):
        return exc.retryable
    return isinstance(exc, TRANSPORT_ERRORS)


class RunContext:
    """What every run task shares: settings, the client, wake-ups, admission per namespace."""

    def __init__(self, settings: OperatorSettings, kube: Kube) -> None:
        self.settings = settings
        self.kube = kube
        self.bodies = RunBodies()
        self.events: dict[RunKey, asyncio.Event] = {}
        self.tasks: dict[RunKey, asyncio.Task[None]] = {}
        self.parked: dict[RunKey, int | None] = {}
        """Queued runs without a task, with the ``metadata.generation`` they were parked at:
        their Queued status is written and they wait for admission. 10,000 queued runs must
        not keep 10,000 tasks, frames, reconcilers and bodies; a wake (admission, or a new
        generation: a spec change such as a cancel) starts a task again, which reads the run
        afresh."""
        self.admissions: dict[str, Admission] = {}
        self.changed: set[RunKey] = set()
        """Runs with a watch event (their spec, Job or Pod) since their task last read them."""
        self.first_pass: set[RunKey] = set()
        self.pending: dict[RunKey, None] = {}
        """Runs waiting (in arrival order) for their task to start: at most
        ``STARTUP_CONCURRENCY`` tasks make their first pass (load, admission, the first status
        write) at once (:attr:`first_pass`). After a restart 10,000 runs arrive together;
        started at once, their tasks, frames and bursts of calls would stall the loop and hold
        every response in memory at the same time. A waiting run costs only its kept body."""
        kube.size_log_pool(settings.log_follow_connections)
        metrics.ACTIVE_RUNS.set_function(lambda: self.following)
        self.stopping = False
        """Set by :meth:`stop` (shutdown, or the Lease lost): no run task acts any more."""

    def admission(self, namespace: str) -> Admission:
        if namespace not in self.admissions:
            self.admissions[namespace] = Admission(
                namespace,
                self.settings.max_concurrent_runs,
                self.kube,
                lambda name: self.wake((namespace, name)),
                recount_seconds=self.settings.admission_recount_seconds,
            )
        return self.admissions[namespace]

    def wake(self, key: RunKey) -> None:
        if key in self.parked:
            self.start_task(key)
            return
        # A pending run needs no wake: its task reads the run when it starts.
        event = self.events.get(key)
        if event is not None:
            event.set()

    def start_task(self, key: RunKey) -> None:
        """Start the run's task (it has none). The task gets a context of its own: created
        from a kopf handler, it would otherwise keep kopf's context variables (the event's
        body, patch and logger) alive for its whole life."""
        self.parked.pop(key, None)
        if key in self.tasks or key in self.pending:
            return
        if len(self.first_pass) >= STARTUP_CONCURRENCY:
            self.pending[key] = None
            return
        self._spawn(key)

    def _spawn(self, key: RunKey) -> None:
        self.first_pass.add(key)
        self.events[key] = asyncio.Event()
        self.tasks[key] = asyncio.create_task(
            self._run_task(key), name=f"run:{key[0]}/{key[1]}", context=contextvars.Context()
        )

    def first_pass_done(self, key: RunKey) -> None:
        """The run's task ended its first pass (or ended): start the next pending ones."""
        if key not in self.first_pass:
            return
        self.first_pass.discard(key)
        while self.pending and len(self.first_pass) < STARTUP_CONCURRENCY and not self.stopping:
            waiting = next(iter(self.pending))
            del self.pending[waiting]
            self._spawn(waiting)

    @property
    def following(self) -> int:
        """Non-terminal runs followed: with a task, waiting for one, or parked in the queue."""
        return len(self.tasks) + len(self.pending) + len(self.parked)

    def remember(self, key: RunKey, body: Obj) -> Obj | None:
        """Keep ``body`` unless an equal or newer version is already kept (watch events can
        arrive after this process read or wrote a newer one; resourceVersions are opaque in the
        API conventions but etcd revisions in practice: if either is not a number, the
        incoming one is kept). Returns the previous body."""
        kept = self.bodies.resource_version(key)
        incoming = _resource_version(body)
        if kept is not None and incoming is not None and kept >= incoming:
            return self.bodies.get(key)
        previous = self.bodies.get(key)
        self.bodies[key] = body
        return previous

    def observe_run(self, body: Obj, *, deleted: bool) -> None:
        """An AgentRun event: remember the body, start its task if needed, wake it."""
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace")), str(meta.get("name")))
        if deleted:
            self.bodies.pop(key, None)
            self.changed.discard(key)
            self.parked.pop(key, None)
            self.pending.pop(key, None)
            task = self.tasks.pop(key, None)
            if task is not None:
                task.cancel()
            self.admission(key[0]).leave(key[1])  # wakes the runs that now fit
            return
        if key not in self.tasks and not is_active(body):
            # A finished run needs nothing from us: keep no memory of it (10,000 stored runs
            # must not cost 10,000 bodies).
            self.bodies.pop(key, None)
            self.changed.discard(key)
            self.pending.pop(key, None)
            self.parked.pop(key, None)
            return
        if key in self.pending:
            self.remember(key, body)  # its task reads the newest body when it starts
            return
        if key in self.parked:
            # Our own Queued writes echo back, and relists repeat every run: only a spec
            # change (a cancel: a new generation) needs the parked run's task back.
            generation = _generation(body)
            parked_at = self.parked[key]
            if generation is None or parked_at is None or generation > parked_at:
                self.remember(key, body)
                self.start_task(key)
            return
        previous = self.remember(key, body)
        spec_changed = previous is None or previous.get("spec") != body.get("spec")
        if key not in self.tasks:
            self.enqueue_if_waiting(key, body)
            self.start_task(key)
        elif spec_changed:
            # Status changes are ours: only a spec change (a cancel) needs the task awake.
            self.changed.add(key)
            self.wake(key)

    def enqueue_if_waiting(self, key: RunKey, body: Obj) -> None:
        """Put a run that has no Job yet in its admission queue as soon as it is seen, not
        when its task's first pass gets to it: after a restart the first passes run in
        listing order, and a run must never be admitted before an older one still waiting
        for its first pass (FIFO by creation, as ``queue_position`` says)."""
        status = body.get("status") or {}
        if status.get("jobName") or (body.get("spec") or {}).get("cancelRequested"):
            return
        if status.get("phase") in TERMINAL_PHASE_VALUES:
            return
        self.admission(key[0]).enqueue(key[1], admission_key(body))

    def observe_owned(
        self,
        namespace: str,
        run_name: str,
        *,
        job: Obj | None = None,
        deleted: bool = False,
        job_event: bool = False,
        listing: bool = False,
    ) -> None:
        """A Job or Pod event of a run: wake it (and admission, for Jobs). ``listing``: the
        event comes from a (re)list of the watch, not from the watch itself."""
        self.changed.add((namespace, run_name))
        self.wake((namespace, run_name))
        if job_event:
            admission = self.admission(namespace)
            admission.observe_job(run_name, None if deleted else job)
            if listing:
                admission.relisted()
            admission.notify()

    async def _run_task(self, key: RunKey) -> None:
        if self.stopping:
            # kopf may still deliver events between the Lease lost and its stop.
            self.tasks.pop(key, None)
            self.events.pop(key, None)
            self.first_pass.discard(key)
            return
        end = DriveEnd.FINISHED
        try:
            if key not in self.bodies and not await self.reload(key):
                return  # deleted while parked
            while not self.stopping:
                reconciler = RunReconciler(self, key)
                try:
                    end = await reconciler.drive()
                    break
                except NotFound:
                    break  # the run was deleted
                except Exception as exc:
                    # Retryable or not, the run must not be forgotten: start over from what
                    # the API says, after a pause (each step is idempotent).
                    log.exception("run task failed; retrying", extra={"run": key[1]})
                    await self.report_retry(key, exc)
                    await asyncio.sleep(self.settings.resync_seconds)
                    if key not in self.bodies or self.stopping:
                        break
                finally:
                    if reconciler.tailer is not None and not reconciler.tailer.done():
                        reconciler.tailer.cancel()
        finally:
            self.tasks.pop(key, None)
            self.events.pop(key, None)
            self.first_pass_done(key)
            if end is DriveEnd.PARKED and key in self.bodies and not self.stopping:
                # It stays in the admission queue; its body is read again when woken.
                self.parked[key] = _generation(self.bodies.pop(key) or {})
            else:
                self.admission(key[0]).leave(key[1])
                body = self.bodies.get(key)
                if body is not None and not is_active(body):
                    self.bodies.pop(key, None)

    async def reload(self, key: RunKey) -> bool:
        """Read a woken parked run (its body was not kept); False if it no longer exists.
        Errors are retried after a resync: the run must not be forgotten."""
        while True:
            try:
                body = await self.kube.get_run(*key)
            except NotFound:
                return False
            except Exception as exc:
                log.warning("run not read; retrying: %s", exc, extra={"run": key[1]})
                await asyncio.sleep(self.settings.resync_seconds)
                continue
            self.remember(key, body)
            return True

    async def report_retry(self, key: RunKey, error: Exception) -> None:
        """A Warning Event on the run: its reconciliation failed and will be retried (best
        effort: the API may be what failed)."""
        body = self.bodies.get(key)
        if body is None or self.stopping:
            return
        with contextlib.suppress(Exception):
            await self.kube.post_event(
                AgentRun.model_validate(body),
                reason="ReconcileRetry",
                message=f"reconciling failed ({type(error).__name__}: {error}); retrying in "
                f"{self.settings.resync_seconds:g} s from the run's stored state",
                type_="Warning",
            )

    async def stop(self) -> None:
        """Stop acting: no run task starts from now on; every running one is cancelled."""
        self.stopping = True
        self.parked.clear()
        self.pending.clear()
        for admission in self.admissions.values():
            await admission.stop()
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.kube.close_log_pool()  # every tail has ended with its task


class RunReconciler:
    """Follows one AgentRun from its current state to terminal (see the module docstring)."""

    def __init__(self, ctx: RunContext, key: RunKey) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        self.kube = ctx.kube
        self.namespace, self.name = key
        self.key = key
        self.event = ctx.events.setdefault(key, asyncio.Event())
        self.writer: TranscriptWriter | None = None
        self.folder: LogFolder | None = None
        self.tailer: asyncio.Task[None] | None = None
        self.nonce: str | None = None
        self.written: Obj = {}
        self.extra_status: Obj = {}
        self.last_flush = 0.0
        self.last_read = float("-inf")
        self.flush_budget = FlushBudget(
            interval_seconds=ctx.settings.transcript_flush_seconds,
            size_bytes=ctx.settings.transcript_flush_bytes,
            bytes_per_second=ctx.settings.transcript_write_budget_bytes_per_second,
            burst_bytes=2 * ctx.settings.transcript_chunk_bytes,
        )
        self.job_id = names.job_id_for_run_name(self.name)
        self.pod_started = False
        self.tail_pod_finished = False
        self.tail_pod: str | None = None
        self.log_ends_with_result = False
        """The runner exited 0: its log is complete only once the whole result was read."""
        """The runner container had ended when the log stream was last opened."""
        self.last_interruption_event = -math.inf
        self.stored_result: str | None = None
        """The result as stored in the run's AgentRunResult (by this task or before)."""
        # Events of the Job (no pod yet) or of its pending pod, read at most once per resync
        # while the status does not say why the pod waits; kept between reads.
        self.start_events: list[Obj] = []
        self.start_events_of: tuple[str, str, str] | None = None
        self.start_events_due = 0.0

    # -- helpers
    def run(self) -> AgentRun:
        body = self.ctx.bodies.get(self.key)
        if body is None:
            raise NotFound(404, "NotFound", f"AgentRun {self.name} is gone")
        return AgentRun.model_validate(body)

    def log_extra(self) -> Obj:
        return {"run": self.job_id, "namespace": self.namespace}

    async def wait(self, seconds: float | None) -> None:
        self.end_first_pass()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.event.wait(), seconds)
        self.event.clear()

    async def patch_status(self, status: Obj, *, resource_version: str | None = None) -> Obj:
        updated = await self.kube.patch_run_status(
            self.namespace, self.name, status, resource_version=resource_version
        )
        self.written.update(status)
        self.ctx.remember(self.key, updated)
        return updated

    async def flush_transcript(self, *, force: bool = False) -> None:
        """Write the transcript when due (:class:`FlushBudget`: by time and size within the
        run's byte budget; past the cap only when ``force``d, so a chatty run stops costing
        etcd once its middle is dropped anyway), then patch the status only if a field a reader
        sees changed (the progress): the transcript's position is not one, and is written
        with the next phase change."""
        writer = self.writer
        if writer is None or not writer.has_pending:
            return
        now = time.monotonic()
        if (
            not force
            and now - self.last_flush < self.settings.transcript_flush_seconds
            and writer.unwritten_bytes < self.settings.transcript_flush_bytes
        ):
            return
        self.last_flush = now
        metrics.TRANSCRIPT_BYTES.inc(writer.fold())
        cost = writer.write_cost()
        due = self.flush_budget.due(
            unwritten_bytes=writer.unwritten_bytes, cost_bytes=cost, now=now
        )
        if force or (due and not writer.capped):
            await writer.flush()
            self.flush_budget.spent(cost, now)
        folder = self.folder
        if folder is not None and folder.progress is not None:
            progress = folder.progress.to_k8s()
            if self.written.get("progress") != progress:
                await self.patch_status({"progress": progress})

    # -- the driver
    async def drive(self) -> DriveEnd:
        """Follow the run to its end, or until it waits in the admission queue (see the
        module docstring)."""
        try:
            return await self._drive()
        finally:
            self.end_first_pass()

    def end_first_pass(self) -> None:
        self.ctx.first_pass_done(self.key)

    async def _drive(self) -> DriveEnd:
        run = self.run()
        self.writer = TranscriptWriter(
            self.name,
            KubeChunkStore(self.kube, run),
            chunk_bytes=self.settings.transcript_chunk_bytes,
            cap_bytes=self.settings.transcript_cap_bytes,
        )
        if run.status.phase is not None or run.status.transcript is not None:
            # A new run has nothing stored yet (and if a crash left a first chunk behind, it
            # is rewritten from id 1 with the same content).
            await self.writer.load()
        if run.phase.is_terminal:
            await self.complete_transcript(run)
            return DriveEnd.FINISHED

        problem = check_install_limits(run, self.settings)
        if problem is not None and not run.status.job_name:
            await self.finish(StatusDecision(Phase.FAILED, Reason.BAD_INPUT, problem))
            return DriveEnd.FINISHED
        if self.writer.complete_event is not None:
            # The transcript was completed but the status patch was lost: finish from it.
            data = self.writer.complete_event.data
            decision = StatusDecision(
                Phase.from_api_status(str(data.get("status"))),
                Reason(data["reason"]) if data.get("reason") else None,
                data.get("error"),
            )
            await self.finish(decision)
            return DriveEnd.FINISHED

        job: Obj | None = None
        if run.status.job_name:
            job = await self.kube.get_job(self.namespace, names.job_name(self.name))
            self.nonce = nonce_from_job(job) if job else None

        while True:
            if self.tailer is not None and not self.must_read():
                # Woken by the tail (lines to write), not by a watch event nor the resync:
                # write the transcript if due, without re-reading the Job and Pods, and let
                # lines gather for a while (a chatty log must not turn into API reads).
                await self.flush_transcript()
                await asyncio.sleep(self.settings.transcript_flush_seconds)
                if not self.must_read() and not self.writer_has_pending():
                    await self.wait(self.settings.resync_seconds)
                continue
            run = self.run()
            if run.spec.cancel_requested:
                await self.finish(map_run_status(run, None, [], utcnow()))
                return DriveEnd.FINISHED
            pods: list[Obj] = []
            if job is None and not run.status.job_name and "jobName" not in self.extra_status:
                job = await self.admit_and_create(run)
                if job is None:
                    if run.status.phase is None and "phase" not in self.written:
                        waiting = StatusDecision(Phase.QUEUED, None, "waiting for a free slot")
                        await self.set_phase(run, waiting)
                    # No timer and no task: admission wakes the runs that fit (a slot freed,
                    # a recount), and a cancel wakes its run; 10,000 queued runs cost nothing
                    # while idle. A wake that came during this pass is not lost.
                    if self.event.is_set():
                        self.event.clear()
                        continue
                    return DriveEnd.PARKED
                # A Job just created has no pod yet: decide from it without reading again. But
                # after an operator restart the create may have met our own earlier Job
                # (AlreadyExists), which can already have run and failed: then its pods decide
                # (without them a finished agent_error would read as pod_deleted).
                if job.get("status"):
                    pods = await self.kube.list_pods(
                        self.namespace, f"{names.LABEL_RUN}={self.name}"
                    )
            else:
                self.ctx.changed.discard(self.key)
                self.last_read = time.monotonic()
                job = await self.kube.get_job(self.namespace, names.job_name(self.name))
                pods = await self.kube.list_pods(self.namespace, f"{names.LABEL_RUN}={self.name}")
            run = self.effective_run()
            decision = map_run_status(
                run,
                job,
                pods,
                utcnow(),
                pending_timeout_seconds=self.settings.pending_timeout_seconds,
                credentials_secret=self.settings.credentials_secret,
            )
            # nothing in the Job's or pod's status says why the pod is not running (yet)
            waits_unexplained = job is not None and (
                (decision.phase == Phase.QUEUED and decision.reason is None)
                or decision.reason == Reason.PENDING_TIMEOUT
            )
            if waits_unexplained and job is not None:
                events = await self.read_start_events(job, pick_pod(pods))
                if events:
                    decision = map_run_status(
                        run,
                        job,
                        pods,
                        utcnow(),
                        pending_timeout_seconds=self.settings.pending_timeout_seconds,
                        credentials_secret=self.settings.credentials_secret,
                        events=events,
                    )
            self.maybe_start_tailer(decision, pods)
            if decision.terminal:
                if decision.before_start and decision.reason not in (
                    Reason.MISSING_CREDENTIALS,
                    Reason.PENDING_TIMEOUT,
                ):
                    # finish() deletes the Job for those two; a pod Kubernetes refused so far
                    # (or could not schedule, or pull) may still start later and run the agent.
                    await self.kube.delete_job(self.namespace, names.job_name(self.name))
                await self.finish(decision)
                return DriveEnd.FINISHED
            await self.set_phase(run, decision)
            await self.flush_transcript()
            timeout = (
                self.settings.transcript_flush_seconds
                if self.tailer is not None
                else self.settings.resync_seconds
            )
            if waits_unexplained:
                # wake for the next Events read, so they show within one resync
                until_due = self.start_events_due - time.monotonic()
                timeout = min(timeout, max(until_due, self.settings.transcript_flush_seconds))
            await self.wait(timeout)

    async def read_start_events(self, job: Obj, pod: Obj | None) -> list[Obj]:
        """The Events of the Job while it has no pod, else of its (pending) pod: read at most
        once per resync and kept in between, first one resync after the object's creation (a
        Job or pod just made has had no time to fail). A failed read keeps the last ones."""
        target = pod if pod is not None else job
        meta = target.get("metadata") or {}
        key = (
            "Pod" if pod is not None else "Job",
            str(meta.get("name") or ""),
            str(meta.get("uid") or ""),
        )
        now = time.monotonic()
        if key != self.start_events_of:
            self.start_events_of = key
            self.start_events = []
            created = parse_time(meta.get("creationTimestamp"))
            age = (utcnow() - created).total_seconds() if created is not None else math.inf
            self.start_events_due = now + max(0.0, self.settings.resync_seconds - age)
        if now >= self.start_events_due:
            self.start_events_due = now + self.settings.resync_seconds
            try:
                self.start_events = await self.kube.list_events(
                    self.namespace, key[0], key[1], key[2] or None
                )
            except KubeError as exc:
                log.warning("events not read: %s", exc, extra=self.log_extra())
        return self.start_events

    def must_read(self) -> bool:
        """Must the next loop read the Job and Pods: a watch event of the run came, the
        resync is due, or the tail ended (its end may decide the run)?"""
        return (
            self.key in self.ctx.changed
            or time.monotonic() - self.last_read >= self.settings.resync_seconds
            or self.tailer is None
            or self.tailer.done()
        )

    def writer_has_pending(self) -> bool:
        return self.writer is not None and self.writer.has_pending

    def effective_run(self) -> AgentRun:
        """The run as last seen, with what this task wrote applied (watch events may lag)."""
        run = self.run()
        status = run.status.to_k8s()
        status.update(self.extra_status)
        for field in ("phase", "reason", "message", "jobName", "podName", "startedAt"):
            if field in self.written:
                status[field] = self.written[field]
        body = run.to_k8s()
        body["status"] = status
        return AgentRun.model_validate(body)

    async def admit_and_create(self, run: AgentRun) -> Obj | None:
        """Wait for a slot (FIFO by creation), then create the input Secret and the Job."""
        admission = self.ctx.admission(self.namespace)
        if self.name not in admission.waiting and self.name not in admission.granted:
            admission.enqueue(self.name, admission_key(self.ctx.bodies[self.key]))
        if not await admission.try_admit(self.name):
            return None
        job: Obj | None = None
        try:
            self.nonce = new_nonce()
            await self.kube.create_secret(self.namespace, build_input_secret(run))
            job, created = await self.kube.create_job(
                self.namespace, build_job_manifest(run, self.settings, self.nonce)
            )
            self.nonce = nonce_from_job(job) or self.nonce
        finally:
            admission.created(self.name, job)
        if created and run.metadata.creation_timestamp is not None:
            latency = (utcnow() - run.metadata.creation_timestamp).total_seconds()
            metrics.RECONCILE_LATENCY.observe(max(latency, 0.0))
        job_name = names.job_name(self.name)
        self.extra_status["jobName"] = job_name
        if run.status.job_name != job_name and self.written.get("jobName") != job_name:
            # Recorded at once, not with the next phase, and retried here rather than by a
            # whole new pass: a task that starts over after the Job was deleted must see
            # job_deleted, never create a second Job (the agent would run twice).
            await self.write_with_retries(lambda: self.patch_status({"jobName": job_name}))
        log.info("job created", extra={**self.log_extra(), "job": job_name})
        return job

    async def write_with_retries(self, write: Callable[[], Awaitable[object]]) -> None:
        """Run ``write`` until it succeeds, retrying retryable errors (a 429, a dropped
        connection) with backoff for at most ``log_drain_seconds``; a final error is raised."""
        async for attempt in stamina.retry_context(
            on=_retryable,
            attempts=None,
            timeout=self.settings.log_drain_seconds,
            wait_initial=self.settings.log_reconnect_seconds,
            wait_max=self.settings.log_reconnect_max_seconds,
        ):
            with attempt:
                await write()

    async def set_phase(self, run: AgentRun, decision: StatusDecision) -> None:
        """Write a non-terminal decision if it changed: the status event first (transcript),
        then one status patch (with the transcript position), then the phase label and a
        Kubernetes Event."""
        status: Obj = {
            "phase": decision.phase.value,
            "reason": decision.reason.value if decision.reason else None,
            "message": decision.message,
            **self.extra_status,
        }
        if decision.pod_name:
            status["podName"] = decision.pod_name
        if decision.started_at is not None:
            status["startedAt"] = iso(decision.started_at)
        current = {k: self.written.get(k, _status_field(run, k)) for k in status}
        if current == status:
            return
        phase_changed = current.get("phase") != status["phase"]
        reason_changed = current.get("reason") != status["reason"]
        if decision.phase == Phase.RUNNING and "progress" not in self.written:
            status["progress"] = {"percentage": 0, "currentStep": "Running"}
        writer = self.writer
        assert writer is not None
        if phase_changed or reason_changed:
            writer.add_status(decision.phase.api_status, status["reason"])
        if writer.has_pending:
            metrics.TRANSCRIPT_BYTES.inc(await writer.flush())
            self.last_flush = time.monotonic()
            status["transcript"] = writer.state().to_k8s()
        await self.patch_status(status)
        if not (phase_changed or reason_changed):
            return
        metrics.PHASE_TRANSITIONS.labels(decision.phase.value, status["reason"] or "").inc()
        followups = [
            self.kube.post_event(
                run,
                reason=decision.phase.value,
                message=decision.message or f"run is {decision.phase.api_status}",
                # a reason while not finished says why the run waits (kubectl describe)
                type_="Warning" if decision.reason else "Normal",
            )
        ]
        if phase_changed:
            followups.append(
                self.kube.patch_run_labels(
                    self.namespace, self.name, {names.LABEL_PHASE: decision.phase.api_status}
                )
            )
            log.info(
                "phase changed",
                extra={
                    **self.log_extra(),
                    "phase": decision.phase.value,
                    "reason": status["reason"],
                },
            )
        await asyncio.gather(*followups)

    # -- the pod log
    def maybe_start_tailer(self, decision: StatusDecision, pods: list[Obj]) -> None:
        """Start following the pod's log once its container started; restart a tail that
        died of an unexpected error (a tail that ended normally read the whole log)."""
        if self.tailer is not None and self.tailer.done() and not self.tailer.cancelled():
            error = self.tailer.exception()
            if error is not None and not isinstance(error, NotFound):
                log.error(
                    "pod log tail died; restarting it",
                    exc_info=error,
                    extra=self.log_extra(),
                )
                self.tailer = None
        if self.tailer is not None or self.nonce is None or decision.pod_name is None:
            return
        if decision.started_at is None:
            return
        pod = next(
            (p for p in pods if (p.get("metadata") or {}).get("name") == decision.pod_name), None
        )
        if pod is None:
            return
        assert self.writer is not None
        if self.folder is None:
            self.folder = LogFolder(self.writer, run_id=self.job_id, nonce=self.nonce)
        self.tail_pod = decision.pod_name
        self.tailer = asyncio.create_task(self.tail(decision.pod_name), name=f"tail:{self.name}")

    async def tail(self, pod: str) -> None:
        """Follow the pod's log to its end, for the run's whole life.

        Returns once the whole log was read (a stream that ended cleanly after the runner's
        last word, or after the container had finished) or the pod is gone. Any other end (a
        connection cut mid-chunk, a server that went away, a silent half-open stream, an API
        error) re-opens the stream from the last line kept, with exponential backoff (reset
        whenever a stream delivered lines); each interruption is logged and reported as a
        Kubernetes Event (at most one a minute per run)."""
        while True:
            try:
                async for attempt in stamina.retry_context(
                    on=TailInterrupted,
                    attempts=None,
                    timeout=None,
                    wait_initial=self.settings.log_reconnect_seconds,
                    wait_max=self.settings.log_reconnect_max_seconds,
                    wait_jitter=self.settings.log_reconnect_seconds,
                ):
                    with attempt:
                        await self.tail_once(pod)
                return
            except TailProgressed:
                # Lines arrived before the stream ended: re-open soon, backoff from scratch.
                await asyncio.sleep(self.settings.log_reconnect_seconds)

    async def tail_once(self, pod: str) -> None:
        """One log stream (see :meth:`tail`): returns when the log is complete; raises
        :class:`TailProgressed` or :class:`TailInterrupted` when it must be re-opened."""
        folder, writer = self.folder, self.writer
        assert folder is not None
        assert writer is not None
        finished_before_open = self.tail_pod_finished
        opened_at = (writer.runner_seq, writer.log_timestamp, len(folder.result_parts))
        since: int | None = None
        if writer.log_timestamp is not None:
            seen = parse_time(writer.log_timestamp)
            if seen is not None:
                # sinceSeconds (the client has no sinceTime); lines already folded in are
                # skipped by timestamp and seq, so a generous margin only costs re-reading.
                since = max(1, math.ceil((utcnow() - seen).total_seconds()) + 5)
        kept = 0
        failure: BaseException | None = None
        try:
            async for line in self.kube.stream_pod_log(
                self.namespace,
                pod,
                runner.CONTAINER_NAME,
                since_seconds=since,
                read_timeout=self.settings.log_read_timeout_seconds,
                final=finished_before_open,
            ):
                folder.feed(line)
                kept += 1
                if folder.result_needs_storing:
                    # Before any later line moves the stored position past the result.
                    await self.store_result()
                if writer.has_pending:
                    self.event.set()
        except NotFound:
            return  # the pod is gone: nothing more can be read
        except KubeError as exc:
            if exc.status == 400:
                # "container is waiting to start" (or already gone): try again.
                raise TailInterrupted(str(exc)) from exc
            failure = exc
        except TRANSPORT_ERRORS as exc:
            failure = exc  # cut mid-chunk, server gone, silent past the read timeout
        except ValueError as exc:
            failure = exc  # a garbled chunk
        progressed = opened_at != (
            writer.runner_seq,
            writer.log_timestamp,
            len(folder.result_parts),
        )
        settled = finished_before_open and not progressed
        if settled and self.log_ends_with_result and not folder.saw_end:
            # Read before a restart, the result's lines lie behind the resume position once
            # the result is stored: then nothing more is to come.
            try:
                settled = await self.known_result(self.run()) is not None
            except KubeError as exc:
                raise TailInterrupted(str(exc)) from exc
        if failure is None and (folder.saw_end or settled):
            # A clean end after the runner's last word, or a finished container's log read
            # again with nothing new in it (unless the runner exited 0: its log ends with the
            # whole result). A clean end may be short, as the apiserver ends the response
            # cleanly when its kubelet stream breaks: otherwise, read again.
            return
        try:
            pods = await self.kube.list_pods(self.namespace, f"{names.LABEL_RUN}={self.name}")
        except KubeError as exc:
            raise TailInterrupted(str(exc)) from exc
        found = next((p for p in pods if (p.get("metadata") or {}).get("name") == pod), None)
        if found is None:
            return
        self.tail_pod_finished = container_finished(found)
        self.log_ends_with_result = self.log_ends_with_result or container_succeeded(found)
        if isinstance(failure, TimeoutError):
            # Silent for the whole read timeout: a quiet agent or a half-open connection
            # (they look alike); re-open at once, without backoff (lines would only wait).
            log.info(
                "pod log silent for %.0f s; re-opening the stream",
                self.settings.log_read_timeout_seconds,
                extra=self.log_extra(),
            )
            raise TailProgressed("read timeout")
        if failure is not None:
            await self.report_log_interruption(failure)
        if kept:
            raise TailProgressed(str(failure or "stream ended"))
        raise TailInterrupted(str(failure or "stream ended"))

    async def report_log_interruption(self, failure: BaseException) -> None:
        """Log every interrupted log stream; post an Event at most once a minute per run."""
        detail = str(failure) or type(failure).__name__
        position = self.writer.log_timestamp if self.writer else None
        log.warning(
            "pod log stream interrupted; resuming from the last line kept",
            extra={**self.log_extra(), "error": detail, "resume_from": position},
        )
        now = time.monotonic()
        if now - self.last_interruption_event < 60.0:
            return
        self.last_interruption_event = now
        with contextlib.suppress(NotFound):
            await self.kube.post_event(
                self.run(),
                reason="LogStreamInterrupted",
                message=f"pod log stream interrupted ({type(failure).__name__}: {detail}); "
                "resuming from the last line kept, nothing is lost",
                type_="Warning",
            )

    async def store_result(self) -> None:
        """Store the complete result (AgentRunResult) before the resume position may move
        past its lines; retried with backoff on retryable errors (a 429, a dropped
        connection). A final error is logged and left to :meth:`finish` to surface."""
        folder = self.folder
        result = folder.result() if folder is not None else None
        if folder is None or result is None:
            return
        try:
            await self.write_with_retries(lambda: self.kube.put_result(self.run(), result))
        except KubeError as exc:
            log.error("result not stored: %s", exc, extra=self.log_extra())
            return
        self.stored_result = result
        folder.result_stored()

    async def drain_tailer(self, seconds: float, *, patience: float | None = None) -> None:
        """Wait up to ``seconds`` for the tail to read the log to its end.

        The container has ended, so its log is finite and a healthy follow stream ends with
        it. A tail still reading after ``patience`` seconds is presumed stuck on a stream that
        will never end (a half-open connection, a server that keeps it open): it is replaced
        once by a fresh tail from the last line kept, for the rest of ``seconds``."""
        if self.tailer is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        replaced = patience is None or patience >= seconds
        while True:
            wait = deadline - loop.time()
            if not replaced:
                wait = min(wait, patience or 0.0)
            try:
                await asyncio.wait_for(asyncio.shield(self.tailer), max(wait, 0.0))
                return
            except TimeoutError:
                if not replaced and self.tail_pod is not None:
                    replaced = True
                    await self.replace_stuck_tailer(self.tail_pod)
                    continue
                log.warning(
                    "pod log not read to its end in %.0f s; finishing without the rest",
                    seconds,
                    extra=self.log_extra(),
                )
                self.tailer.cancel()
                return
            except asyncio.CancelledError:
                self.tailer.cancel()
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    # This run task is being stopped (the Lease lost, a shutdown, the run
                    # deleted): it must not go on to record a terminal status without the log.
                    raise
                log.warning("log tail was cancelled", extra=self.log_extra())
                return
            except Exception as exc:
                log.warning("log tail ended with %s", exc, extra=self.log_extra())
                return

    async def replace_stuck_tailer(self, pod: str) -> None:
        """Cancel a tail whose stream outlived its container and start a fresh one, which
        resumes from the last line kept (lines already folded in are skipped)."""
        assert self.tailer is not None
        self.tailer.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.tailer
        log.warning(
            "pod log stream still open after its container ended; re-opening it",
            extra=self.log_extra(),
        )
        self.tail_pod_finished = True
        self.tailer = asyncio.create_task(self.tail(pod), name=f"tail:{self.name}")

    async def read_remaining_log(self) -> None:
        """A run that ended before its log was ever tailed (or whose tail died): read it to
        the end if the pod exists."""
        if self.nonce is None or self.writer is None:
            return
        if self.tailer is not None and not (
            self.tailer.done() and not self.tailer.cancelled() and self.tailer.exception()
        ):
            return
        pods = await self.kube.list_pods(self.namespace, f"{names.LABEL_RUN}={self.name}")
        if not pods:
            return
        name = str((pods[0].get("metadata") or {}).get("name"))
        if self.folder is None:
            self.folder = LogFolder(self.writer, run_id=self.job_id, nonce=self.nonce)
        self.tail_pod_finished = container_finished(pods[0])
        self.tail_pod = name
        self.tailer = asyncio.create_task(self.tail(name), name=f"tail:{self.name}")

    # -- the end
    async def finish(self, decision: StatusDecision) -> None:
        """Terminal: stop the Job if needed, store the result, write the terminal status
        (guarded by resourceVersion), then the transcript's final events."""
        grace = self.settings.termination_grace_period_seconds + 5.0
        if decision.phase == Phase.CANCELLED or decision.reason in (
            Reason.MISSING_CREDENTIALS,
            Reason.PENDING_TIMEOUT,
        ):
            # The pod could still start later and run a paid agent for a finished run.
            await self.kube.delete_job(self.namespace, names.job_name(self.name))
        if decision.phase != Phase.CANCELLED:
            await self.read_remaining_log()
        # The log holds the result and every line the agent printed: give the tail (resuming
        # after faults) time to read it to the end; it returns at once when the log is
        # complete or the pod is gone. A cancelled run's pod is being killed: no wait.
        if decision.phase == Phase.CANCELLED:
            await self.drain_tailer(grace)
        else:
            self.log_ends_with_result = decision.phase == Phase.SUCCEEDED
            await self.drain_tailer(max(grace, self.settings.log_drain_seconds), patience=grace)
        await self.flush_transcript(force=True)

        folder = self.folder
        while True:
            body = await self.kube.get_run(self.namespace, self.name)
            fresh = AgentRun.model_validate(body)
            final = body
            if fresh.phase.is_terminal:
                break  # written before a restart; only the transcript may be missing
            if fresh.spec.cancel_requested and decision.phase != Phase.CANCELLED:
                decision = map_run_status(fresh, None, [], utcnow())
                await self.kube.delete_job(self.namespace, names.job_name(self.name))
            result = await self.known_result(fresh) if decision.phase == Phase.SUCCEEDED else None
            status = self.terminal_status(fresh, decision, folder, result=result)
            if result is not None and self.stored_result != result:
                await self.kube.put_result(fresh, result)
                self.stored_result = result
            try:
                final = await self.patch_status(
                    status, resource_version=str(fresh.metadata.resource_version)
                )
            except Conflict:
                continue
            metrics.RUNS_FINISHED.labels(decision.phase.value, status.get("reason") or "").inc()
            if status.get("durationSeconds") is not None:
                metrics.RUN_DURATION.observe(float(status["durationSeconds"]))
            await self.kube.patch_run_labels(
                self.namespace, self.name, {names.LABEL_PHASE: decision.phase.api_status}
            )
            await self.kube.post_event(
                fresh,
                reason=decision.phase.value,
                message=status.get("message") or f"run {decision.phase.api_status}",
                type_="Normal" if decision.phase == Phase.SUCCEEDED else "Warning",
            )
            log.info(
                "run finished",
                extra={
                    **self.log_extra(),
                    "phase": decision.phase.value,
                    "reason": status.get("reason"),
                },
            )
            break
        # From the object the API server returned, never from the watch cache, which may lag.
        await self.complete_transcript(AgentRun.model_validate(final))

    async def known_result(self, run: AgentRun) -> str | None:
        """The run's result: from its log as read, else as stored before a restart (the
        resume position moves past the result lines only once it is stored)."""
        if self.folder is not None and (result := self.folder.result()) is not None:
            return result
        if self.stored_result is None:
            self.stored_result = await self.kube.get_result(
                self.namespace, self.name, run.metadata.uid
            )
        return self.stored_result

    def terminal_status(
        self,
        run: AgentRun,
        decision: StatusDecision,
        folder: LogFolder | None,
        *,
        result: str | None = None,
    ) -> Obj:
        now = utcnow()
        message = decision.message
        reason = decision.reason
        if folder is not None and folder.error is not None and reason in RUNNER_REASONS:
            message = folder.error.message
        started = decision.started_at or run.status.started_at
        begin = started or run.metadata.creation_timestamp
        status: Obj = {
            **self.extra_status,
            "phase": decision.phase.value,
            "reason": reason.value if reason else None,
            "message": message[:4096] if message else None,
            "completedAt": iso(now),
            "durationSeconds": round((now - begin).total_seconds(), 3) if begin else None,
        }
        if decision.pod_name:
            status["podName"] = decision.pod_name
        if started is not None:
            status["startedAt"] = iso(started)
        if decision.phase == Phase.SUCCEEDED and result is not None:
            excerpt, cut = result_excerpt(result)
            status["resultExcerpt"] = excerpt
            status["resultBytes"] = len(result.encode())
            status["resultTruncated"] = cut
            status["progress"] = {"percentage": 100, "currentStep": "Done"}
        if run.spec.webhook_url and run.status.webhook is None:
            from agentrun_webhooks.delivery import pending_delivery

            status["webhook"] = pending_delivery().to_k8s()
        if self.writer is not None:
            status["transcript"] = self.writer.state().to_k8s()
        return status

    async def complete_transcript(self, run: AgentRun) -> None:
        """Append the terminal status and `complete` events (once) and mark the transcript
        complete in status."""
        writer = self.writer
        assert writer is not None
        if not writer.complete:
            phase = run.phase
            reason = run.status.reason.value if run.status.reason else None
            writer.add_status(phase.api_status, reason)
            result: str | None = None
            if self.folder is not None:
                result = self.folder.result()
            if result is None:
                result = self.stored_result
            if (
                result is None
                and run.status.result_excerpt is not None
                and not run.status.result_truncated
            ):
                result = run.status.result_excerpt
            writer.add(
                "complete",
                complete_payload(
                    status=phase.api_status,
                    job_id=self.job_id,
                    reason=reason,
                    error=run.status.message if phase != Phase.SUCCEEDED else None,
                    result=result if phase == Phase.SUCCEEDED else None,
                ),
            )
            appended = await writer.flush()
            metrics.TRANSCRIPT_BYTES.inc(appended)
        state: TranscriptState = writer.state()
        await self.patch_status({"transcript": state.to_k8s()})


class RunBodies:
    """The last body seen of each run, kept as compact JSON text, not as decoded objects.

    10,000 queued runs are 10,000 bodies held for hours: decoded, each is a tree of dicts and
    strings about seven times its JSON size, and every one of those objects is walked by each
    full garbage collection (pauses of hundreds of milliseconds on the loop that renews the
    Lease). A string is one object the collector skips. A body is decoded when read (a run
    task reads its body once per wake), and a read returns a fresh dict the caller may keep.
    """

    def __init__(self) -> None:
        self._texts: dict[RunKey, str] = {}
        self._versions: dict[RunKey, int | None] = {}

    def __contains__(self, key: object) -> bool:
        return key in self._texts

    def __len__(self) -> int:
        return len(self._texts)

    def __getitem__(self, key: RunKey) -> Obj:
        body: Obj = json.loads(self._texts[key])
        return body

    def __setitem__(self, key: RunKey, body: Mapping[str, Any]) -> None:
        self._texts[key] = json.dumps(body, separators=(",", ":"), default=str)
        self._versions[key] = _resource_version(body)

    def get(self, key: RunKey, default: Obj | None = None) -> Obj | None:
        text = self._texts.get(key)
        if text is None:
            return default
        body: Obj = json.loads(text)
        return body

    def pop(self, key: RunKey, default: Obj | None = None) -> Obj | None:
        text = self._texts.pop(key, None)
        self._versions.pop(key, None)
        if text is None:
            return default
        body: Obj = json.loads(text)
        return body

    def resource_version(self, key: RunKey) -> int | None:
        """The kept body's resourceVersion (None: none kept, or not a number)."""
        return self._versions.get(key)


def _status_field(run: AgentRun, field: str) -> Any:
    return run.status.to_k8s().get(field)


def _generation(body: Mapping[str, Any]) -> int | None:
    value = (body.get("metadata") or {}).get("generation")
    return value if isinstance(value, int) else None


def _resource_version(body: Mapping[str, Any]) -> int | None:
    value = (body.get("metadata") or {}).get("resourceVersion")
    try:
        return int(str(value))
    except ValueError:
        return None

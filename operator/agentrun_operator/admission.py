"""Per-namespace admission: at most ``maxConcurrentRuns`` unfinished Jobs, FIFO by creation.

Cost model (10,000 queued runs must not starve the event loop):

- The waiting runs are small records, ``(creation time, name)`` tuples, kept sorted in one list
  (``bisect``): a run joining or leaving is a binary search plus a pointer move, a run's exact
  place in the queue is a binary search, and the runs allowed to start are the list's head.
  The order is the API's ``queue_position`` order (creation time, then name), so the position a
  client reads is the order in which runs start.
- Admission is woken by events, never polled: a Job that finishes or disappears, a run that
  leaves the queue or a create that failed wakes only the first runs that now fit
  (:meth:`Admission.notify`). Queued runs wait without a timer.
- The set of unfinished Jobs follows Job watch events, and is recomputed from a list of the
  Jobs whenever the watch relists (a Job deleted while the watch was away sends no event, and
  would hold its slot forever) and on a slow timer (:meth:`Admission.recount`).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from agentrun_contract import names

from agentrun_operator import metrics
from agentrun_operator.kube_io import Kube

log = logging.getLogger("agentrun.operator")

Obj = dict[str, Any]
AdmissionKey = tuple[float, str]

JOB_FINISHED_CONDITIONS = ("Complete", "SuccessCriteriaMet", "Failed", "FailureTarget")


def job_is_finished(job: Obj) -> bool:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") in JOB_FINISHED_CONDITIONS and cond.get("status") == "True":
            return True
    return bool((job.get("metadata") or {}).get("deletionTimestamp"))


def admission_key(body: Obj) -> AdmissionKey:
    """FIFO key: creation time (seconds since the epoch), then the name: the order the API's
    ``queue_position`` counts in, so the two always agree."""
    meta = body.get("metadata") or {}
    stamp = str(meta.get("creationTimestamp") or "")
    try:
        created = datetime.fromisoformat(stamp).timestamp() if stamp else 0.0
    except ValueError:
        created = 0.0
    return (created, str(meta.get("name") or ""))


class Admission:
    """Per-namespace concurrency limit: at most ``limit`` unfinished Jobs, FIFO by creation.

    A run enters with :meth:`enqueue`, asks with :meth:`try_admit` when woken, reports its
    create with :meth:`created`, and leaves with :meth:`leave` (deleted, finished or cancelled).
    ``wake(name)`` is called for runs that may now start; it must be cheap and not block.
    """

    def __init__(
        self,
        namespace: str,
        limit: int,
        kube: Kube,
        wake: Callable[[str], None],
        *,
        recount_seconds: float = 60.0,
        relist_settle_seconds: float = 1.0,
    ) -> None:
        self.namespace = namespace
        self.limit = limit
        self.kube = kube
        self.wake = wake
        self.recount_seconds = recount_seconds
        self.relist_settle_seconds = relist_settle_seconds
        self._order: list[AdmissionKey] = []
        self._keys: dict[str, AdmissionKey] = {}
        self.granted: set[str] = set()
        self.unfinished: set[str] = set()
        self.primed = False
        self.recounts = 0
        self.lock = asyncio.Lock()
        # While a recount's list is in flight: Job events seen meanwhile (name -> unfinished),
        # applied over the listing so nothing that happened during the list is lost.
        self._changes: dict[str, bool] | None = None
        self._relist: asyncio.Task[None] | None = None
        self._timer: asyncio.Task[None] | None = None

    # -- the queue
    @property
    def waiting(self) -> dict[str, AdmissionKey]:
        """The waiting runs (name -> key); read-only view for callers and tests."""
        return self._keys

    def enqueue(self, name: str, key: AdmissionKey) -> None:
        held = self._keys.get(name)
        if held == key:
            return
        if held is not None:
            self._unorder(held)
        self._keys[name] = key
        bisect.insort(self._order, key)
        metrics.QUEUE_DEPTH.labels(self.namespace).set(len(self._keys))

    def _unorder(self, key: AdmissionKey) -> None:
        index = bisect.bisect_left(self._order, key)
        if index < len(self._order) and self._order[index] == key:
            del self._order[index]

    def leave(self, name: str) -> None:
        """``name`` no longer waits nor holds a grant; the runs that now fit are woken."""
        key = self._keys.pop(name, None)
        if key is not None:
            self._unorder(key)
        self.granted.discard(name)
        metrics.QUEUE_DEPTH.labels(self.namespace).set(len(self._keys))
        self.notify()

    def position(self, name: str) -> int | None:
        """1-based place of ``name`` among the waiting runs, None if it is not waiting."""
        key = self._keys.get(name)
        if key is None:
            return None
        return bisect.bisect_left(self._order, key) + 1

    def in_flight(self) -> int:
        """Slots taken: unfinished Jobs plus grants whose Job is not created yet."""
        return len(self.unfinished) + sum(1 for n in self.granted if n not in self.unfinished)

    def free_slots(self) -> int:
        return max(0, self.limit - self.in_flight())

    def notify(self) -> None:
        """A slot may have freed: wake the waiting runs that now fit (the head of the queue)."""
        for _, name in self._order[: self.free_slots()]:
            self.wake(name)

    # -- unfinished Jobs
    def observe_job(self, run_name: str, job: Obj | None) -> None:
        """A Job event (None: deleted): keep the set of unfinished Jobs current."""
        unfinished = job is not None and not job_is_finished(job)
        if unfinished:
            self.unfinished.add(run_name)
        else:
            self.unfinished.discard(run_name)
        if self._changes is not None:
            self._changes[run_name] = unfinished

    async def recount(self) -> None:
        """Recompute the unfinished Jobs from a list, then wake the runs that now fit."""
        self._changes = {}
        try:
            jobs = await self.kube.list_jobs(self.namespace, names.LABEL_RUN)
            listed: set[str] = set()
            for job in jobs:
                run_name = ((job.get("metadata") or {}).get("labels") or {}).get(names.LABEL_RUN)
                if run_name and not job_is_finished(job):
                    listed.add(str(run_name))
            for run_name, unfinished in self._changes.items():
                if unfinished:
                    listed.add(run_name)
                else:
                    listed.discard(run_name)
        finally:
            self._changes = None
        freed = self.unfinished - listed
        if freed:
            log.info(
                "admission recount freed slots",
                extra={"namespace": self.namespace, "freed": len(freed)},
            )
        self.unfinished = listed
        self.primed = True
        self.recounts += 1
        self.notify()

    def relisted(self) -> None:
        """The Job watch is listing again (start-up or after a 410): recount once the listing
        has settled (one recount per listing, however many Jobs it brings)."""
        if self._relist is None or self._relist.done():
            self._relist = asyncio.create_task(
                self._recount_after(self.relist_settle_seconds),
                name=f"admission-relist:{self.namespace}",
            )

    async def _recount_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await self._recount_logged()

    async def _recount_logged(self) -> None:
        try:
            async with self.lock:
                await self.recount()
        except Exception as exc:  # retried by the timer; admission keeps its current view
            log.warning("admission recount failed: %s", exc, extra={"namespace": self.namespace})

    def start_timer(self) -> None:
        """Recount every ``recount_seconds`` from now on (idempotent)."""
        if self._timer is None or self._timer.done():
            self._timer = asyncio.create_task(
                self._timer_loop(), name=f"admission-recount:{self.namespace}"
            )

    async def _timer_loop(self) -> None:
        while True:
            await asyncio.sleep(self.recount_seconds)
            await self._recount_logged()

    async def stop(self) -> None:
        for task in (self._timer, self._relist):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    # -- admitting
    async def try_admit(self, name: str) -> bool:
        """True if ``name`` may create its Job now (the caller then calls :meth:`created`)."""
        position = self.position(name)
        if position is None or position > self.limit:
            return False
        async with self.lock:
            if not self.primed:
                # Never trust a half-listed cache (kopf's initial listing may still be
                # arriving after a restart): list the Jobs once before the first grant.
                await self.recount()
                self.start_timer()
            position = self.position(name)
            if position is None or position > self.free_slots():
                return False
            key = self._keys.pop(name)
            self._unorder(key)
            self.granted.add(name)
            metrics.QUEUE_DEPTH.labels(self.namespace).set(len(self._keys))
            return True

    def created(self, name: str, job: Obj | None) -> None:
        """The Job was created (``job``) or creating it failed (None: the slot is free again)."""
        if job is not None:
            self.observe_job(name, job)
        self.granted.discard(name)
        if job is None:
            self.notify()

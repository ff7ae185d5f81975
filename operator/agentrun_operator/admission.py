"""Per-namespace admission: at most ``maxConcurrentRuns`` unfinished Jobs, FIFO by creation."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from agentrun_contract import names

from agentrun_operator import metrics
from agentrun_operator.kube_io import Kube

Obj = dict[str, Any]

JOB_FINISHED_CONDITIONS = ("Complete", "SuccessCriteriaMet", "Failed", "FailureTarget")


def job_is_finished(job: Obj) -> bool:
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") in JOB_FINISHED_CONDITIONS and cond.get("status") == "True":
            return True
    return bool((job.get("metadata") or {}).get("deletionTimestamp"))


def admission_key(body: Obj, arrival: int) -> tuple[str, int, str]:
    """FIFO key: creation time (one-second resolution), then the order this process first saw
    the runs (watch order is creation order), then the name."""
    meta = body.get("metadata") or {}
    return (str(meta.get("creationTimestamp") or ""), arrival, str(meta.get("name") or ""))


class Admission:
    """Per-namespace concurrency limit: at most ``limit`` unfinished Jobs, FIFO by creation."""

    def __init__(self, namespace: str, limit: int, kube: Kube, wake: Callable[[str], None]):
        self.namespace = namespace
        self.limit = limit
        self.kube = kube
        self.wake = wake
        self.waiting: dict[str, tuple[str, int, str]] = {}
        self.granted: set[str] = set()
        self.unfinished: set[str] = set()
        self.primed = False
        self.lock = asyncio.Lock()

    def enqueue(self, name: str, key: tuple[str, int, str]) -> None:
        self.waiting[name] = key
        metrics.QUEUE_DEPTH.labels(self.namespace).set(len(self.waiting))

    def leave(self, name: str) -> None:
        self.waiting.pop(name, None)
        self.granted.discard(name)
        metrics.QUEUE_DEPTH.labels(self.namespace).set(len(self.waiting))

    def notify(self) -> None:
        """A slot may have freed: wake the first waiting runs."""
        for name, _ in sorted(self.waiting.items(), key=lambda kv: kv[1])[: self.limit]:
            self.wake(name)

    def observe_job(self, run_name: str, job: Obj | None) -> None:
        """A Job event (None: deleted): keep the set of unfinished Jobs current."""
        if job is None or job_is_finished(job):
            self.unfinished.discard(run_name)
        else:
            self.unfinished.add(run_name)

    async def _prime(self) -> None:
        """Once per namespace: list the Jobs, so admission never trusts a half-listed cache
        (kopf's initial listing may still be arriving after a restart)."""
        jobs = await self.kube.list_jobs(self.namespace, names.LABEL_RUN)
        for job in jobs:
            run_name = ((job.get("metadata") or {}).get("labels") or {}).get(names.LABEL_RUN)
            if run_name:
                self.observe_job(str(run_name), job)
        self.primed = True

    async def try_admit(self, name: str) -> bool:
        """True if ``name`` may create its Job now (the caller then calls :meth:`created`)."""
        async with self.lock:
            order = [n for n, _ in sorted(self.waiting.items(), key=lambda kv: kv[1])]
            if name not in order:
                return False
            position = order.index(name)
            if position >= self.limit:
                return False
            if not self.primed:
                await self._prime()
            in_flight = len(self.unfinished | self.granted)
            if position < self.limit - in_flight:
                self.granted.add(name)
                self.waiting.pop(name, None)
                metrics.QUEUE_DEPTH.labels(self.namespace).set(len(self.waiting))
                return True
            return False

    def created(self, name: str, job: Obj | None) -> None:
        """The Job was created (``job``) or creating it failed (None)."""
        if job is not None:
            self.observe_job(name, job)
        self.granted.discard(name)

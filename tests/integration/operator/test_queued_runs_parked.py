"""A queued run keeps no task while it waits (issue 12: 10,000 queued runs must not keep 10,000
tasks and reconcilers): its Queued status is written once, then only admission or a spec change
brings its task back, and nothing is lost on the way (the cancel of a parked run, the Job of a
run admitted later, a transcript without a second ``queued``).

The run tasks run in-process against the emulated apiserver; the test plays kopf's part and
hands them the watch events."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import operator_harness as h
import pytest
from agentrun_contract import names
from agentrun_devcluster.system import SyncKube
from agentrun_devcluster.testing import ClusterThread
from agentrun_kube.client import load_api_client
from agentrun_operator import reconciler
from agentrun_operator.kube_io import Kube
from agentrun_operator.reconciler import RunContext
from agentrun_operator.settings import OperatorSettings

KEY_A, KEY_B, KEY_C = (h.NS, "park-a"), (h.NS, "park-b"), (h.NS, "park-c")


async def until(what: str, probe: Callable[[], Any], seconds: float = 30.0) -> Any:
    deadline = asyncio.get_running_loop().time() + seconds
    last: Any = None
    while asyncio.get_running_loop().time() < deadline:
        last = await asyncio.to_thread(probe)
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"{seconds} s waiting for {what}; last: {last!r}")


async def test_queued_runs_are_parked_and_woken_without_loss() -> None:
    with ClusterThread() as cluster:
        k = SyncKube(cluster.base_url)
        api = await load_api_client(str(cluster.kubeconfig))
        settings = OperatorSettings(
            namespaces=[h.NS],
            max_concurrent_runs=1,
            resync_seconds=0.5,
            log_drain_seconds=1.0,
            termination_grace_period_seconds=1,
        )
        ctx = RunContext(settings, Kube(api))
        try:
            for _, name in (KEY_A, KEY_B, KEY_C):
                ctx.observe_run(h.make_run(k, name), deleted=False)

            def queued(name: str) -> bool:
                return (h.get_run(k, name).get("status") or {}).get("phase") == "Queued"

            await until("park-a's Job", lambda: h.jobs_of(k, KEY_A[1]))
            await until("park-b and park-c Queued", lambda: queued("park-b") and queued("park-c"))
            await until("both parked", lambda: set(ctx.parked) == {KEY_B, KEY_C})
            assert set(ctx.tasks) == {KEY_A}
            # read again when woken
            assert KEY_B not in ctx.bodies
            assert KEY_C not in ctx.bodies
            assert ctx.following == 3

            # The echo of our own Queued write (same spec) does not bring a task back.
            ctx.observe_run(await asyncio.to_thread(h.get_run, k, "park-b"), deleted=False)
            assert KEY_B in ctx.parked
            assert KEY_B not in ctx.tasks

            # A cancel of a parked run is a spec change: its task comes back and ends it.
            cancelled = await asyncio.to_thread(
                k.merge_patch, f"{h.RUNS}/park-c", {"spec": {"cancelRequested": True}}
            )
            ctx.observe_run(cancelled, deleted=False)
            assert KEY_C not in ctx.parked
            await until(
                "park-c Cancelled",
                lambda: (h.get_run(k, "park-c").get("status") or {}).get("phase") == "Cancelled",
            )
            assert not h.jobs_of(k, "park-c")

            # park-a's Job finishes: admission wakes park-b, whose task creates its Job.
            job_path = f"{h.JOBS}/{names.job_name('park-a')}"
            finished = await asyncio.to_thread(
                k.merge_patch,
                f"{job_path}/status",
                {"status": {"conditions": [{"type": "Failed", "status": "True"}]}},
            )
            ctx.observe_owned(h.NS, "park-a", job=finished, job_event=True)
            await until("park-b's Job", lambda: h.jobs_of(k, "park-b"))
            assert KEY_B not in ctx.parked
            statuses = [
                e.data.get("status")
                for e in await asyncio.to_thread(h.transcript, k, "park-b")
                if e.event == "status"
            ]
            assert statuses == ["queued"], statuses
            assert len(h.jobs_of(k, "park-b")) == 1
        finally:
            await ctx.stop()
            await api.close()
            k.close()


async def test_admission_is_fifo_by_creation_even_when_first_passes_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After a restart the runs' first passes go in listing order (by name), a few at a time:
    the oldest run still gets the slot, though its first pass comes last."""
    monkeypatch.setattr(reconciler, "STARTUP_CONCURRENCY", 1)
    with ClusterThread() as cluster:
        k = SyncKube(cluster.base_url)
        api = await load_api_client(str(cluster.kubeconfig))
        ctx = RunContext(OperatorSettings(namespaces=[h.NS], max_concurrent_runs=1), Kube(api))
        try:
            # "fifo-c" is the oldest (creationTimestamp has whole seconds; within one second
            # the name decides, as for queue_position)
            bodies = {}
            for name in ("fifo-c", "fifo-b", "fifo-a"):
                bodies[name] = h.make_run(k, name)
                await asyncio.sleep(1.05)
            for name in sorted(bodies):  # the order a listing brings them in
                ctx.observe_run(bodies[name], deleted=False)
            assert len(ctx.pending) == 2  # one first pass at a time
            await until(
                "a Job",
                lambda: h.jobs_of(k, "fifo-a") or h.jobs_of(k, "fifo-b") or h.jobs_of(k, "fifo-c"),
            )
            await until("the others parked", lambda: len(ctx.parked) == 2)
            assert h.jobs_of(k, "fifo-c")
            assert not h.jobs_of(k, "fifo-a")
            assert not h.jobs_of(k, "fifo-b")
        finally:
            await ctx.stop()
            await api.close()
            k.close()

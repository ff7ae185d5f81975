"""Admission: one ordered queue (exact positions, the API's order), woken by events, and a set
of unfinished Jobs that a relist or the slow timer recomputes from a list."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from agentrun_api.listing import queue_positions
from agentrun_api.records import record_from_object
from agentrun_operator.admission import Admission, admission_key

NS = "default"


class FakeJobs:
    """The ``list_jobs`` the admission calls; ``gate`` holds a list in flight."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.lists = 0
        self.gate: asyncio.Event | None = None

    def put(self, run: str, *, finished: bool = False) -> dict[str, Any]:
        job: dict[str, Any] = {
            "metadata": {"name": run, "labels": {"agentrun.dev/run": run}},
            "status": {"conditions": [{"type": "Complete", "status": "True"}]} if finished else {},
        }
        self.jobs[run] = job
        return job

    async def list_jobs(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        self.lists += 1
        snapshot = list(self.jobs.values())
        if self.gate is not None:
            await self.gate.wait()
        return snapshot


def run_body(name: str, second: int) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": NS,
            "creationTimestamp": f"2026-01-01T00:{second // 60:02d}:{second % 60:02d}Z",
        },
        "spec": {"prompt": "p"},
        "status": {},
    }


def make(limit: int, jobs: FakeJobs, woken: list[str], **kwargs: Any) -> Admission:
    return Admission(NS, limit, jobs, woken.append, **kwargs)  # type: ignore[arg-type]


def test_positions_are_exact_and_in_the_api_queue_order() -> None:
    rng = random.Random(7)
    # Many runs share a creation second (the timestamp's resolution): the name breaks ties.
    bodies = [run_body(f"run-{rng.randrange(10**6):06d}", rng.randrange(30)) for _ in range(400)]
    admission = make(5, FakeJobs(), [])
    for body in bodies:
        admission.enqueue(body["metadata"]["name"], admission_key(body))
    for body in bodies[::3]:
        admission.leave(body["metadata"]["name"])
    remaining = [b for i, b in enumerate(bodies) if i % 3]

    expected = queue_positions(record_from_object(b) for b in remaining)
    assert {n: admission.position(n) for n in expected} == expected
    assert admission.position(bodies[0]["metadata"]["name"]) is None


async def test_only_the_head_that_fits_is_admitted_and_woken() -> None:
    jobs = FakeJobs()
    woken: list[str] = []
    admission = make(2, jobs, woken)
    for i, name in enumerate(["a", "b", "c", "d"]):
        admission.enqueue(name, admission_key(run_body(name, i)))

    assert not await admission.try_admit("c")  # two runs are ahead of it
    assert await admission.try_admit("a")
    admission.created("a", jobs.put("a"))
    assert not await admission.try_admit("c")  # b fits first: strict FIFO
    assert await admission.try_admit("b")
    admission.created("b", jobs.put("b"))
    assert not await admission.try_admit("c")  # full

    woken.clear()
    admission.observe_job("a", jobs.put("a", finished=True))
    admission.notify()
    assert woken == ["c"]  # only the run that now fits; d sleeps on
    assert await admission.try_admit("c")
    assert jobs.lists == 1  # primed once, before the first grant


async def test_a_failed_create_frees_its_slot_and_wakes_the_next() -> None:
    jobs = FakeJobs()
    woken: list[str] = []
    admission = make(1, jobs, woken)
    admission.enqueue("a", admission_key(run_body("a", 0)))
    admission.enqueue("b", admission_key(run_body("b", 1)))
    assert await admission.try_admit("a")
    woken.clear()
    admission.created("a", None)
    assert woken == ["b"]
    assert await admission.try_admit("b")


async def test_a_job_deleted_during_a_relist_gap_frees_its_slot() -> None:
    jobs = FakeJobs()
    woken: list[str] = []
    admission = make(1, jobs, woken, relist_settle_seconds=0.01)
    admission.enqueue("a", admission_key(run_body("a", 0)))
    assert await admission.try_admit("a")
    admission.created("a", jobs.put("a"))
    admission.enqueue("b", admission_key(run_body("b", 1)))
    assert not await admission.try_admit("b")

    # The watch was away (410) while a's Job was deleted: no DELETED event ever comes; the
    # relist brings the other Jobs (type None) and not a's.
    del jobs.jobs["a"]
    jobs.put("other", finished=True)
    woken.clear()
    admission.observe_job("other", jobs.jobs["other"])
    admission.relisted()
    admission.relisted()  # one recount per listing, however many Jobs it brings
    await asyncio.sleep(0.1)

    assert admission.recounts == 2  # the priming list, then one for the relist
    assert "a" not in admission.unfinished
    assert woken == ["b"]
    assert await admission.try_admit("b")


async def test_the_slow_timer_recounts_without_any_event() -> None:
    jobs = FakeJobs()
    woken: list[str] = []
    admission = make(1, jobs, woken, recount_seconds=0.05)
    admission.enqueue("a", admission_key(run_body("a", 0)))
    assert await admission.try_admit("a")  # primes and starts the timer
    admission.created("a", jobs.put("a"))
    admission.enqueue("b", admission_key(run_body("b", 1)))
    del jobs.jobs["a"]  # gone, unseen
    try:
        for _ in range(100):
            await asyncio.sleep(0.02)
            if "b" in woken:
                break
        assert "b" in woken
        assert await admission.try_admit("b")
    finally:
        await admission.stop()


async def test_job_events_during_a_recount_list_are_not_lost() -> None:
    jobs = FakeJobs()
    admission = make(3, jobs, [])
    jobs.gate = asyncio.Event()
    recount = asyncio.create_task(admission.recount())
    await asyncio.sleep(0)  # the list has taken its snapshot (empty)
    admission.observe_job("late", jobs.put("late"))  # created while the list is in flight
    jobs.gate.set()
    await recount
    assert admission.unfinished == {"late"}


@pytest.mark.parametrize("stamp", ["", "not a time"])
def test_admission_key_tolerates_a_missing_creation_time(stamp: str) -> None:
    assert admission_key({"metadata": {"name": "x", "creationTimestamp": stamp}}) == (0.0, "x")

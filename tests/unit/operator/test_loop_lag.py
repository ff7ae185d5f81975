"""The operator measures its own event-loop lag (agentrun_operator_event_loop_lag_seconds: a
loop blocked for 200 ms shows as one observation of about 200 ms) and its garbage collection
pauses (agentrun_operator_gc_pause_seconds)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time

from agentrun_operator import metrics
from agentrun_operator.main import GCPauseRecorder, measure_loop_lag


def lag_samples() -> tuple[float, float]:
    """(count, sum) of the histogram so far."""
    count = total = 0.0
    for family in metrics.EVENT_LOOP_LAG.collect():
        for sample in family.samples:
            if sample.name.endswith("_count"):
                count = sample.value
            elif sample.name.endswith("_sum"):
                total = sample.value
    return count, total


async def test_a_blocked_loop_is_observed_as_lag() -> None:
    count0, sum0 = lag_samples()
    task = asyncio.create_task(measure_loop_lag(interval=0.01))
    await asyncio.sleep(0.05)
    time.sleep(0.2)  # noqa: ASYNC251 (the point: the loop is busy, the timer runs late)
    await asyncio.sleep(0.05)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    count, total = lag_samples()
    assert count - count0 >= 3
    assert 0.15 <= total - sum0 < 1.0


def test_gc_pauses_are_observed_by_generation() -> None:
    def full_collections() -> float:
        for family in metrics.GC_PAUSE.collect():
            for sample in family.samples:
                if sample.name.endswith("_count") and sample.labels["generation"] == "2":
                    return sample.value
        return 0.0

    before = full_collections()
    recorder = GCPauseRecorder()
    gc.callbacks.append(recorder)
    try:
        gc.collect()
    finally:
        gc.callbacks.remove(recorder)
    assert full_collections() == before + 1

"""The operator on the emulated cluster, with the tiny runner: every path to a terminal state."""

from __future__ import annotations

from collections.abc import Callable

from agentrun_devcluster.system import SyncKube

import operator_harness as h  # type: ignore[import-not-found]

StartOperator = Callable[..., h.OperatorProcess]


def test_success_with_result_and_transcript(k: SyncKube, start_operator: StartOperator) -> None:
    h.create_credentials(k)
    op = start_operator()
    h.make_run(k, "ok-1", "hello lines=4 steps=2 sleep=0.5")
    run = h.wait_phase(k, "ok-1", {"Succeeded", "Failed", "Cancelled"}, logs=op.log)
    status = run["status"]
    assert status["phase"] == "Succeeded", status
    assert status["resultExcerpt"] == "tiny result for ok-1"
    assert status["completedAt"]
    assert status["startedAt"]
    assert run["metadata"]["labels"]["agentrun.dev/phase"] == "succeeded"
    run = h.wait_transcript_complete(k, "ok-1")
    events = h.transcript(k, "ok-1")
    ids = [e.id for e in events]
    assert ids == list(range(1, len(ids) + 1))
    statuses = [e.data["status"] for e in events if e.event == "status"]
    assert statuses == ["queued", "running", "succeeded"]
    logs = [e.data["message"] for e in events if e.event == "log"]
    assert sum(1 for m in logs if "tiny" in m.lower() or "line" in m.lower()) >= 4
    assert events[-1].event == "complete"
    assert events[-1].data["status"] == "succeeded"
    assert events[-1].data["result"] == "tiny result for ok-1"
    assert len(h.jobs_of(k, "ok-1")) == 1
    result = k.get(f"{h.RESULTS}/ok-1-result")
    assert result["spec"]["result"] == "tiny result for ok-1"

"""The operator against an apiserver that cuts pod-log follows mid-chunk, ends them early, and
throttles result writes (issue 11, defects 1 and 2): every run still succeeds with its whole
result, a gap-free transcript with every line once, and an Event saying the stream was resumed."""

from __future__ import annotations

from collections.abc import Callable

import operator_harness as h
from agentrun_contract import names
from agentrun_devcluster.apiserver.faults import APIFault
from agentrun_devcluster.system import ControlledCluster, SyncKube

EVENTS = f"/api/v1/namespaces/{h.NS}/events"


def test_runs_survive_cut_log_streams_and_throttled_result_writes(
    op_cluster: ControlledCluster,
    k: SyncKube,
    start_operator: Callable[..., h.OperatorProcess],
) -> None:
    h.create_credentials(k)
    faults = op_cluster.server.faults
    faults.add(APIFault.LOG_CUT, times=3, after_bytes=1500)
    faults.add(APIFault.LOG_DISCONNECT, times=3, after_bytes=2500)
    faults.add(APIFault.THROTTLE, times=2, path="agentrunresults", methods=frozenset({"POST"}))
    op = start_operator(AGENTRUN_OPERATOR_LEADER_ELECTION__ENABLED="false")

    prompts = {
        f"cut-{i}": f"echo sleep=2 steps=4 lines=15 run {i} " + "x" * (100 * i) for i in range(3)
    }
    for name, prompt in prompts.items():
        h.make_run(k, name, prompt)

    for name, prompt in prompts.items():
        run = h.wait_transcript_complete(k, name, timeout=90)
        status = run["status"]
        assert status["phase"] == "Succeeded", (name, status, op.log()[-6000:])
        assert status["resultExcerpt"] == prompt
        stored = k.get(f"{h.RESULTS}/{names.result_name(name)}")
        assert stored["spec"]["result"] == prompt
        events = h.transcript(k, name)
        ids = [e.id for e in events]
        assert ids == list(range(1, len(ids) + 1)), (name, ids)
        logs = [str(e.data["message"]) for e in events if e.event == "log"]
        lines = [m for m in logs if m.startswith("tiny log line ")]
        assert len(lines) == 15, (name, logs)
        assert len(set(lines)) == 15, (name, logs)
        complete = [e for e in events if e.event == "complete"]
        assert len(complete) == 1
        assert complete[0].data["result"] == prompt
        assert len(h.jobs_of(k, name)) == 1

    assert faults.fired[APIFault.LOG_CUT] == 3
    assert faults.fired[APIFault.LOG_DISCONNECT] == 3
    assert faults.fired[APIFault.THROTTLE] == 2
    reasons = {
        (e["involvedObject"]["name"], e["reason"])
        for e in k.items(EVENTS)
        if e["reason"] == "LogStreamInterrupted"
    }
    assert reasons, "no Event says a log stream was interrupted and resumed"
    assert "pod log stream interrupted" in op.log()

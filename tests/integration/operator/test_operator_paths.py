"""The operator on the emulated cluster, with the tiny runner: every path to a terminal state."""

from __future__ import annotations

from collections.abc import Callable

import operator_harness as h  # type: ignore[import-not-found]
from agentrun_devcluster.system import ControlledCluster, SyncKube

StartOperator = Callable[..., h.OperatorProcess]
Shared = tuple[ControlledCluster, SyncKube, h.OperatorProcess]


def test_success_with_result_and_transcript(shared: Shared) -> None:
    _op_cluster, k, op = shared
    h.make_run(k, "ok-1", "hello lines=4 steps=2 sleep=0.5")
    run = h.wait_phase(k, "ok-1", {"Succeeded", "Failed", "Cancelled"}, logs=op.log)
    status = run["status"]
    assert status["phase"] == "Succeeded", status
    assert status["resultExcerpt"] == "tiny result for ok-1"
    assert status["completedAt"]
    assert status["startedAt"]
    run = h.wait_transcript_complete(k, "ok-1")
    assert run["metadata"]["labels"]["agentrun.dev/phase"] == "succeeded"
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


TERMINAL = {"Succeeded", "Failed", "Cancelled"}


def finished(k: SyncKube, op: h.OperatorProcess, name: str, timeout: float = 60) -> dict:  # type: ignore[type-arg]
    h.wait_phase(k, name, TERMINAL, timeout=timeout, logs=op.log)
    return h.wait_transcript_complete(k, name)


def assert_complete_transcript(k: SyncKube, name: str, status: str, reason: str | None) -> list:  # type: ignore[type-arg]
    events = h.transcript(k, name)
    ids = [e.id for e in events]
    assert ids == sorted(set(ids)), "ids strictly increase, no duplicates"
    assert events[-1].event == "complete"
    assert events[-1].data["status"] == status
    assert events[-1].data["reason"] == reason
    return events


def test_agent_error_keeps_runner_message(shared: Shared) -> None:
    _op_cluster, k, op = shared
    h.make_run(k, "err-1", "fail lines=2")
    run = finished(k, op, "err-1")
    assert run["status"]["phase"] == "Failed"
    assert run["status"]["reason"] == "agent_error"
    assert run["status"]["message"]
    events = assert_complete_transcript(k, "err-1", "failed", "agent_error")
    assert events[-1].data["error"] == run["status"]["message"]


def test_timeout_keeps_transcript_after_pod_is_gone(shared: Shared) -> None:
    _op_cluster, k, op = shared
    h.make_run(k, "slow-1", "sleep=30 lines=3", timeoutSeconds=2)
    run = finished(k, op, "slow-1", timeout=60)
    assert run["status"]["phase"] == "Failed"
    assert run["status"]["reason"] == "timeout"
    events = assert_complete_transcript(k, "slow-1", "failed", "timeout")
    messages = [e.data.get("message", "") for e in events if e.event == "log"]
    # the lines printed before the deadline and the runner's interruption are all kept
    assert any("interrupted" in m for m in messages), messages
    k.wait_for("pod gone", lambda: not k.items(h.PODS, labelSelector="agentrun.dev/run=slow-1"))
    assert h.transcript(k, "slow-1") == events


def test_cancel_running_is_final(shared: Shared) -> None:
    _op_cluster, k, op = shared
    h.make_run(k, "cx-run", "sleep=30")
    h.wait_phase(k, "cx-run", {"Running"}, logs=op.log)
    k.merge_patch(f"{h.RUNS}/cx-run", {"spec": {"cancelRequested": True}})
    run = finished(k, op, "cx-run")
    assert run["status"]["phase"] == "Cancelled"
    assert run["status"]["reason"] == "cancelled"
    assert run["status"]["completedAt"]
    assert_complete_transcript(k, "cx-run", "cancelled", "cancelled")
    k.wait_for("job deleted", lambda: not h.jobs_of(k, "cx-run"))
    k.wait_for("pod deleted", lambda: not k.items(h.PODS, labelSelector="agentrun.dev/run=cx-run"))
    assert h.get_run(k, "cx-run")["status"]["phase"] == "Cancelled"


def test_cancel_queued_without_job(k: SyncKube, start_operator: StartOperator) -> None:
    h.create_credentials(k)
    op = start_operator(AGENTRUN_OPERATOR_MAX_CONCURRENT_RUNS="1")
    h.make_run(k, "cq-a", "sleep=30")
    h.wait_phase(k, "cq-a", {"Running"}, logs=op.log)
    h.make_run(k, "cq-b", "hello")
    h.wait_phase(k, "cq-b", {"Queued"}, logs=op.log)
    assert h.jobs_of(k, "cq-b") == []
    k.merge_patch(f"{h.RUNS}/cq-b", {"spec": {"cancelRequested": True}})
    run = finished(k, op, "cq-b")
    assert run["status"]["phase"] == "Cancelled"
    assert h.jobs_of(k, "cq-b") == []
    assert_complete_transcript(k, "cq-b", "cancelled", "cancelled")


def test_cancel_pending_pod(shared: Shared) -> None:
    op_cluster, k, op = shared
    op_cluster.faults.add({"agentrun.dev/run": "cx-pend"}, "unschedulable")
    h.make_run(k, "cx-pend", "hello")
    k.wait_for(
        "queued with reason",
        lambda: (h.get_run(k, "cx-pend").get("status") or {}).get("reason") == "unschedulable",
    )
    k.merge_patch(f"{h.RUNS}/cx-pend", {"spec": {"cancelRequested": True}})
    run = finished(k, op, "cx-pend")
    assert run["status"]["phase"] == "Cancelled"
    k.wait_for("job deleted", lambda: not h.jobs_of(k, "cx-pend"))


def test_missing_secret_names_it(k: SyncKube, start_operator: StartOperator) -> None:
    op = start_operator()  # no credentials Secret
    h.make_run(k, "nocred", "hello")
    run = finished(k, op, "nocred")
    assert run["status"]["phase"] == "Failed"
    assert run["status"]["reason"] == "missing_credentials"
    assert "create Secret agentrun-llm-credentials" in run["status"]["message"]
    k.wait_for("job deleted", lambda: not h.jobs_of(k, "nocred"))


def test_image_pull_then_pending_timeout(
    k: SyncKube, start_operator: StartOperator, op_cluster
) -> None:  # type: ignore[no-untyped-def]
    h.create_credentials(k)
    op_cluster.faults.add({"agentrun.dev/run": "pull"}, "image_pull")
    op = start_operator(AGENTRUN_OPERATOR_PENDING_TIMEOUT_SECONDS="3")
    h.make_run(k, "pull", "hello")
    k.wait_for(
        "queued/image_pull",
        lambda: (h.get_run(k, "pull").get("status") or {}).get("reason") == "image_pull",
    )
    assert h.get_run(k, "pull")["status"]["phase"] == "Queued"
    run = finished(k, op, "pull")
    # past the deadline the run fails with the reason it waited for, not pending_timeout alone
    assert run["status"]["reason"] == "image_pull"
    assert "did not start within 3 s: cannot pull the runner image" in run["status"]["message"]
    events = assert_complete_transcript(k, "pull", "failed", "image_pull")
    statuses = [(e.data["status"], e.data["reason"]) for e in events if e.event == "status"]
    assert ("queued", "image_pull") in statuses
    k.wait_for("job deleted (its pod must never start later)", lambda: not h.jobs_of(k, "pull"))


def test_unschedulable_reason(shared: Shared) -> None:
    op_cluster, k, _op = shared
    op_cluster.faults.add({"agentrun.dev/run": "nosched"}, "unschedulable")
    h.make_run(k, "nosched", "hello")
    k.wait_for(
        "queued/unschedulable",
        lambda: (h.get_run(k, "nosched").get("status") or {}).get("reason") == "unschedulable",
        timeout=30,
    )
    assert h.get_run(k, "nosched")["status"]["phase"] == "Queued"


def test_evicted(shared: Shared) -> None:
    op_cluster, k, op = shared
    op_cluster.faults.add({"agentrun.dev/run": "evict"}, "evict", after_seconds=1.0)
    h.make_run(k, "evict", "sleep=30")
    run = finished(k, op, "evict")
    assert (run["status"]["phase"], run["status"]["reason"]) == ("Failed", "evicted")
    assert len(h.jobs_of(k, "evict")) == 1  # never re-run


def test_oom_killed(shared: Shared) -> None:
    op_cluster, k, op = shared
    op_cluster.faults.add({"agentrun.dev/run": "oom"}, "oom_kill", after_seconds=1.0)
    h.make_run(k, "oom", "sleep=30")
    run = finished(k, op, "oom")
    assert (run["status"]["phase"], run["status"]["reason"]) == ("Failed", "oom_killed")


def test_pod_deleted(shared: Shared) -> None:
    _op_cluster, k, op = shared
    h.make_run(k, "poddel", "sleep=30")
    run = h.wait_phase(k, "poddel", {"Running"}, logs=op.log)
    k.delete(f"{h.PODS}/{run['status']['podName']}")
    run = finished(k, op, "poddel")
    assert (run["status"]["phase"], run["status"]["reason"]) == ("Failed", "pod_deleted")


def test_job_deleted(shared: Shared) -> None:
    _op_cluster, k, op = shared
    h.make_run(k, "jobdel", "sleep=30")
    h.wait_phase(k, "jobdel", {"Running"}, logs=op.log)
    k.delete(f"{h.JOBS}/jobdel", propagationPolicy="Background")
    run = finished(k, op, "jobdel")
    assert (run["status"]["phase"], run["status"]["reason"]) == ("Failed", "job_deleted")


def test_install_limits_fail_with_bad_input_and_no_job(
    k: SyncKube, start_operator: StartOperator
) -> None:
    h.create_credentials(k)
    op = start_operator(AGENTRUN_OPERATOR_TIMEOUT_MAX_SECONDS="100")
    h.make_run(k, "toolong", "hello", timeoutSeconds=500)
    h.make_run(k, "badfw", "hello", framework="crewai")
    for name, word in (("toolong", "timeoutSeconds"), ("badfw", "framework")):
        run = finished(k, op, name)
        assert (run["status"]["phase"], run["status"]["reason"]) == ("Failed", "bad_input")
        assert word in run["status"]["message"]
        assert h.jobs_of(k, name) == []


def test_transcript_cap_keeps_head_and_tail(k: SyncKube, start_operator: StartOperator) -> None:
    h.create_credentials(k)
    op = start_operator(
        AGENTRUN_OPERATOR_TRANSCRIPT_CAP_BYTES="16384",
        AGENTRUN_OPERATOR_TRANSCRIPT_CHUNK_BYTES="2048",
    )
    h.make_run(k, "capped", "lines=1500")
    run = finished(k, op, "capped")
    assert run["status"]["phase"] == "Succeeded"
    state = run["status"]["transcript"]
    assert state["droppedBytes"] > 0
    chunks = k.items(h.CHUNKS, labelSelector="agentrun.dev/run=capped")
    stored = sum(len(c["spec"]["events"].encode()) for c in chunks if not c["spec"].get("gap"))
    assert stored <= 16384 + 2048 * 2
    assert sum(1 for c in chunks if c["spec"].get("gap")) == 1
    events = h.transcript(k, "capped")
    ids = [e.id for e in events]
    assert ids == sorted(set(ids))
    gap = [e for e in events if "dropped" in str(e.data.get("message", ""))]
    assert len(gap) == 1
    assert events[0].event == "status"  # the head
    assert events[-1].event == "complete"  # the tail

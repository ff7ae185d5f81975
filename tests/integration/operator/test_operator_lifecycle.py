"""Operator behaviour across runs and processes: concurrency limit, retention, restarts without
duplicates, and leader election with two operators."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import httpx
import operator_harness as h
from agentrun_devcluster.system import SyncKube

StartOperator = Callable[..., h.OperatorProcess]
TERMINAL = {"Succeeded", "Failed", "Cancelled"}


def unfinished_jobs(k: SyncKube) -> list[str]:
    out = []
    for job in k.items(h.JOBS):
        conds = {
            c["type"]
            for c in (job.get("status") or {}).get("conditions") or []
            if c.get("status") == "True"
        }
        if not conds & {"Complete", "Failed", "FailureTarget", "SuccessCriteriaMet"}:
            out.append(job["metadata"]["name"])
    return out


def test_concurrency_limit_and_creation_order(k: SyncKube, start_operator: StartOperator) -> None:
    h.create_credentials(k)
    op = start_operator(AGENTRUN_OPERATOR_MAX_CONCURRENT_RUNS="2")
    names = [f"cc-{i}" for i in range(5)]
    for name in names:
        h.make_run(k, name, "sleep=1.5")
    seen_order: list[str] = []
    peak = 0
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        active = unfinished_jobs(k)
        peak = max(peak, len(active))
        for job in k.items(h.JOBS):
            if job["metadata"]["name"] not in seen_order:
                seen_order.append(job["metadata"]["name"])
        phases = [(h.get_run(k, n).get("status") or {}).get("phase") for n in names]
        if all(p in TERMINAL for p in phases):
            break
        time.sleep(0.05)
    assert peak <= 2, f"at most 2 unfinished Jobs at once, saw {peak}"
    assert sorted(seen_order) == names
    # The first two start together; after that, strictly in creation order.
    assert seen_order[2:] == names[2:], seen_order
    for name in names:
        run = h.wait_transcript_complete(k, name)
        assert run["status"]["phase"] == "Succeeded", op.log()[-3000:]
        assert len(h.jobs_of(k, name)) == 1


def test_retention_keeps_newest_and_waits_for_pending_webhook(
    k: SyncKube, start_operator: StartOperator
) -> None:
    h.create_credentials(k)
    start_operator(
        AGENTRUN_OPERATOR_RETENTION_MAX_RUNS="2",
        AGENTRUN_OPERATOR_RETENTION_INTERVAL_SECONDS="0.5",
    )
    for i in range(4):
        h.make_run(k, f"ret-{i}", "hello")
        h.wait_transcript_complete(k, f"ret-{i}")
        time.sleep(1.1)  # distinct completion times
    k.wait_for(
        "retention to delete the two oldest",
        lambda: [r["metadata"]["name"] for r in k.items(h.RUNS)] == ["ret-2", "ret-3"],
        timeout=30,
    )
    # owned objects go with them (garbage collection by ownerReferences)
    k.wait_for(
        "owned transcript chunks gone",
        lambda: not k.items(h.CHUNKS, labelSelector="agentrun.dev/run=ret-0"),
        timeout=30,
    )


def test_restart_mid_run_has_no_duplicates_or_gaps(
    k: SyncKube, start_operator: StartOperator
) -> None:
    h.create_credentials(k)
    op = start_operator(tag="a")
    h.make_run(k, "rs-1", "sleep=4 steps=20 lines=5")
    h.wait_phase(k, "rs-1", {"Running"}, logs=op.log)
    time.sleep(1.5)
    op.stop(signal.SIGKILL)
    time.sleep(0.5)
    op2 = start_operator(tag="b")
    run = h.wait_phase(k, "rs-1", TERMINAL, logs=op2.log)
    run = h.wait_transcript_complete(k, "rs-1")
    assert run["status"]["phase"] == "Succeeded"
    events = h.transcript(k, "rs-1")
    ids = [e.id for e in events]
    assert ids == list(range(1, len(ids) + 1)), "no gap, no duplicate id"
    progress = [e.data["percentage"] for e in events if e.event == "progress"]
    assert progress == sorted(progress), "each progress event once, in order"
    assert len(progress) == len(set(progress))
    assert len(progress) >= 20
    logs = [e.data["message"] for e in events if e.event == "log"]
    assert len(logs) == len(set(logs)), "no log line twice"
    statuses = [e.data["status"] for e in events if e.event == "status"]
    assert statuses == ["queued", "running", "succeeded"]
    assert len(h.jobs_of(k, "rs-1")) == 1


def leader_flag(op: h.OperatorProcess) -> bool:
    r = httpx.get(f"http://127.0.0.1:{op.health_port}/health", timeout=5)
    return bool(r.json().get("leader"))


def test_leader_election_two_operators(k: SyncKube, start_operator: StartOperator) -> None:
    h.create_credentials(k)
    a = start_operator(tag="a")
    k.wait_for("a leads", lambda: leader_flag(a), timeout=30)
    b = start_operator(tag="b")
    time.sleep(2)
    assert not leader_flag(b), "only one replica leads"
    lease = k.get("/apis/coordination.k8s.io/v1/namespaces/default/leases/agentrun-operator")
    assert lease["spec"]["holderIdentity"]
    h.make_run(k, "le-1", "hello")
    assert h.wait_transcript_complete(k, "le-1")["status"]["phase"] == "Succeeded"
    a.stop(signal.SIGKILL)  # no release: b must wait for the lease to expire
    k.wait_for("b takes over", lambda: leader_flag(b), timeout=30)
    new_lease = k.get("/apis/coordination.k8s.io/v1/namespaces/default/leases/agentrun-operator")
    assert new_lease["spec"]["holderIdentity"] != lease["spec"]["holderIdentity"]
    h.make_run(k, "le-2", "hello")
    assert h.wait_transcript_complete(k, "le-2")["status"]["phase"] == "Succeeded"
    assert len(h.jobs_of(k, "le-1")) == 1
    assert len(h.jobs_of(k, "le-2")) == 1

"""Why a run's pod does not start, shown everywhere while it waits (issue: "why isn't it running").

The emulated apiserver refuses the runner pod as Kubernetes does (here: the runner
ServiceAccount is missing) and the fake Job controller records ``FailedCreate`` on the Job; the
operator reads it while the run is queued and shows ``cannot_create_pod`` with a sentence that
names the fix: in the AgentRun's status (so the REASON column), the API's status object, the
stream's ``status`` event, and a Warning Event on the AgentRun (``kubectl describe``). Past the
pending deadline the run fails with that reason.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import operator_harness as h
from agentrun_api.settings import APISettings
from agentrun_devcluster.system import ControlledCluster, SyncKube
from agentrun_devcluster.testing import APIServerThread

SENTENCE = (
    "ServiceAccount default/agentrun-runner not found: install the chart for this namespace "
    "(it creates the runner's ServiceAccount in every watched namespace) or set "
    "runner.serviceAccount.name to an existing ServiceAccount"
)
SERVICE_ACCOUNTS = f"/api/v1/namespaces/{h.NS}/serviceaccounts"
KUBECTL = Path(__file__).parents[3] / ".tools" / "bin" / "kubectl"


def status(k: SyncKube, name: str) -> dict[str, Any]:
    return dict(h.get_run(k, name).get("status") or {})


def run_events(k: SyncKube, name: str) -> list[dict[str, Any]]:
    return k.items(
        f"/api/v1/namespaces/{h.NS}/events",
        fieldSelector=f"involvedObject.kind=AgentRun,involvedObject.name={name}",
    )


def test_missing_service_account_is_shown_while_queued_then_fails_with_it(
    k: SyncKube, start_operator: Any, op_cluster: ControlledCluster
) -> None:
    h.create_credentials(k)
    k.delete(f"{SERVICE_ACCOUNTS}/agentrun-runner")
    resync = 1.0
    op = start_operator(
        AGENTRUN_OPERATOR_RESYNC_SECONDS=str(resync),
        AGENTRUN_OPERATOR_PENDING_TIMEOUT_SECONDS="12",
    )
    api = APIServerThread(
        APISettings(
            auth_enabled=False,
            namespace=h.NS,
            kubeconfig=str(op_cluster.kubeconfig),
            metrics_port=0,
        )
    ).start()
    try:
        h.make_run(k, "nosa")
        first = k.wait_for(
            "the Job's first FailedCreate",
            lambda: [
                e
                for e in k.items(
                    f"/api/v1/namespaces/{h.NS}/events",
                    fieldSelector="involvedObject.kind=Job,involvedObject.name=nosa",
                )
                if e["reason"] == "FailedCreate"
            ],
            timeout=20,
        )
        seen_at = time.monotonic()
        assert "error looking up service account default/agentrun-runner" in first[0]["message"]
        k.wait_for(
            "queued with cannot_create_pod",
            lambda: status(k, "nosa").get("reason") == "cannot_create_pod",
            timeout=10,
        )
        # within one resync of the Event (plus the time for a status write)
        assert time.monotonic() - seen_at < resync + 2.0, op.log()[-4000:]
        now = status(k, "nosa")
        assert now["phase"] == "Queued"
        assert now["message"] == SENTENCE

        # the API's status object
        body = httpx.get(f"{api.base_url}/api/v1/runs/nosa", timeout=10).json()
        assert body["status"] == "queued"
        assert body["reason"] == "cannot_create_pod"
        assert body["error"] == SENTENCE

        # a Warning Event on the AgentRun with the same sentence, shown by kubectl describe
        events = k.wait_for(
            "the AgentRun's Event",
            lambda: [e for e in run_events(k, "nosa") if e["message"] == SENTENCE],
        )
        assert events[0]["type"] == "Warning"
        described = subprocess.run(
            [str(KUBECTL), "--kubeconfig", str(op_cluster.kubeconfig), "describe", "ar", "nosa"],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "COLUMNS": "400"},
            check=True,
        ).stdout
        assert "ServiceAccount default/agentrun-runner not found" in described
        assert "cannot_create_pod" in described
        wide = subprocess.run(
            [str(KUBECTL), "--kubeconfig", str(op_cluster.kubeconfig), "get", "ar", "-o", "wide"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        header, row = wide.splitlines()[:2]
        assert row.split()[header.split().index("REASON")] == "cannot_create_pod"

        # past the pending deadline: failed with the reason it waited for, the Job gone
        run = h.wait_phase(k, "nosa", {"Failed"}, timeout=30, logs=op.log)
        assert run["status"]["reason"] == "cannot_create_pod"
        assert run["status"]["message"] == f"the runner pod did not start within 12 s: {SENTENCE}"
        h.wait_transcript_complete(k, "nosa")
        events_of_stream = h.transcript(k, "nosa")
        statuses = [
            (e.data["status"], e.data["reason"]) for e in events_of_stream if e.event == "status"
        ]
        assert ("queued", "cannot_create_pod") in statuses
        assert events_of_stream[-1].event == "complete"
        assert events_of_stream[-1].data["reason"] == "cannot_create_pod"
        k.wait_for("job deleted (a late pod must never run)", lambda: not h.jobs_of(k, "nosa"))
    finally:
        api.stop()


def test_the_run_starts_once_the_service_account_exists(k: SyncKube, start_operator: Any) -> None:
    h.create_credentials(k)
    k.delete(f"{SERVICE_ACCOUNTS}/agentrun-runner")
    op = start_operator(AGENTRUN_OPERATOR_RESYNC_SECONDS="1")
    h.make_run(k, "latesa")
    k.wait_for(
        "queued with cannot_create_pod",
        lambda: status(k, "latesa").get("reason") == "cannot_create_pod",
        timeout=20,
    )
    k.create(
        SERVICE_ACCOUNTS,
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "agentrun-runner"}},
    )
    run = h.wait_phase(k, "latesa", {"Succeeded", "Failed"}, timeout=60, logs=op.log)
    assert run["status"]["phase"] == "Succeeded", run["status"]
    assert run["status"].get("reason") is None


def test_events_are_read_only_while_nothing_else_explains_the_wait(
    k: SyncKube, start_operator: Any, op_cluster: ControlledCluster, monkeypatch: Any
) -> None:
    """Events are read only while nothing else explains the wait: once a run runs, and while
    a pod is held unschedulable (its status says why), no more are read; a refused pod's are
    read once per resync, no more. (A pod that takes longer than a resync to start may have
    its Events read while it is pending: at 0.5 s here, that is normal.)"""
    reads = count_event_lists(op_cluster, monkeypatch)
    h.create_credentials(k)
    op_cluster.faults.add({"agentrun.dev/run": "held"}, "unschedulable")
    op = start_operator(AGENTRUN_OPERATOR_RESYNC_SECONDS="0.5")
    h.make_run(k, "quick", "hello")
    h.wait_phase(k, "quick", {"Succeeded"}, timeout=60, logs=op.log)
    h.make_run(k, "held", "hello")
    k.wait_for(
        "queued/unschedulable",
        lambda: status(k, "held").get("reason") == "unschedulable",
        timeout=20,
    )
    explained = len(reads)
    time.sleep(2.0)  # four resyncs: the running-then-finished run and the held one read none
    assert reads[explained:] == []

    k.delete(f"{SERVICE_ACCOUNTS}/agentrun-runner")
    h.make_run(k, "refused", "hello")
    k.wait_for(
        "queued with cannot_create_pod",
        lambda: status(k, "refused").get("reason") == "cannot_create_pod",
        timeout=20,
    )
    before = len(reads)
    time.sleep(3.0)  # six resyncs of 0.5 s
    assert 4 <= len(reads) - before <= 7, reads


def count_event_lists(cluster: ControlledCluster, monkeypatch: Any) -> list[str]:
    """Record every Events list the apiserver answers (the fake Job controller and kubelet
    never list Events, so these are the operator's reads)."""
    state = cluster.server.state
    original = state.list_objects
    seen: list[str] = []

    def counting(rt: Any, *args: Any, **kwargs: Any) -> Any:
        if rt.plural == "events":
            seen.append(str(args[0] if args else kwargs.get("namespace")))
        return original(rt, *args, **kwargs)

    monkeypatch.setattr(state, "list_objects", counting)
    return seen

"""The emulated apiserver refuses a Job's pod as Kubernetes does (missing ServiceAccount,
ResourceQuota exceeded, Pod Security), and the fake Job controller records the same
``FailedCreate`` Event as kube-controller-manager.

Each case creates the operator's real runner Job and compares the Event with the golden of the
same case (tests/unit/operator/golden/failed_create_*.yaml, written in real Kubernetes'
wording), then feeds it to the operator's pure mapping: the run reads ``cannot_create_pod`` with
the golden's sentence.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from agentrun_contract.resource import AgentRun
from agentrun_devcluster.system import ControlledCluster, SyncKube
from agentrun_operator.job_manifest import build_job_manifest
from agentrun_operator.run_status import map_run_status, parse_time
from agentrun_operator.settings import OperatorSettings

NS = "ft"
JOBS = f"/apis/batch/v1/namespaces/{NS}/jobs"
EVENTS = f"/api/v1/namespaces/{NS}/events"
GOLDEN = Path(__file__).parents[2] / "unit" / "operator" / "golden"
GENERATED = re.compile(r'pods "run-abc-[a-z0-9]{5}"')


def golden(case: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((GOLDEN / f"failed_create_{case}.yaml").read_text())
    return data


def runner_job() -> dict[str, Any]:
    """The operator's Job for run-abc in ft (no owner: nothing here creates the AgentRun)."""
    run = AgentRun.model_validate(
        {
            "metadata": {"name": "run-abc", "namespace": NS, "uid": "u-1"},
            "spec": {"prompt": "hello", "timeoutSeconds": 3600},
        }
    )
    job = build_job_manifest(run, OperatorSettings(), "nonce")
    job["metadata"].pop("ownerReferences", None)
    return job


@pytest.fixture
def cluster() -> Iterator[tuple[ControlledCluster, SyncKube]]:
    with ControlledCluster() as c:
        kube = SyncKube(c.base_url)
        try:
            kube.create(
                "/api/v1/namespaces",
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}},
            )
            yield c, kube
        finally:
            kube.close()


def failed_creates(kube: SyncKube, min_count: int = 1) -> list[dict[str, Any]]:
    def probe() -> list[dict[str, Any]]:
        found = kube.items(
            EVENTS, fieldSelector="involvedObject.kind=Job,involvedObject.name=run-abc"
        )
        found = [e for e in found if e["reason"] == "FailedCreate"]
        return found if sum(int(e.get("count") or 1) for e in found) >= min_count else []

    result: list[dict[str, Any]] = kube.wait_for("FailedCreate events", probe, timeout=20)
    return result


def assert_like_golden(event: dict[str, Any], case: dict[str, Any], job: dict[str, Any]) -> None:
    """Same Event as the golden's (the generated pod name aside), and the same decision."""
    want = case["events"][0]
    assert GENERATED.sub('pods "run-abc-?????"', event["message"]) == GENERATED.sub(
        'pods "run-abc-?????"', want["message"]
    )
    for field in ("reason", "type"):
        assert event[field] == want[field]
    assert event["source"] == want["source"]
    assert event["involvedObject"]["kind"] == "Job"
    assert event["involvedObject"]["uid"] == job["metadata"]["uid"]
    assert_decision(event, case["expected"], job)


def assert_decision(event: dict[str, Any], expected: dict[str, Any], job: dict[str, Any]) -> None:
    """The operator's pure mapping reads the Event as the golden expects."""
    run = AgentRun.model_validate(
        {
            "metadata": {"name": "run-abc", "namespace": NS, "uid": "u-1"},
            "spec": {"prompt": "hello", "timeoutSeconds": 3600},
            "status": {"phase": "Queued", "jobName": "run-abc"},
        }
    )
    decision = map_run_status(
        run,
        job,
        [],
        parse_time(event["lastTimestamp"]),  # type: ignore[arg-type]
        pending_timeout_seconds=600,
        events=[event],
    )
    assert decision.reason is not None
    assert decision.reason.value == expected["reason"]
    if "message" in expected:
        assert decision.message == expected["message"]
    else:
        assert expected["messageContains"] in (decision.message or "")


def test_missing_service_account(cluster: tuple[ControlledCluster, SyncKube]) -> None:
    _, kube = cluster
    # the dev cluster gives every namespace the runner's ServiceAccount, as the chart does
    assert kube.get_or_none(f"/api/v1/namespaces/{NS}/serviceaccounts/default") is not None
    kube.delete(f"/api/v1/namespaces/{NS}/serviceaccounts/agentrun-runner")
    job = kube.create(JOBS, runner_job())
    events = failed_creates(kube, min_count=2)
    assert len(events) == 1, "a repeated refusal is counted on one Event, not recorded again"
    assert events[0]["count"] >= 2
    assert_like_golden(events[0], golden("service_account"), job)
    assert kube.get(f"{JOBS}/run-abc")["status"].get("active", 0) == 0
    assert kube.items(f"/api/v1/namespaces/{NS}/pods") == []

    # The ServiceAccount appears: the Job controller's next retry creates the pod.
    kube.create(
        f"/api/v1/namespaces/{NS}/serviceaccounts",
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "agentrun-runner"}},
    )
    kube.wait_for(
        "the pod after the ServiceAccount appeared",
        lambda: kube.items(f"/api/v1/namespaces/{NS}/pods"),
        timeout=20,
    )


def test_resource_quota_exceeded(cluster: tuple[ControlledCluster, SyncKube]) -> None:
    _, kube = cluster
    kube.create(
        f"/api/v1/namespaces/{NS}/resourcequotas",
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "compute"},
            "spec": {"hard": {"limits.memory": "512Mi", "pods": "10"}},
        },
    )
    job = kube.create(JOBS, runner_job())
    assert_like_golden(failed_creates(kube)[0], golden("quota"), job)


def test_resource_quota_counts_running_pods(cluster: tuple[ControlledCluster, SyncKube]) -> None:
    """Room for one runner pod (limits.memory 1Gi each): the second Job is refused, with the
    first pod's usage in ``used``."""
    _, kube = cluster
    kube.create(
        f"/api/v1/namespaces/{NS}/resourcequotas",
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "compute"},
            "spec": {"hard": {"limits.memory": "1536Mi"}},
        },
    )
    first = runner_job()
    first["metadata"]["name"] = "run-one"
    first["spec"]["template"]["spec"]["containers"][0]["command"] = [
        "python",
        "-c",
        "import time; time.sleep(30)",
    ]
    kube.create(JOBS, first)
    kube.wait_for("the first pod", lambda: kube.items(f"/api/v1/namespaces/{NS}/pods"), timeout=20)
    kube.create(JOBS, runner_job())
    message = failed_creates(kube)[0]["message"]
    assert GENERATED.sub("X", message) == (
        "Error creating: X is forbidden: exceeded quota: compute, requested: "
        "limits.memory=1Gi, used: limits.memory=1Gi, limited: limits.memory=1536Mi"
    )


def test_pod_security_rejection(cluster: tuple[ControlledCluster, SyncKube]) -> None:
    _, kube = cluster
    kube.merge_patch(
        f"/api/v1/namespaces/{NS}",
        {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}},
    )
    # The runner pod alone meets "restricted"; a sidecar without a securityContext does not.
    manifest = runner_job()
    manifest["spec"]["template"]["spec"]["containers"].append(
        {"name": "log-shipper", "image": "busybox:1.36"}
    )
    job = kube.create(JOBS, manifest)
    assert_like_golden(failed_creates(kube)[0], golden("pod_security"), job)


def test_the_runner_pod_meets_restricted(cluster: tuple[ControlledCluster, SyncKube]) -> None:
    """The operator's runner pod is admitted under Pod Security "restricted" (the README tells
    installers to enforce it)."""
    _, kube = cluster
    kube.merge_patch(
        f"/api/v1/namespaces/{NS}",
        {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}},
    )
    kube.create(JOBS, runner_job())
    kube.wait_for("the runner pod", lambda: kube.items(f"/api/v1/namespaces/{NS}/pods"), timeout=20)


def test_quota_on_a_resource_the_runner_leaves_unset(
    cluster: tuple[ControlledCluster, SyncKube],
) -> None:
    """The runner sets no CPU limit: a quota on limits.cpu refuses it ("must specify"), and the
    operator's sentence says to add it to runner.resources."""
    _, kube = cluster
    kube.create(
        f"/api/v1/namespaces/{NS}/resourcequotas",
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "compute"},
            "spec": {"hard": {"limits.cpu": "4", "requests.memory": "8Gi"}},
        },
    )
    job = kube.create(JOBS, runner_job())
    event = failed_creates(kube)[0]
    assert GENERATED.sub("X", event["message"]) == (
        "Error creating: X is forbidden: failed quota: compute: must specify limits.cpu for: runner"
    )
    expected = {
        "reason": "cannot_create_pod",
        "message": "ResourceQuota ft/compute requires every container to set limits.cpu for: "
        "runner: add it to runner.resources",
    }
    assert_decision(event, expected, job)


def test_baseline_admits_what_restricted_refuses(
    cluster: tuple[ControlledCluster, SyncKube],
) -> None:
    """Pod Security "baseline" does not ask for allowPrivilegeEscalation or dropped
    capabilities, but refuses a privileged container, in its own words."""
    _, kube = cluster
    kube.merge_patch(
        f"/api/v1/namespaces/{NS}",
        {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "baseline"}}},
    )
    manifest = runner_job()
    manifest["spec"]["template"]["spec"]["containers"].append(
        {"name": "log-shipper", "image": "busybox:1.36", "securityContext": {"privileged": True}}
    )
    kube.create(JOBS, manifest)
    message = failed_creates(kube)[0]["message"]
    assert GENERATED.sub("X", message) == (
        'Error creating: X is forbidden: violates PodSecurity "baseline:latest": privileged '
        '(container "log-shipper" must not set securityContext.privileged=true)'
    )

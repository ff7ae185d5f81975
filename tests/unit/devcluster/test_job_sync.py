"""Pure Job controller logic: pod from template, conditions, podFailurePolicy, backoff, TTL."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

from agentrun_devcluster.jobcontroller import (
    JobControllerSettings,
    JobTracking,
    match_pod_failure_policy,
    pod_from_job,
    replacement_policy,
    sync_job,
)

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
SETTINGS = JobControllerSettings(backoff_seconds=10)


def make_job(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "j", "namespace": "ns", "uid": "uid-1", "labels": {"a": "b"}},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": {"run": "r1"}, "annotations": {"x": "y"}},
                "spec": {"containers": [{"name": "runner", "image": "img"}]},
            },
            **spec,
        },
    }


def make_pod(
    name: str,
    phase: str = "Running",
    *,
    exit_code: int | None = None,
    deleting: bool = False,
    conditions: list[dict[str, Any]] | None = None,
    container: str = "runner",
) -> dict[str, Any]:
    state: dict[str, Any] = {"running": {}}
    if exit_code is not None:
        state = {"terminated": {"exitCode": exit_code}}
    meta: dict[str, Any] = {"name": name, "namespace": "ns", "uid": f"uid-{name}"}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T12:00:00Z"
    return {
        "metadata": meta,
        "status": {
            "phase": phase,
            "conditions": conditions or [],
            "containerStatuses": [{"name": container, "state": state}],
        },
    }


def types(status: dict[str, Any] | None) -> list[str]:
    return [c["type"] for c in (status or {}).get("conditions") or []]


def apply(job: dict[str, Any], status: dict[str, Any] | None) -> dict[str, Any]:
    out = copy.deepcopy(job)
    if status is not None:
        out["status"] = status
    return out


def test_pod_from_template_labels_owner_and_generate_name() -> None:
    pod = pod_from_job(make_job())
    meta = pod["metadata"]
    assert meta["generateName"] == "j-"
    assert meta["namespace"] == "ns"
    assert meta["labels"] == {
        "run": "r1",
        "batch.kubernetes.io/controller-uid": "uid-1",
        "controller-uid": "uid-1",
        "batch.kubernetes.io/job-name": "j",
        "job-name": "j",
    }
    assert meta["annotations"] == {"x": "y"}
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": "j",
            "uid": "uid-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert pod["spec"]["containers"][0]["image"] == "img"
    assert pod["spec"]["restartPolicy"] == "Never"


def test_first_sync_creates_one_pod_and_sets_start_time() -> None:
    tracking = JobTracking()
    result = sync_job(make_job(), [], tracking, T0, SETTINGS)
    assert result.create_pod is not None
    assert result.status is not None
    assert result.status["startTime"] == "2026-01-01T12:00:00Z"
    assert result.status["active"] == 1
    assert types(result.status) == []


def test_running_pod_means_no_second_pod() -> None:
    job = apply(make_job(), {"startTime": "2026-01-01T12:00:00Z", "active": 1})
    result = sync_job(job, [make_pod("p1")], JobTracking(), T0, SETTINGS)
    assert result.create_pod is None
    assert result.delete_pods == []


def test_success_sets_success_criteria_met_then_complete_and_completion_time() -> None:
    job = apply(make_job(), {"startTime": "2026-01-01T12:00:00Z", "active": 1})
    result = sync_job(job, [make_pod("p1", "Succeeded", exit_code=0)], JobTracking(), T0, SETTINGS)
    assert result.status is not None
    assert types(result.status) == ["SuccessCriteriaMet", "Complete"]
    assert {c["reason"] for c in result.status["conditions"]} == {"CompletionsReached"}
    assert result.status["succeeded"] == 1
    assert result.status["completionTime"] == "2026-01-01T12:00:00Z"
    assert result.status["active"] == 0


def test_success_waits_for_terminating_pods_before_complete() -> None:
    job = apply(make_job(completions=1), {"startTime": "2026-01-01T12:00:00Z"})
    pods = [make_pod("p1", "Succeeded", exit_code=0), make_pod("p2", "Running", deleting=True)]
    result = sync_job(job, pods, JobTracking(), T0, SETTINGS)
    assert types(result.status) == ["SuccessCriteriaMet"]
    assert result.status is not None
    assert result.status["terminating"] == 1
    assert "completionTime" not in result.status


def test_exit_failure_with_backoff_zero() -> None:
    job = apply(make_job(), {"startTime": "2026-01-01T12:00:00Z", "active": 1})
    result = sync_job(job, [make_pod("p1", "Failed", exit_code=3)], JobTracking(), T0, SETTINGS)
    assert types(result.status) == ["FailureTarget", "Failed"]
    assert result.status is not None
    assert [c["reason"] for c in result.status["conditions"]] == ["BackoffLimitExceeded"] * 2
    assert result.status["failed"] == 1
    assert "completionTime" not in result.status
    assert result.create_pod is None


def test_backoff_replacement_waits_then_creates() -> None:
    job = apply(make_job(backoffLimit=2), {"startTime": "2026-01-01T12:00:00Z", "active": 1})
    tracking = JobTracking()
    failed = make_pod("p1", "Failed", exit_code=1)
    first = sync_job(job, [failed], tracking, T0, SETTINGS)
    assert first.create_pod is None
    assert first.requeue_after == 10
    assert types(first.status) == []
    later = sync_job(
        apply(job, first.status), [failed], tracking, T0 + timedelta(seconds=11), SETTINGS
    )
    assert later.create_pod is not None
    assert later.status is not None
    assert later.status["failed"] == 1


def test_deadline_failure_target_deletes_active_pod_and_failed_waits() -> None:
    job = apply(
        make_job(activeDeadlineSeconds=5),
        {"startTime": "2026-01-01T12:00:00Z", "active": 1},
    )
    tracking = JobTracking()
    at = T0 + timedelta(seconds=6)
    first = sync_job(job, [make_pod("p1")], tracking, at, SETTINGS)
    assert types(first.status) == ["FailureTarget"]
    assert first.status is not None
    assert first.status["conditions"][0]["reason"] == "DeadlineExceeded"
    assert first.delete_pods == ["p1"]
    job = apply(job, first.status)
    # terminating: still no Failed (with podFailurePolicy absent, the deleting pod counts failed)
    second = sync_job(job, [make_pod("p1", deleting=True)], tracking, at, SETTINGS)
    assert "Failed" not in types(second.status or job["status"])
    # gone: Failed with the same reason, FailureTarget first
    third = sync_job(job, [], tracking, at + timedelta(seconds=1), SETTINGS)
    assert types(third.status) == ["FailureTarget", "Failed"]
    assert third.status is not None
    assert third.status["conditions"][1]["reason"] == "DeadlineExceeded"


def test_deadline_requeue_before_it_expires() -> None:
    job = apply(make_job(activeDeadlineSeconds=30), {"startTime": "2026-01-01T12:00:00Z"})
    result = sync_job(job, [make_pod("p1")], JobTracking(), T0 + timedelta(seconds=10), SETTINGS)
    assert result.requeue_after is not None
    assert 19 < result.requeue_after <= 20.1


def test_vanished_running_pod_counts_failed() -> None:
    job = apply(make_job(), {"startTime": "2026-01-01T12:00:00Z", "active": 1})
    tracking = JobTracking()
    sync_job(job, [make_pod("p1")], tracking, T0, SETTINGS)
    result = sync_job(job, [], tracking, T0, SETTINGS)
    assert types(result.status) == ["FailureTarget", "Failed"]
    assert result.status is not None
    assert result.status["conditions"][0]["reason"] == "BackoffLimitExceeded"


def test_replacement_policy_defaults_v136() -> None:
    assert replacement_policy(make_job()) == "TerminatingOrFailed"
    assert replacement_policy(make_job(podFailurePolicy={"rules": []})) == "Failed"
    assert replacement_policy(make_job(podReplacementPolicy="Failed")) == "Failed"


def test_deleting_pod_counts_failed_only_in_failed_phase_with_pod_failure_policy() -> None:
    policy = {"rules": [{"action": "Count", "onExitCodes": {"operator": "In", "values": [1]}}]}
    job = apply(make_job(podFailurePolicy=policy), {"startTime": "2026-01-01T12:00:00Z"})
    tracking = JobTracking()
    result = sync_job(job, [make_pod("p1", deleting=True)], tracking, T0, SETTINGS)
    assert "FailureTarget" not in types(result.status)
    # without a podFailurePolicy (TerminatingOrFailed): counted failed at once
    job2 = apply(make_job(), {"startTime": "2026-01-01T12:00:00Z"})
    result2 = sync_job(job2, [make_pod("p1", deleting=True)], JobTracking(), T0, SETTINGS)
    assert "FailureTarget" in types(result2.status)


def test_pod_failure_policy_rules_in_order() -> None:
    policy = {
        "rules": [
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [11, 12]}},
            {"action": "Count", "onExitCodes": {"operator": "NotIn", "values": [11, 12]}},
        ]
    }
    disrupted = make_pod(
        "p", "Failed", exit_code=12, conditions=[{"type": "DisruptionTarget", "status": "True"}]
    )
    m = match_pod_failure_policy(policy, disrupted)
    assert m is not None
    assert (m.action, m.index) == ("Ignore", 0)
    m = match_pod_failure_policy(policy, make_pod("p", "Failed", exit_code=12))
    assert m is not None
    assert (m.action, m.index) == ("FailJob", 1)
    assert m.message == (
        "Container runner for pod ns/p failed with exit code 12 matching FailJob rule at index 1"
    )
    m = match_pod_failure_policy(policy, make_pod("p", "Failed", exit_code=3))
    assert m is not None
    assert (m.action, m.index) == ("Count", 2)
    # exit 0 never matches NotIn; running pods are never matched
    assert match_pod_failure_policy(policy, make_pod("p", "Failed", exit_code=0)) is None
    assert match_pod_failure_policy(policy, make_pod("p", "Running")) is None


def test_pod_failure_policy_container_name_and_condition_status() -> None:
    policy = {
        "rules": [
            {
                "action": "FailJob",
                "onExitCodes": {"containerName": "other", "operator": "In", "values": [1]},
            }
        ]
    }
    assert match_pod_failure_policy(policy, make_pod("p", "Failed", exit_code=1)) is None
    cond_policy = {
        "rules": [
            {
                "action": "FailJob",
                "onPodConditions": [{"type": "DisruptionTarget", "status": "False"}],
            }
        ]
    }
    true_pod = make_pod(
        "p", "Failed", exit_code=1, conditions=[{"type": "DisruptionTarget", "status": "True"}]
    )
    assert match_pod_failure_policy(cond_policy, true_pod) is None
    m = match_pod_failure_policy(
        {"rules": [{"action": "FailJob", "onPodConditions": [{"type": "DisruptionTarget"}]}]},
        true_pod,
    )
    assert m is not None
    assert m.message == "Pod ns/p has condition DisruptionTarget matching FailJob rule at index 0"


def test_ignore_action_does_not_count_toward_backoff() -> None:
    policy = {"rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]}
    job = apply(make_job(podFailurePolicy=policy), {"startTime": "2026-01-01T12:00:00Z"})
    pod = make_pod(
        "p1", "Failed", exit_code=143, conditions=[{"type": "DisruptionTarget", "status": "True"}]
    )
    result = sync_job(job, [pod], JobTracking(), T0, JobControllerSettings(backoff_seconds=0))
    assert "FailureTarget" not in types(result.status)
    assert result.create_pod is not None
    assert result.status is not None
    assert result.status["failed"] == 0


def test_fail_job_beats_backoff_limit() -> None:
    policy = {"rules": [{"action": "FailJob", "onExitCodes": {"operator": "In", "values": [2]}}]}
    job = apply(
        make_job(podFailurePolicy=policy, backoffLimit=5), {"startTime": "2026-01-01T12:00:00Z"}
    )
    result = sync_job(job, [make_pod("p1", "Failed", exit_code=2)], JobTracking(), T0, SETTINGS)
    assert result.status is not None
    assert [c["reason"] for c in result.status["conditions"]] == ["PodFailurePolicy"] * 2


def test_ttl_after_finished() -> None:
    job = apply(
        make_job(ttlSecondsAfterFinished=60),
        {
            "conditions": [
                {"type": "Complete", "status": "True", "lastTransitionTime": "2026-01-01T12:00:00Z"}
            ]
        },
    )
    early = sync_job(job, [], JobTracking(), T0 + timedelta(seconds=30), SETTINGS)
    assert not early.delete_job
    assert early.requeue_after == 30
    late = sync_job(job, [], JobTracking(), T0 + timedelta(seconds=61), SETTINGS)
    assert late.delete_job
    no_ttl = sync_job(
        apply(make_job(), job["status"]), [], JobTracking(), T0 + timedelta(days=9), SETTINGS
    )
    assert not no_ttl.delete_job


def test_finished_job_is_never_changed() -> None:
    job = apply(
        make_job(),
        {
            "conditions": [
                {"type": "FailureTarget", "status": "True"},
                {"type": "Failed", "status": "True"},
            ]
        },
    )
    result = sync_job(job, [make_pod("p1", "Succeeded", exit_code=0)], JobTracking(), T0, SETTINGS)
    assert result.status is None
    assert result.create_pod is None

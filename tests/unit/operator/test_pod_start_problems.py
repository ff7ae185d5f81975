"""explain_failed_create / explain_pod_event on the messages the goldens do not carry."""

from __future__ import annotations

import pytest
from agentrun_contract.resource import Reason
from agentrun_operator.pod_start_problems import (
    StartContext,
    explain_failed_create,
    explain_pod_event,
    start_problem,
)

CTX = StartContext("ft")


@pytest.mark.parametrize(
    ("message", "contains"),
    [
        (
            'Error creating: pods "run-abc-x" is forbidden: failed quota: compute: must specify '
            "limits.cpu for: runner",
            "ResourceQuota ft/compute requires every container to set limits.cpu for: runner: "
            "add it to runner.resources",
        ),
        (
            'Error creating: pods "run-abc-x" is forbidden: maximum memory usage per Container '
            "is 512Mi, but limit is 1Gi",
            "a LimitRange of namespace ft refuses the runner pod: maximum memory usage per "
            "Container is 512Mi, but limit is 1Gi; change runner.resources",
        ),
        (
            'Error creating: pods "run-abc-x" is forbidden: ValidatingAdmissionPolicy '
            "'no-latest' with binding 'no-latest-b' denied request: image tag latest",
            "ValidatingAdmissionPolicy no-latest refuses the runner pod: image tag latest",
        ),
        (
            "Error creating: Internal error occurred: etcdserver: request timed out",
            "Kubernetes cannot create the runner pod: Internal error occurred: etcdserver",
        ),
    ],
)
def test_failed_create_messages_name_the_fix(message: str, contains: str) -> None:
    problem = explain_failed_create(message, CTX)
    assert problem.reason == Reason.CANNOT_CREATE_POD
    assert contains in problem.message


def test_pod_events_of_the_credentials_secret_fail_as_missing_credentials() -> None:
    mount = explain_pod_event(
        "FailedMount",
        'MountVolume.SetUp failed for volume "creds" : secret "agentrun-llm-credentials" not found',
        CTX,
    )
    config = explain_pod_event("Failed", 'Error: secret "agentrun-llm-credentials" not found', CTX)
    assert mount is not None
    assert mount.reason == Reason.MISSING_CREDENTIALS
    assert config is not None
    assert config.reason == Reason.MISSING_CREDENTIALS
    assert "create Secret agentrun-llm-credentials" in config.message


def test_normal_pod_events_and_other_kinds_say_nothing() -> None:
    pod = {"metadata": {"name": "p"}, "status": {"phase": "Pending"}}
    pulled = {"type": "Normal", "reason": "Pulled", "message": "Successfully pulled image"}
    job_failed_create = {
        "type": "Warning",
        "reason": "FailedCreate",
        "message": "Error creating: x",
        "involvedObject": {"kind": "Job"},
    }
    assert start_problem([pulled, job_failed_create], pod, CTX) is None
    assert explain_pod_event("Unhealthy", "Readiness probe failed", CTX) is None

"""The Job's name is in the run's status as soon as the Job exists: a task that restarts after
the Job was deleted then sees job_deleted, never creates a second Job (the agent would run
twice)."""

from __future__ import annotations

from typing import Any

from agentrun_contract import names
from agentrun_contract.resource import AgentRun
from agentrun_kube.errors import Unavailable
from agentrun_operator.reconciler import RunContext, RunReconciler
from agentrun_operator.settings import OperatorSettings

RUN = "run-abc"


class FakeKube:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def size_log_pool(self, _: int) -> None:
        return None

    async def list_jobs(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return []

    async def create_secret(self, namespace: str, body: dict[str, Any]) -> None:
        self.calls.append(("create_secret", body["metadata"]["name"]))

    async def create_job(self, namespace: str, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        self.calls.append(("create_job", body["metadata"]["name"]))
        return body, True

    async def patch_run_status(
        self, namespace: str, name: str, status: dict[str, Any], resource_version: str | None
    ) -> dict[str, Any]:
        self.calls.append(("patch_status", dict(status)))
        return {**body(), "status": status}


def body() -> dict[str, Any]:
    return {
        "apiVersion": "agentrun.dev/v1alpha1",
        "kind": "AgentRun",
        "metadata": {
            "name": RUN,
            "namespace": "default",
            "uid": "uid-1",
            "resourceVersion": "1",
            "creationTimestamp": "2026-01-01T00:00:00Z",
        },
        "spec": {"prompt": "p"},
    }


async def test_job_name_is_written_right_after_the_job_is_created() -> None:
    kube = FakeKube()
    ctx = RunContext(OperatorSettings(), kube)  # type: ignore[arg-type]
    key = ("default", RUN)
    ctx.remember(key, body())
    rec = RunReconciler(ctx, key)
    job = await rec.admit_and_create(AgentRun.model_validate(body()))
    assert job is not None
    kinds = [call for call, _ in kube.calls]
    assert kinds == ["create_secret", "create_job", "patch_status"]
    assert kube.calls[-1][1] == {"jobName": names.job_name(RUN)}
    # Known from then on: the next phase write does not need to repeat it.
    assert rec.written["jobName"] == names.job_name(RUN)


class FlakyStatusKube(FakeKube):
    """The status patch after the create fails twice with a dropped connection."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 2

    async def patch_run_status(
        self, namespace: str, name: str, status: dict[str, Any], resource_version: str | None
    ) -> dict[str, Any]:
        if self.failures:
            self.failures -= 1
            self.calls.append(("patch_status:dropped", dict(status)))
            raise Unavailable(0, "ServerDisconnectedError", "no answer from the Kubernetes API")
        return await super().patch_run_status(namespace, name, status, resource_version)


async def test_job_name_is_retried_in_place_never_by_a_new_pass_that_creates_again() -> None:
    kube = FlakyStatusKube()
    settings = OperatorSettings(log_reconnect_seconds=0.01, log_reconnect_max_seconds=0.02)
    ctx = RunContext(settings, kube)  # type: ignore[arg-type]
    key = ("default", RUN)
    ctx.remember(key, body())
    rec = RunReconciler(ctx, key)
    await rec.admit_and_create(AgentRun.model_validate(body()))
    kinds = [call for call, _ in kube.calls]
    assert kinds == [
        "create_secret",
        "create_job",
        "patch_status:dropped",
        "patch_status:dropped",
        "patch_status",
    ]

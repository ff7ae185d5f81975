"""The permission list is complete: what the API and the operator really ask the apiserver for.

The dev stack runs with the emulated apiserver's request log (``apiserver.audit.RequestLog``);
the operator and the API authenticate with kubeconfigs of their own, so every request (and every
owner-reference admission check) is attributed to one process, as a real apiserver would. The
test drives everything the processes do (submit, idempotent replay, queueing, the stream, status,
list, result, cancel, delete, webhooks with a failed attempt, a pod the apiserver refuses,
operator restarts mid-run, retention, the leader Lease), then holds the log against
:mod:`agentrun_contract.permissions`:

- nothing a process asked for is missing from its list (same resource, verb and scope: a
  namespaced request must be in the run namespace, a cluster-scoped one must be a cluster-scoped
  permission, or, with ``clusterWide``, one of the operator's run permissions);
- in the namespace-scoped install, nothing in the list goes unused, but for the entries this
  scenario cannot show (named below, with the reason).

Both install modes run: namespace-scoped (the dev default) and cluster-wide.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml
from agentrun_contract.permissions import Process, Rule, Scope, rules
from agentrun_devcluster.apiserver.audit import RequestAttributes, RequestLog
from agentrun_devcluster.system import DevSystem, SyncKube
from agentrun_webhooks.receiver import Answer, WebhookReceiver

pytestmark = pytest.mark.slow

NAMESPACE = "default"
RUNS = f"/apis/agentrun.dev/v1alpha1/namespaces/{NAMESPACE}/agentruns"

NOT_SHOWN_BY_THIS_SCENARIO: dict[Process, set[tuple[str, str, str, Scope]]] = {
    Process.OPERATOR: {
        # Only when a run's result already exists: the operator restarted between writing the
        # result and recording the run's end.
        ("agentrun.dev", "agentrunresults", "patch", Scope.RUN_NAMESPACES),
    },
}
"""Listed permissions this scenario does not make the process use, each with its reason."""


class AttributedSystem(DevSystem):
    """DevSystem whose operator and API use kubeconfigs with tokens of their own (named after
    the process), so the apiserver's request log tells their requests apart."""

    def _seed_cluster(self) -> None:
        super()._seed_cluster()
        shared = yaml.safe_load(self.kubeconfig.read_text())
        for process, overrides, prefix in (
            (Process.OPERATOR, self.operator_overrides, "AGENTRUN_OPERATOR_"),
            (Process.API, self.api_overrides, "AGENTRUN_API_"),
        ):
            config = dict(
                shared, users=[{"name": "agentrun-dev", "user": {"token": process.value}}]
            )
            path = self.workdir / f"kubeconfig-{process}"
            path.write_text(yaml.safe_dump(config))
            overrides.update({"KUBECONFIG": str(path), f"{prefix}KUBECONFIG": str(path)})


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    instance = WebhookReceiver().start()
    try:
        yield instance
    finally:
        instance.stop()


def scope_of(entry: RequestAttributes) -> Scope | None:
    if entry.namespace is None:
        return Scope.CLUSTER
    return Scope.RUN_NAMESPACES if entry.namespace == NAMESPACE else None


def observed(log: RequestLog, process: Process) -> set[tuple[str, str, str, Scope | None]]:
    return {(e.group, e.rbac_resource, e.verb, scope_of(e)) for e in log.of_user(process)}


def declared(process: Process, cluster_wide: bool) -> set[tuple[str, str, str, Scope]]:
    """What the chart grants ``process``, in this test's scope terms: the release namespace is
    the run namespace here; with clusterWide the operator's run rules hold everywhere too."""
    out: set[tuple[str, str, str, Scope]] = set()
    for scope in Scope:
        granted: frozenset[Rule] = rules(process, scope)
        as_scope = Scope.RUN_NAMESPACES if scope is Scope.RELEASE_NAMESPACE else scope
        out |= {(group, resource, verb, as_scope) for group, resource, verb in granted}
        if cluster_wide and process is Process.OPERATOR and scope is Scope.RUN_NAMESPACES:
            out |= {(group, resource, verb, Scope.CLUSTER) for group, resource, verb in granted}
    return out


def submit(api: str, prompt: str, **extra: Any) -> str:
    headers = {}
    if "idempotency_key" in extra:
        headers["Idempotency-Key"] = extra.pop("idempotency_key")
    r = httpx.post(f"{api}/api/v1/runs", json={"prompt": prompt, **extra}, headers=headers)
    assert r.status_code in (200, 202), r.text
    job_id: str = r.json()["job_id"]
    return job_id


def status_of(api: str, job_id: str) -> str:
    status: str = httpx.get(f"{api}/api/v1/runs/{job_id}", timeout=10).json()["status"]
    return status


@pytest.mark.parametrize("cluster_wide", [False, True], ids=["namespaced", "cluster-wide"])
def test_the_processes_use_exactly_the_listed_permissions(
    receiver: WebhookReceiver, cluster_wide: bool
) -> None:
    system = AttributedSystem(
        namespace=NAMESPACE,
        operator_env_overrides={
            "AGENTRUN_OPERATOR_CLUSTER_WIDE": json.dumps(cluster_wide),
            "AGENTRUN_OPERATOR_MAX_CONCURRENT_RUNS": "1",
            "AGENTRUN_OPERATOR_RETENTION_INTERVAL_SECONDS": "0.5",
            "AGENTRUN_OPERATOR_WEBHOOK__RETRY_SCHEDULE_SECONDS": "[0, 0.3, 0.3]",
            "AGENTRUN_OPERATOR_WEBHOOK__CHECK_INTERVAL_SECONDS": "0.2",
            # A small cap: the second run's transcript, written over several flushes, drops
            # (deletes) stored chunks.
            "AGENTRUN_OPERATOR_TRANSCRIPT_CAP_BYTES": "4096",
            "AGENTRUN_OPERATOR_TRANSCRIPT_CHUNK_BYTES": "1024",
            # The run whose pod is refused fails soon, after its Events are read for the reason.
            "AGENTRUN_OPERATOR_PENDING_TIMEOUT_SECONDS": "8",
        },
    )
    log = RequestLog(system.cluster.server.state.registry)
    system.cluster.server.add_middleware(log.middleware)
    with system:
        api = system.api_url
        kube = SyncKube(system.cluster.base_url)
        mode = "cluster-wide" if cluster_wide else "namespaced"

        def hook(name: str) -> str:
            return receiver.url_for(f"{mode}-{name}")

        try:
            receiver.script(Answer(status=500), path=f"/hook/{mode}-first")
            first = submit(
                api,
                "sleep=2 echo",
                idempotency_key="permissions-first",
                webhook_url=hook("first"),
            )
            # The same key again: answered from the existing run.
            replay = submit(
                api,
                "sleep=2 echo",
                idempotency_key="permissions-first",
                webhook_url=hook("first"),
            )
            assert replay == first
            # One run at a time: this one queues behind the first.
            second = submit(api, "echo lines=300 steps=120 sleep=3", webhook_url=hook("second"))
            with httpx.stream("GET", f"{api}/api/v1/runs/{first}/stream", timeout=60) as stream:
                lines = [line for line in stream.iter_lines() if line.startswith("data:")]
            assert lines[-1] == "data: [DONE]", lines
            kube.wait_for("the second run", lambda: status_of(api, second) == "succeeded", 60)
            assert httpx.get(f"{api}/api/v1/runs/{first}/result", timeout=10).status_code == 200
            assert httpx.get(f"{api}/api/v1/runs", timeout=10).status_code == 200
            third = submit(api, "sleep=30", webhook_url=hook("third"))
            kube.wait_for("the third run", lambda: status_of(api, third) == "running", 60)
            # An operator restart mid-run: it resumes the run's transcript from what is stored.
            system.restart_operator()
            # Queued behind the third; the apiserver will refuse its pod (no runner
            # ServiceAccount), so the operator reads its Job's Events for the reason.
            fourth = submit(api, "echo", webhook_url=hook("fourth"))
            kube.delete(f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/agentrun-runner")
            cancel = httpx.post(f"{api}/api/v1/runs/{third}/cancel", timeout=10)
            assert cancel.status_code == 200, cancel.text
            kube.wait_for("the fourth run", lambda: status_of(api, fourth) == "failed", 60)
            for path in ("first", "second", "third", "fourth"):
                receiver.wait_for(1, timeout=60, path=f"/hook/{mode}-{path}")
            # The first webhook failed once, then was delivered.
            assert len(receiver.requests(f"/hook/{mode}-first")) == 2
            # DELETE one run through the API; then an operator restarted with room for one
            # finished run deletes another (retention).
            deleted = httpx.delete(f"{api}/api/v1/runs/{second}", timeout=10)
            assert deleted.status_code == 204, deleted.text
            system.operator_overrides["AGENTRUN_OPERATOR_RETENTION_MAX_RUNS"] = "1"
            system.restart_operator()
            kube.wait_for("retention", lambda: len(kube.items(RUNS)) <= 1, 60)
            time.sleep(1.5)  # a lease renewal or two
            logs = system.logs()
        except BaseException:
            print(system.logs())
            raise
        finally:
            kube.close()

    missing = {
        process: observed(log, process) - declared(process, cluster_wide) for process in Process
    }
    assert missing == {p: set() for p in Process}, (
        "requests made but not in agentrun_contract.permissions (group, resource, verb, scope; "
        f"scope None: a namespace outside the install): {missing}"
    )
    # The owner-reference admission check really is what needs agentruns/finalizers.
    assert any(
        e.rbac_resource == "agentruns/finalizers" and e.verb == "update"
        for e in log.of_user(Process.OPERATOR)
    )
    if cluster_wide:
        # Cluster-wide, kopf watches every namespace at once and observes no namespaces: what
        # the list holds beyond that is shown necessary by the namespaced run.
        return
    unused = {
        process: declared(process, cluster_wide)
        - observed(log, process)
        - NOT_SHOWN_BY_THIS_SCENARIO.get(process, set())
        for process in Process
    }
    assert unused == {p: set() for p in Process}, (
        f"listed but never used (drop them, or say why in NOT_SHOWN_BY_THIS_SCENARIO): {unused}\n"
        f"{logs}"
    )

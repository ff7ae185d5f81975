"""Deletion semantics (finalizers, graceful pods, garbage collection) and pod logs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from agentrun_devcluster.apiserver import PodLogProvider
from agentrun_devcluster.testing import ClusterThread
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

GROUP, VERSION, PLURAL = "agentrun.dev", "v1alpha1", "agentruns"
MERGE = "application/merge-patch+json"


def pod(
    name: str,
    *,
    node: str | None = None,
    owner: dict[str, Any] | None = None,
    grace: int | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "main", "image": "runner"}]}
    if node:
        spec["nodeName"] = node
    if grace is not None:
        spec["terminationGracePeriodSeconds"] = grace
    meta: dict[str, Any] = {"name": name}
    if owner:
        meta["ownerReferences"] = [owner]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def owner_ref(obj: dict[str, Any] | Any, kind: str, api_version: str) -> dict[str, Any]:
    meta = obj["metadata"] if isinstance(obj, dict) else obj.metadata
    name = meta["name"] if isinstance(meta, dict) else meta.name
    uid = meta["uid"] if isinstance(meta, dict) else meta.uid
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


async def exists(call: Any, *args: Any) -> bool:
    try:
        await call(*args)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


# -- finalizers ------------------------------------------------------------------------------


async def test_finalizers_hold_deletion_until_removed(kube: client.ApiClient) -> None:
    co = client.CustomObjectsApi(kube)
    await co.create_namespaced_custom_object(
        GROUP,
        VERSION,
        "default",
        PLURAL,
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "AgentRun",
            "metadata": {"name": "f", "finalizers": ["example.com/hold"]},
            "spec": {"prompt": "p"},
        },
    )
    first = await co.delete_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "f")
    stamp = first["metadata"]["deletionTimestamp"]
    assert stamp
    await asyncio.sleep(1.1)
    second = await co.delete_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "f")
    assert second["metadata"]["deletionTimestamp"] == stamp  # set once
    still = await co.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "f")
    assert still["metadata"]["finalizers"] == ["example.com/hold"]
    with pytest.raises(ApiException) as info:
        await co.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            "default",
            PLURAL,
            "f",
            {"metadata": {"finalizers": ["example.com/hold", "example.com/new"]}},
            _content_type=MERGE,
        )
    assert info.value.status == 422
    await co.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        "default",
        PLURAL,
        "f",
        {"metadata": {"finalizers": None}},
        _content_type=MERGE,
    )
    assert not await exists(co.get_namespaced_custom_object, GROUP, VERSION, "default", PLURAL, "f")


# -- graceful pod deletion -------------------------------------------------------------------


async def test_scheduled_pod_deletion_is_graceful(kube: client.ApiClient) -> None:
    core = client.CoreV1Api(kube)
    await core.create_namespaced_pod("default", pod("running", node="node-1", grace=7))
    pending = await core.delete_namespaced_pod("running", "default")
    assert pending.metadata.deletion_timestamp is not None
    assert pending.metadata.deletion_grace_period_seconds == 7
    assert await exists(core.read_namespaced_pod, "running", "default")
    # What the kubelet does once the container has exited:
    await core.delete_namespaced_pod("running", "default", grace_period_seconds=0)
    assert not await exists(core.read_namespaced_pod, "running", "default")


async def test_grace_period_from_request_and_unscheduled_pods(kube: client.ApiClient) -> None:
    core = client.CoreV1Api(kube)
    await core.create_namespaced_pod("default", pod("a", node="node-1"))
    deleted = await core.delete_namespaced_pod("a", "default", grace_period_seconds=3)
    assert deleted.metadata.deletion_grace_period_seconds == 3
    await core.create_namespaced_pod("default", pod("b", node="node-1"))
    default = await core.delete_namespaced_pod("b", "default")
    assert default.metadata.deletion_grace_period_seconds == 30
    await core.create_namespaced_pod("default", pod("unscheduled"))
    await core.delete_namespaced_pod("unscheduled", "default")
    assert not await exists(core.read_namespaced_pod, "unscheduled", "default")


# -- garbage collection ----------------------------------------------------------------------


async def _job_with_pod(kube: client.ApiClient, name: str, *, node: str | None = None) -> None:
    batch = client.BatchV1Api(kube)
    core = client.CoreV1Api(kube)
    job = await batch.create_namespaced_job(
        "default",
        {
            "metadata": {"name": name},
            "spec": {
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "main", "image": "i"}],
                    }
                }
            },
        },
    )
    await core.create_namespaced_pod(
        "default",
        pod(
            f"{name}-pod",
            node=node,
            owner=owner_ref(
                job.to_dict() | {"metadata": {"name": job.metadata.name, "uid": job.metadata.uid}},
                "Job",
                "batch/v1",
            ),
        ),
    )


async def test_job_deleted_without_policy_orphans_its_pods(kube: client.ApiClient) -> None:
    await _job_with_pod(kube, "j1")
    batch, core = client.BatchV1Api(kube), client.CoreV1Api(kube)
    await batch.delete_namespaced_job("j1", "default")
    assert not await exists(batch.read_namespaced_job, "j1", "default")
    orphan = await core.read_namespaced_pod("j1-pod", "default")
    assert not orphan.metadata.owner_references


async def test_background_cascade_deletes_dependents_recursively(kube: client.ApiClient) -> None:
    co, batch, core = client.CustomObjectsApi(kube), client.BatchV1Api(kube), client.CoreV1Api(kube)
    run = await co.create_namespaced_custom_object(
        GROUP,
        VERSION,
        "default",
        PLURAL,
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "AgentRun",
            "metadata": {"name": "r"},
            "spec": {"prompt": "p"},
        },
    )
    job = await batch.create_namespaced_job(
        "default",
        {
            "metadata": {
                "name": "r-job",
                "ownerReferences": [owner_ref(run, "AgentRun", f"{GROUP}/{VERSION}")],
            },
            "spec": {
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "main", "image": "i"}],
                    }
                }
            },
        },
    )
    job_owner = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "name": "r-job",
        "uid": job.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }
    await core.create_namespaced_pod("default", pod("r-pod", owner=job_owner))
    await core.create_namespaced_config_map(
        "default",
        {
            "metadata": {
                "name": "r-input",
                "ownerReferences": [owner_ref(run, "AgentRun", f"{GROUP}/{VERSION}")],
            }
        },
    )
    await core.create_namespaced_config_map("default", {"metadata": {"name": "unrelated"}})
    await co.delete_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "r")
    assert not await exists(batch.read_namespaced_job, "r-job", "default")
    assert not await exists(core.read_namespaced_pod, "r-pod", "default")
    assert not await exists(core.read_namespaced_config_map, "r-input", "default")
    assert await exists(core.read_namespaced_config_map, "unrelated", "default")


async def test_background_cascade_to_running_pod_is_graceful(kube: client.ApiClient) -> None:
    await _job_with_pod(kube, "j2", node="node-1")
    batch, core = client.BatchV1Api(kube), client.CoreV1Api(kube)
    await batch.delete_namespaced_job("j2", "default", propagation_policy="Background")
    assert not await exists(batch.read_namespaced_job, "j2", "default")
    terminating = await core.read_namespaced_pod("j2-pod", "default")
    assert terminating.metadata.deletion_timestamp is not None


async def test_foreground_waits_for_dependents(kube: client.ApiClient) -> None:
    await _job_with_pod(kube, "j3", node="node-1")
    batch, core = client.BatchV1Api(kube), client.CoreV1Api(kube)
    await batch.delete_namespaced_job("j3", "default", propagation_policy="Foreground")
    job = await batch.read_namespaced_job("j3", "default")
    assert job.metadata.deletion_timestamp is not None
    assert "foregroundDeletion" in job.metadata.finalizers
    await core.delete_namespaced_pod("j3-pod", "default", grace_period_seconds=0)
    assert not await exists(core.read_namespaced_pod, "j3-pod", "default")
    assert not await exists(batch.read_namespaced_job, "j3", "default")


async def test_orphan_policy_and_bad_policy(kube: client.ApiClient) -> None:
    await _job_with_pod(kube, "j4")
    batch, core = client.BatchV1Api(kube), client.CoreV1Api(kube)
    with pytest.raises(ApiException) as info:
        await batch.delete_namespaced_job("j4", "default", propagation_policy="Sometimes")
    assert info.value.status == 422
    await batch.delete_namespaced_job("j4", "default", propagation_policy="Orphan")
    assert not (await core.read_namespaced_pod("j4-pod", "default")).metadata.owner_references


async def test_delete_preconditions(kube: client.ApiClient) -> None:
    core = client.CoreV1Api(kube)
    await core.create_namespaced_config_map("default", {"metadata": {"name": "pc"}})
    with pytest.raises(ApiException) as info:
        await core.delete_namespaced_config_map(
            "pc",
            "default",
            body=client.V1DeleteOptions(preconditions=client.V1Preconditions(uid="nope")),
        )
    assert info.value.status == 409
    assert await exists(core.read_namespaced_config_map, "pc", "default")


# -- pod logs --------------------------------------------------------------------------------


class ScriptedLogs:
    """A provider whose lines tests append from outside; records what it was asked."""

    def __init__(self) -> None:
        self.lines: list[tuple[datetime, str]] = []
        self.finished = False
        self.calls: list[dict[str, Any]] = []

    async def read_log(
        self,
        namespace: str,
        pod: str,
        container: str | None,
        *,
        follow: bool,
        since_time: datetime | None,
        tail_lines: int | None,
        timestamps: bool,
    ) -> AsyncIterator[bytes]:
        self.calls.append(
            {
                "pod": pod,
                "container": container,
                "follow": follow,
                "since_time": since_time,
                "tail_lines": tail_lines,
                "timestamps": timestamps,
            }
        )
        sent = 0
        while True:
            selected = [
                (t, line) for t, line in self.lines[sent:] if since_time is None or t >= since_time
            ]
            if sent == 0 and tail_lines is not None:
                selected = selected[-tail_lines:] if tail_lines else []
            sent = len(self.lines)
            for t, line in selected:
                prefix = t.strftime("%Y-%m-%dT%H:%M:%S.%fZ ") if timestamps else ""
                yield f"{prefix}{line}\n".encode()
            if not follow or self.finished:
                return
            await asyncio.sleep(0.05)


async def _running_pod(kube: client.ApiClient, name: str) -> None:
    core = client.CoreV1Api(kube)
    await core.create_namespaced_pod("default", pod(name, node="node-1"))
    await core.patch_namespaced_pod_status(
        name,
        "default",
        {
            "status": {
                "phase": "Running",
                "containerStatuses": [
                    {
                        "name": "main",
                        "ready": True,
                        "restartCount": 0,
                        "image": "runner",
                        "imageID": "",
                        "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
                    }
                ],
            }
        },
    )


async def test_logs_without_provider_are_empty_text(
    emulated_cluster: ClusterThread, kube: client.ApiClient
) -> None:
    await _running_pod(kube, "quiet")
    async with httpx.AsyncClient(base_url=emulated_cluster.base_url) as http:
        r = await http.get("/api/v1/namespaces/default/pods/quiet/log")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert r.text == ""


async def test_logs_errors(emulated_cluster: ClusterThread, kube: client.ApiClient) -> None:
    core = client.CoreV1Api(kube)
    with pytest.raises(ApiException) as info:
        await core.read_namespaced_pod_log("missing", "default")
    assert info.value.status == 404
    await core.create_namespaced_pod("default", pod("waiting", node="node-1"))
    await core.patch_namespaced_pod_status(
        "waiting",
        "default",
        {
            "status": {
                "containerStatuses": [
                    {
                        "name": "main",
                        "ready": False,
                        "restartCount": 0,
                        "image": "runner",
                        "imageID": "",
                        "state": {"waiting": {"reason": "ContainerCreating"}},
                    }
                ]
            }
        },
    )
    with pytest.raises(ApiException) as info:
        await core.read_namespaced_pod_log("waiting", "default")
    assert info.value.status == 400
    assert json.loads(info.value.body)["message"] == (
        'container "main" in pod "waiting" is waiting to start: ContainerCreating'
    )
    await _running_pod(kube, "r")
    async with httpx.AsyncClient(base_url=emulated_cluster.base_url) as http:
        bad_time = await http.get(
            "/api/v1/namespaces/default/pods/r/log", params={"sinceTime": "yesterday"}
        )
        assert bad_time.status_code == 400
        both = await http.get(
            "/api/v1/namespaces/default/pods/r/log",
            params={"sinceTime": "2026-01-01T00:00:00Z", "sinceSeconds": "5"},
        )
        assert both.status_code == 422
        wrong_container = await http.get(
            "/api/v1/namespaces/default/pods/r/log", params={"container": "x"}
        )
        assert wrong_container.status_code == 400


async def test_logs_parameters_reach_the_provider(
    emulated_cluster: ClusterThread, kube: client.ApiClient
) -> None:
    provider = ScriptedLogs()
    t0 = datetime(2026, 1, 1, 0, 0, 0, 500000, tzinfo=UTC)
    provider.lines = [(t0, "one"), (t0.replace(second=5), "two"), (t0.replace(second=9), "three")]
    provider.finished = True
    _: PodLogProvider = provider  # structurally a PodLogProvider
    emulated_cluster.server.set_pod_log_provider(provider)
    await _running_pod(kube, "chatty")
    core = client.CoreV1Api(kube)
    assert await core.read_namespaced_pod_log("chatty", "default") == "one\ntwo\nthree\n"
    assert await core.read_namespaced_pod_log("chatty", "default", tail_lines=1) == "three\n"
    # kubernetes_asyncio's read_namespaced_pod_log has no since_time: raw HTTP.
    async with httpx.AsyncClient(base_url=emulated_cluster.base_url) as http:
        response = await http.get(
            "/api/v1/namespaces/default/pods/chatty/log",
            params={"sinceTime": "2026-01-01T00:00:05.900Z"},
        )
    since = response.text
    # sinceTime has second resolution: .900 is truncated, so "two" (at :05.5) is included.
    assert since == "two\nthree\n"
    assert provider.calls[-1]["since_time"] == datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC)
    stamped = await core.read_namespaced_pod_log("chatty", "default", timestamps=True, tail_lines=1)
    assert stamped == "2026-01-01T00:00:09.500000Z three\n"
    limited = await core.read_namespaced_pod_log("chatty", "default", limit_bytes=5)
    assert limited == "one\nt"
    assert provider.calls[0]["container"] == "main"


async def test_logs_follow_streams_until_the_container_ends(
    emulated_cluster: ClusterThread, kube: client.ApiClient
) -> None:
    provider = ScriptedLogs()
    emulated_cluster.server.set_pod_log_provider(provider)
    await _running_pod(kube, "follow")
    now = datetime.now(UTC)
    provider.lines.append((now, "first"))
    received: list[str] = []
    async with (
        httpx.AsyncClient(base_url=emulated_cluster.base_url, timeout=30) as http,
        http.stream(
            "GET", "/api/v1/namespaces/default/pods/follow/log", params={"follow": "true"}
        ) as r,
    ):
        assert r.headers["content-type"].startswith("text/plain")
        async for line in r.aiter_lines():
            received.append(line)
            if line == "first":
                # Only now does the container write more and then end.
                emulated_cluster.loop.call_soon_threadsafe(provider.lines.append, (now, "second"))
            if line == "second":
                emulated_cluster.loop.call_soon_threadsafe(setattr, provider, "finished", True)
    assert received == ["first", "second"]


async def test_object_whose_owner_is_gone_is_collected(kube: client.ApiClient) -> None:
    core = client.CoreV1Api(kube)
    ghost = {
        "apiVersion": "agentrun.dev/v1alpha1",
        "kind": "AgentRun",
        "name": "gone",
        "uid": "00000000-0000-0000-0000-000000000000",
    }
    await core.create_namespaced_config_map(
        "default", {"metadata": {"name": "dangling", "ownerReferences": [ghost]}}
    )
    await core.create_namespaced_config_map("default", {"metadata": {"name": "free"}})
    for _ in range(100):
        if not await exists(core.read_namespaced_config_map, "dangling", "default"):
            break
        await asyncio.sleep(0.05)
    assert not await exists(core.read_namespaced_config_map, "dangling", "default")
    assert await exists(core.read_namespaced_config_map, "free", "default")

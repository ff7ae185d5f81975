"""410 Gone for a watch from a resourceVersion older than the retained event window."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from agentrun_devcluster.testing import ClusterThread
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException


@pytest.fixture
def small_window_cluster() -> Iterator[ClusterThread]:
    with ClusterThread(watch_window=3, install_crds=False) as cluster:
        yield cluster


async def _seed(base_url: str, count: int) -> list[str]:
    rvs = []
    async with httpx.AsyncClient(base_url=base_url) as http:
        for i in range(count):
            r = await http.post(
                "/api/v1/namespaces/default/configmaps",
                json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"c{i}"}},
            )
            rvs.append(r.json()["metadata"]["resourceVersion"])
    return rvs


async def test_expired_resource_version_gets_410_error_event(
    small_window_cluster: ClusterThread,
) -> None:
    rvs = await _seed(small_window_cluster.base_url, 6)
    async with httpx.AsyncClient(base_url=small_window_cluster.base_url, timeout=30) as http:
        r = await http.get(
            "/api/v1/namespaces/default/configmaps",
            params={"watch": "true", "resourceVersion": rvs[0], "timeoutSeconds": "5"},
        )
        # Still inside the window: replays only what came after.
        recent = await http.get(
            "/api/v1/namespaces/default/configmaps",
            params={"watch": "true", "resourceVersion": rvs[3], "timeoutSeconds": "1"},
        )
    assert r.status_code == 200
    events = [json.loads(line) for line in r.text.splitlines() if line]
    assert len(events) == 1
    assert events[0]["type"] == "ERROR"
    status = events[0]["object"]
    assert (status["kind"], status["code"], status["reason"]) == ("Status", 410, "Expired")
    assert status["message"].startswith(f"too old resource version: {rvs[0]}")
    replayed = [json.loads(line) for line in recent.text.splitlines() if line]
    assert [e["object"]["metadata"]["name"] for e in replayed] == ["c4", "c5"]


async def test_kubernetes_asyncio_sees_410_as_api_exception(
    small_window_cluster: ClusterThread,
) -> None:
    rvs = await _seed(small_window_cluster.base_url, 6)
    configuration = client.Configuration()
    await config.load_kube_config(
        config_file=str(small_window_cluster.kubeconfig), client_configuration=configuration
    )
    async with client.ApiClient(configuration) as api:
        core = client.CoreV1Api(api)
        with pytest.raises(ApiException) as info:
            await _drain(core, rvs[0])
        assert info.value.status == 410
        # The usual recovery: list again and watch from the list's resourceVersion.
        listing = await core.list_namespaced_config_map("default")
        assert len(listing.items) == 6
        async with watch.Watch() as w:
            seen = [
                e
                async for e in w.stream(
                    core.list_namespaced_config_map,
                    "default",
                    resource_version=listing.metadata.resource_version,
                    timeout_seconds=1,
                )
            ]
        assert seen == []


async def _drain(core: client.CoreV1Api, resource_version: str) -> None:
    async with watch.Watch() as w:
        async for _ in w.stream(
            core.list_namespaced_config_map,
            "default",
            resource_version=resource_version,
            timeout_seconds=5,
        ):
            pass


async def test_bookmarks_carry_a_resumable_resource_version() -> None:
    with ClusterThread(install_crds=False, bookmark_interval=0.3) as cluster:
        async with httpx.AsyncClient(base_url=cluster.base_url, timeout=30) as http:
            rv = (await http.get("/api/v1/namespaces/default/configmaps")).json()["metadata"][
                "resourceVersion"
            ]
            await http.post(
                "/api/v1/namespaces/default/configmaps",
                json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}},
            )
            r = await http.get(
                "/api/v1/namespaces/default/configmaps",
                params={
                    "watch": "1",
                    "resourceVersion": rv,
                    "allowWatchBookmarks": "true",
                    "timeoutSeconds": "2",
                },
            )
            plain = await http.get(
                "/api/v1/namespaces/default/configmaps",
                params={"watch": "1", "resourceVersion": rv, "timeoutSeconds": "1"},
            )
    events = [json.loads(line) for line in r.text.splitlines() if line]
    assert events[0]["type"] == "ADDED"
    bookmarks = [e for e in events if e["type"] == "BOOKMARK"]
    assert bookmarks, events
    assert all(
        int(b["object"]["metadata"]["resourceVersion"])
        >= int(events[0]["object"]["metadata"]["resourceVersion"])
        for b in bookmarks
    )
    assert bookmarks[0]["object"]["kind"] == "ConfigMap"
    assert [json.loads(line)["type"] for line in plain.text.splitlines() if line] == ["ADDED"]


async def test_send_initial_events_lists_then_marks_the_end(
    small_window_cluster: ClusterThread,
) -> None:
    rvs = await _seed(small_window_cluster.base_url, 2)
    async with httpx.AsyncClient(base_url=small_window_cluster.base_url, timeout=30) as http:
        r = await http.get(
            "/api/v1/namespaces/default/configmaps",
            params={
                "watch": "1",
                "sendInitialEvents": "true",
                "allowWatchBookmarks": "true",
                "resourceVersionMatch": "NotOlderThan",
                "resourceVersion": rvs[-1],
                "timeoutSeconds": "1",
            },
        )
    events = [json.loads(line) for line in r.text.splitlines() if line]
    assert [e["type"] for e in events[:3]] == ["ADDED", "ADDED", "BOOKMARK"]
    annotations = events[2]["object"]["metadata"]["annotations"]
    assert annotations == {"k8s.io/initial-events-end": "true"}


async def test_event_window_is_bounded_in_bytes_too() -> None:
    with ClusterThread(install_crds=False, watch_window_bytes=200_000) as cluster:
        async with httpx.AsyncClient(base_url=cluster.base_url, timeout=30) as http:
            url = "/api/v1/namespaces/default/configmaps"
            first = await http.post(
                url,
                json={
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "big"},
                    "data": {"k": "0"},
                },
            )
            rv0 = first.json()["metadata"]["resourceVersion"]
            for i in range(5):  # 5 versions of ~100 kB: the oldest leave the window
                r = await http.patch(
                    f"{url}/big",
                    json={"data": {"k": str(i) * 100_000}},
                    headers={"Content-Type": "application/merge-patch+json"},
                )
                assert r.status_code == 200
            last_rv = r.json()["metadata"]["resourceVersion"]
            old = await http.get(
                url, params={"watch": "1", "resourceVersion": rv0, "timeoutSeconds": "1"}
            )
            recent = await http.get(
                url,
                params={
                    "watch": "1",
                    "resourceVersion": str(int(last_rv) - 1),
                    "timeoutSeconds": "1",
                },
            )
    assert json.loads(old.text.splitlines()[0])["object"]["code"] == 410
    assert [json.loads(line)["type"] for line in recent.text.splitlines()] == ["MODIFIED"]

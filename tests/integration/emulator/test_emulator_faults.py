"""The emulated apiserver's faults, each seen by a real client as a real apiserver throws it.

aiohttp (what kubernetes_asyncio and kopf run on), kubernetes_asyncio and kubectl talk to the
emulator over HTTP; faults are switched per test in-process (``server.faults``,
``server.restart``, ``server.compact``) and over ``/_emulator/faults``.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from agentrun_devcluster.apiserver.faults import (
    SYSTEM_TOKEN,
    APIFault,
    APIFaultInjector,
    ChaosConfig,
    RequestInfo,
    parse_fault_list,
)
from agentrun_devcluster.faults import FaultInjector
from agentrun_devcluster.system import SyncKube
from agentrun_devcluster.testing import REPO_ROOT, ClusterThread
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

NS = "default"
CONFIGMAPS = f"/api/v1/namespaces/{NS}/configmaps"
JOBS = f"/apis/batch/v1/namespaces/{NS}/jobs"
LOG = f"/api/v1/namespaces/{NS}/pods/p/log"
KUBECTL = REPO_ROOT / ".tools" / "bin" / "kubectl"
LINE = b"a log line of the container, long enough to be cut\n"


class SlowLog:
    """A container that prints one line every 0.1 s, 10 lines, while the follow lasts."""

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
        for _ in range(10):
            yield LINE
            await asyncio.sleep(0.1)


@pytest.fixture
def cluster() -> Iterator[ClusterThread]:
    c = ClusterThread()
    FaultInjector().install_routes(c.server)  # /_emulator/faults, as the dev cluster has it
    c.server.set_pod_log_provider(SlowLog())
    with c:
        yield c


@pytest.fixture
def system(cluster: ClusterThread) -> Iterator[SyncKube]:
    """A checker with the system token: faults never hit it."""
    k = SyncKube(cluster.base_url, token=SYSTEM_TOKEN)
    yield k
    k.close()


@pytest.fixture
async def kube(cluster: ClusterThread) -> AsyncIterator[client.ApiClient]:
    configuration = client.Configuration()
    await config.load_kube_config(
        config_file=str(cluster.kubeconfig), client_configuration=configuration
    )
    async with client.ApiClient(configuration) as api:
        yield api


def running_pod(k: SyncKube) -> None:
    k.create(
        f"/api/v1/namespaces/{NS}/pods",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p"},
            "spec": {"nodeName": "n", "containers": [{"name": "c", "image": "x"}]},
        },
    )
    k.request(
        "PATCH",
        f"/api/v1/namespaces/{NS}/pods/p/status",
        content=json.dumps(
            {
                "status": {
                    "phase": "Running",
                    "containerStatuses": [{"name": "c", "state": {"running": {}}}],
                }
            }
        ),
        headers={"Content-Type": "application/merge-patch+json"},
    )


def configmap(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels or {}},
        "data": {"k": "v"},
    }


def job(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "template": {
                "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}
            }
        },
    }


async def follow(
    base_url: str, client_timeout: aiohttp.ClientTimeout | None = None
) -> tuple[bytes, BaseException | None]:
    """Follow the pod's log with aiohttp as kubernetes_asyncio does; (bytes read, error)."""
    got = b""
    async with aiohttp.ClientSession(
        headers={"Authorization": "Bearer client"},
        timeout=client_timeout or aiohttp.ClientTimeout(),
    ) as session:
        try:
            async with session.get(f"{base_url}{LOG}", params={"follow": "true"}) as r:
                assert r.status == 200
                async for piece in r.content.iter_any():
                    got += piece
        except aiohttp.ClientError as exc:
            return got, exc
    return got, None


def kubectl(kubeconfig: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(KUBECTL), "--kubeconfig", str(kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "KUBECTL_KUBERC": "false"},
    )


# -- pod-log follows ---------------------------------------------------------------------------


async def test_log_cut_mid_chunk_is_payload_not_completed(
    cluster: ClusterThread, system: SyncKube
) -> None:
    running_pod(system)
    cluster.server.faults.add(APIFault.LOG_CUT, times=1, after_bytes=len(LINE) + 10)

    got, error = await follow(cluster.base_url)

    assert isinstance(error, aiohttp.ClientPayloadError), error
    assert "not completed" in str(error)
    # the first line whole, then the next one cut mid-line: no newline at the end
    assert got.startswith(LINE), got
    assert len(LINE) < len(got) < 2 * len(LINE), got
    assert not got.endswith(b"\n")
    # only once: the next follow reads the whole log
    again, error = await follow(cluster.base_url)
    assert error is None
    assert again == LINE * 10
    assert cluster.server.faults.fired[APIFault.LOG_CUT] == 1


async def test_log_disconnect_ends_the_follow_cleanly_while_the_container_runs(
    cluster: ClusterThread, system: SyncKube
) -> None:
    running_pod(system)
    cluster.server.faults.add(APIFault.LOG_DISCONNECT, times=1, after_bytes=2 * len(LINE))

    got, error = await follow(cluster.base_url)

    # an ordinary end of the body: the client cannot tell it from the container's end
    assert error is None
    assert got == LINE * 2
    pod = system.get(f"/api/v1/namespaces/{NS}/pods/p")
    assert pod["status"]["phase"] == "Running"


# -- connections -------------------------------------------------------------------------------


async def test_drop_closes_the_connection_before_any_answer(
    cluster: ClusterThread, system: SyncKube
) -> None:
    cluster.server.faults.add(APIFault.DROP, times=1, methods=["POST"])
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer client"}) as session:
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await session.post(f"{cluster.base_url}{CONFIGMAPS}", json=configmap("dropped"))
    assert system.get_or_none(f"{CONFIGMAPS}/dropped") is None


def test_hang_answers_nothing_until_the_client_gives_up(
    cluster: ClusterThread, system: SyncKube
) -> None:
    system.create(CONFIGMAPS, configmap("seen"))
    cluster.server.faults.add(APIFault.HANG, seconds=30, path=r"/configmaps")
    started = time.monotonic()
    out = kubectl(cluster.kubeconfig, "get", "configmaps", "--request-timeout=1s")
    elapsed = time.monotonic() - started
    assert out.returncode != 0
    assert "Client.Timeout" in out.stderr or "deadline exceeded" in out.stderr, out.stderr
    assert 1 <= elapsed < 20, elapsed
    # the system checker is never held
    assert system.get(f"{CONFIGMAPS}/seen")["metadata"]["name"] == "seen"
    cluster.server.faults.clear()
    out = kubectl(cluster.kubeconfig, "get", "configmaps", "-o", "name")
    assert out.returncode == 0, out.stderr
    assert "configmap/seen" in out.stdout


async def test_hang_then_reset_after_its_duration(cluster: ClusterThread) -> None:
    cluster.server.faults.add(APIFault.HANG, seconds=1.0, times=2)
    started = time.monotonic()
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer client"}) as session:
        # no read timeout: held 1 s, reset; aiohttp retries the GET once, held again, reset
        with pytest.raises((aiohttp.ClientOSError, aiohttp.ServerDisconnectedError)):
            await session.get(f"{cluster.base_url}{CONFIGMAPS}")
    assert time.monotonic() - started >= 2.0
    assert cluster.server.faults.fired[APIFault.HANG] == 2


async def test_stall_silences_an_open_log_follow_until_the_client_reads_past_its_timeout(
    cluster: ClusterThread, system: SyncKube
) -> None:
    running_pod(system)
    cluster.server.faults.add(APIFault.STALL, times=1, after_bytes=len(LINE), seconds=30)
    started = time.monotonic()
    got, error = await follow(cluster.base_url, aiohttp.ClientTimeout(sock_read=1.0))
    assert isinstance(error, TimeoutError), error
    # the headers and the first line came, then nothing while the connection stayed open
    assert got == LINE
    assert 1.0 <= time.monotonic() - started < 10


async def test_stall_silences_an_open_watch_after_its_first_events(
    cluster: ClusterThread, kube: client.ApiClient, system: SyncKube
) -> None:
    system.create(CONFIGMAPS, configmap("first"))
    cluster.server.faults.add(APIFault.STALL, times=1, seconds=30, path="/configmaps")
    watch = await watch_lines(kube, CONFIGMAPS, "0")
    event = json.loads(await watch.content.readline())
    assert (event["type"], event["object"]["metadata"]["name"]) == ("ADDED", "first")
    system.create(CONFIGMAPS, configmap("second"))  # never delivered on this watch
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(watch.content.readline(), 1.5)
    watch.release()
    # a new watch (the fault fired once) sees it
    again = await watch_lines(kube, CONFIGMAPS, "0")
    names = {json.loads(await again.content.readline())["object"]["metadata"]["name"] for _ in "ab"}
    assert names == {"first", "second"}
    again.release()


# -- writes ------------------------------------------------------------------------------------


async def test_throttle_is_429_with_retry_after_on_writes_only(
    cluster: ClusterThread, kube: client.ApiClient, system: SyncKube
) -> None:
    cluster.server.faults.add(APIFault.THROTTLE, retry_after=3)
    core = client.CoreV1Api(kube)
    with pytest.raises(ApiException) as caught:
        await core.create_namespaced_config_map(NS, configmap("throttled"))
    assert caught.value.status == 429
    assert caught.value.headers["Retry-After"] == "3"
    status = json.loads(caught.value.body)
    assert status["reason"] == "TooManyRequests"
    assert status["details"]["retryAfterSeconds"] == 3
    # not applied; reads are never throttled
    assert system.get_or_none(f"{CONFIGMAPS}/throttled") is None
    listed = await core.list_namespaced_config_map(NS)
    assert listed.items is not None


async def test_server_error_on_a_fraction_of_writes(
    cluster: ClusterThread, kube: client.ApiClient, system: SyncKube
) -> None:
    cluster.server.faults.add(APIFault.SERVER_ERROR, rate=0.5)
    core = client.CoreV1Api(kube)
    failed: list[ApiException] = []
    created = []
    for i in range(40):
        try:
            await core.create_namespaced_config_map(NS, configmap(f"cm-{i}"))
            created.append(f"cm-{i}")
        except ApiException as exc:
            failed.append(exc)
    assert {(e.status, json.loads(e.body)["reason"]) for e in failed} == {(500, "InternalError")}
    assert 5 <= len(failed) <= 35, (len(failed), len(created))
    stored = {c["metadata"]["name"] for c in system.items(CONFIGMAPS)}
    assert stored == set(created)  # a refused write was not applied


# -- restart and compaction --------------------------------------------------------------------


async def read_to_end(response: aiohttp.ClientResponse) -> None:
    while await response.content.readline():
        pass


async def watch_lines(api: client.ApiClient, path: str, rv: str) -> aiohttp.ClientResponse:
    response: aiohttp.ClientResponse = await api.call_api(
        path,
        "GET",
        query_params=[("watch", "true"), ("resourceVersion", rv)],
        header_params={"Accept": "application/json"},
        auth_settings=["BearerToken"],
        _preload_content=False,
        _return_http_data_only=True,
    )
    return response


async def test_restart_drops_every_connection_keeps_objects_and_old_watches_get_410(
    cluster: ClusterThread, kube: client.ApiClient, system: SyncKube
) -> None:
    listed = system.request("GET", CONFIGMAPS)
    rv = listed["metadata"]["resourceVersion"]
    system.create(CONFIGMAPS, configmap("before"))
    watch = await watch_lines(kube, CONFIGMAPS, rv)
    first = json.loads(await watch.content.readline())
    assert (first["type"], first["object"]["metadata"]["name"]) == ("ADDED", "before")
    # a system client's connection survives the restart
    system_client = httpx.AsyncClient(
        base_url=cluster.base_url, headers={"Authorization": f"Bearer {SYSTEM_TOKEN}"}
    )
    assert (await system_client.get(CONFIGMAPS)).status_code == 200

    restart = asyncio.wrap_future(
        asyncio.run_coroutine_threadsafe(cluster.server.restart(1.0), cluster.loop)
    )
    # the open watch breaks: not a clean end
    with pytest.raises(aiohttp.ClientPayloadError):
        await read_to_end(watch)
    # while down, a new connection is reset
    await asyncio.sleep(0.2)
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer client"}) as session:
        with pytest.raises((aiohttp.ClientOSError, aiohttp.ServerDisconnectedError)):
            await session.get(f"{cluster.base_url}{CONFIGMAPS}")
    await restart
    # back: objects kept, the resume from the old resourceVersion is 410 Gone
    core = client.CoreV1Api(kube)
    kept = await core.read_namespaced_config_map("before", NS)
    assert kept.metadata.name == "before"
    resumed = await watch_lines(
        kube, CONFIGMAPS, str(first["object"]["metadata"]["resourceVersion"])
    )
    event = json.loads(await resumed.content.readline())
    assert event["type"] == "ERROR"
    assert event["object"]["code"] == 410
    assert event["object"]["reason"] == "Expired"
    resumed.release()
    # a relist gives a resourceVersion that watches again
    relisted = await core.list_namespaced_config_map(NS)
    again = await watch_lines(kube, CONFIGMAPS, relisted.metadata.resource_version)
    system.create(CONFIGMAPS, configmap("after"))
    event = json.loads(await asyncio.wait_for(again.content.readline(), 5))
    assert (event["type"], event["object"]["metadata"]["name"]) == ("ADDED", "after")
    again.release()
    assert (await system_client.get(CONFIGMAPS)).status_code == 200
    await system_client.aclose()
    assert cluster.server.faults.fired[APIFault.RESTART] == 1


async def test_compact_ends_watches_and_jobs_deleted_in_the_gap_show_only_on_relist(
    cluster: ClusterThread, kube: client.ApiClient, system: SyncKube
) -> None:
    system.create(JOBS, job("doomed", {"fate": "deleted"}))
    system.create(JOBS, job("kept", {"fate": "kept"}))
    batch = client.BatchV1Api(kube)
    listed = await batch.list_namespaced_job(NS)
    rv = listed.metadata.resource_version
    watch = await watch_lines(kube, JOBS, rv)

    async with httpx.AsyncClient() as control:
        response = await control.post(
            f"{cluster.base_url}/_emulator/faults",
            json={"fault": "compact", "delete_jobs": {"fate": "deleted"}},
        )
    assert response.status_code == 200, response.text
    assert response.json()["deleted_jobs"] == [f"{NS}/doomed"]

    # the watch ends cleanly (a watch timeout), and its DELETED event never came
    lines = []
    while line := await asyncio.wait_for(watch.content.readline(), 5):
        lines.append(json.loads(line))
    assert lines == []
    resumed = await watch_lines(kube, JOBS, rv)
    event = json.loads(await resumed.content.readline())
    assert event["type"] == "ERROR"
    assert event["object"]["code"] == 410
    resumed.release()
    relisted = await batch.list_namespaced_job(NS)
    assert [j.metadata.name for j in relisted.items] == ["kept"]
    out = kubectl(cluster.kubeconfig, "get", "jobs", "-o", "name")
    assert out.stdout.split() == ["job.batch/kept"], out.stderr


# -- control over HTTP, and random mode -----------------------------------------------------


def test_http_control_adds_lists_and_clears_api_faults(cluster: ClusterThread) -> None:
    url = f"{cluster.base_url}/_emulator/faults"
    added = httpx.post(url, json={"fault": "throttle", "times": 1, "retry_after": 2})
    assert added.status_code == 201, added.text
    assert added.json()["api_rules"][0]["fault"] == "throttle"
    first = httpx.post(
        f"{cluster.base_url}{CONFIGMAPS}",
        json=configmap("a"),
        headers={"Authorization": "Bearer client"},
    )
    assert first.status_code == 429
    assert first.headers["retry-after"] == "2"
    second = httpx.post(
        f"{cluster.base_url}{CONFIGMAPS}",
        json=configmap("a"),
        headers={"Authorization": "Bearer client"},
    )
    assert second.status_code == 201
    listing = httpx.get(url).json()
    assert listing["fired"] == {"throttle": 1}
    assert listing["api_rules"][0]["fired"] == 1
    bad = httpx.post(url, json={"fault": "throttle", "rate": 2})
    assert bad.status_code == 400
    assert "rate" in bad.text
    bad = httpx.post(url, json={"fault": "hang", "sconds": 2})
    assert bad.status_code == 400
    assert "sconds" in bad.text
    restarted = httpx.post(url, json={"fault": "restart", "down_seconds": 0.2})
    assert restarted.status_code == 202
    deadline = time.monotonic() + 10
    while cluster.server.faults.fired[APIFault.RESTART] != 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.5)  # back up
    cleared = httpx.delete(url).json()
    assert cleared["api_rules"] == []
    assert cleared["rules"] == []


def test_random_mode_is_seeded_and_fires_each_kind_where_it_applies() -> None:
    requests = [
        RequestInfo("GET", LOG, log_follow=True),
        RequestInfo("POST", CONFIGMAPS),
        RequestInfo("GET", CONFIGMAPS, watch=True),
        RequestInfo("PATCH", f"{CONFIGMAPS}/x"),
    ] * 500

    def fire(seed: int) -> list[str | None]:
        injector = APIFaultInjector()
        injector.set_chaos(ChaosConfig(faults=parse_fault_list("all"), seed=seed, rate=0.3))
        picked = []
        for info in requests:
            rule = injector.pick(info)
            picked.append(None if rule is None else rule.fault.value)
        return picked

    first, replay, other = fire(7), fire(7), fire(8)
    assert first == replay
    assert first != other
    fired = [(info, f) for info, f in zip(requests, first, strict=True) if f is not None]
    assert 0.2 < len(fired) / len(requests) < 0.4
    kinds = {f for _, f in fired}
    assert kinds == {
        "log_cut",
        "log_disconnect",
        "drop",
        "hang",
        "stall",
        "throttle",
        "server_error",
    }
    for info, fault in fired:
        if fault in ("throttle", "server_error"):
            assert info.write
        if fault in ("log_cut", "log_disconnect"):
            assert info.log_follow
        if fault == "stall":
            assert info.log_follow or info.watch
    with pytest.raises(ValueError, match="unknown fault 'restrat'"):
        parse_fault_list("log_cut,restrat")

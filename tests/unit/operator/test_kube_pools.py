"""Log follows have their own connection pool, and run traffic never takes the connections
reserved for the Lease: a hundred open follows or a burst of slow calls cannot freeze either."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from agentrun_kube.client import TimeoutApiClient
from agentrun_operator.kube_io import RESERVED_CONNECTIONS, Kube
from aiohttp import web
from kubernetes_asyncio import client

CONTROL_POOL = 8


class Server:
    """Pod log follows that never end, a list that hangs while ``hang`` is clear, a Lease."""

    def __init__(self) -> None:
        self.hang = asyncio.Event()
        self.follows = 0
        self.hanging = 0

    async def log(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        self.follows += 1
        await response.write(b"2026-01-01T00:00:00Z hello\n")
        await asyncio.Event().wait()  # follow=true: open for the run's life
        return response

    async def pods(self, request: web.Request) -> web.Response:
        if request.query.get("labelSelector") == "slow":
            self.hanging += 1
            await self.hang.wait()
        return web.json_response({"kind": "PodList", "items": []})

    async def lease(self, request: web.Request) -> web.Response:
        return web.json_response({"kind": "Lease", "metadata": {"name": request.match_info["n"]}})


@pytest.fixture
async def kube() -> AsyncIterator[tuple[Kube, Server]]:
    server = Server()
    app = web.Application()
    app.router.add_get("/api/v1/namespaces/ns/pods/{pod}/log", server.log)
    app.router.add_get("/api/v1/namespaces/ns/pods", server.pods)
    app.router.add_get("/apis/coordination.k8s.io/v1/namespaces/ns/leases/{n}", server.lease)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    configuration = client.Configuration(host=f"http://127.0.0.1:{port}")
    configuration.connection_pool_maxsize = CONTROL_POOL
    api = TimeoutApiClient(configuration)
    k = Kube(api)
    try:
        yield k, server
    finally:
        server.hang.set()
        await k.close_log_pool()
        await api.close()
        await runner.cleanup()


async def follow(k: Kube, pod: str) -> None:
    async for _ in k.stream_pod_log("ns", pod, "runner", since_seconds=None):
        pass


async def test_open_follows_leave_the_control_pool_free(kube: tuple[Kube, Server]) -> None:
    k, server = kube
    k.size_log_pool(3 * CONTROL_POOL)
    follows = [asyncio.create_task(follow(k, f"p{i}")) for i in range(2 * CONTROL_POOL)]
    try:
        for _ in range(200):
            if server.follows == len(follows):
                break
            await asyncio.sleep(0.02)
        assert server.follows == len(follows)  # more follows than the control pool holds
        # A status read or patch still goes through at once.
        assert await asyncio.wait_for(k.list_pods("ns", "fast"), 5) == []
    finally:
        for task in follows:
            task.cancel()
        await asyncio.gather(*follows, return_exceptions=True)


async def test_log_pool_is_sized_by_the_configured_concurrency(kube: tuple[Kube, Server]) -> None:
    k, server = kube
    k.size_log_pool(3)
    follows = [asyncio.create_task(follow(k, f"p{i}")) for i in range(5)]
    try:
        await asyncio.sleep(0.5)
        assert server.follows == 3  # the others wait for a log-pool connection, not a control one
        assert await asyncio.wait_for(k.list_pods("ns", "fast"), 5) == []
    finally:
        for task in follows:
            task.cancel()
        await asyncio.gather(*follows, return_exceptions=True)


async def test_a_burst_of_slow_calls_leaves_the_lease_its_connections(
    kube: tuple[Kube, Server],
) -> None:
    k, server = kube
    slow = [asyncio.create_task(k.list_pods("ns", "slow")) for _ in range(3 * CONTROL_POOL)]
    try:
        await asyncio.sleep(0.5)
        assert server.hanging == CONTROL_POOL - RESERVED_CONNECTIONS
        # The Lease renewal uses the same client directly: it finds a reserved connection.
        leases = client.CoordinationV1Api(k.api)
        lease = await asyncio.wait_for(leases.read_namespaced_lease("op", "ns"), 5)
        assert lease.metadata.name == "op"
    finally:
        server.hang.set()
        await asyncio.gather(*slow, return_exceptions=True)

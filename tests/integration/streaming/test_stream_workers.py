"""``agentrun api --workers 2``: two worker processes serve one port; each keeps one transcript
watch per streamed run however many of its clients follow it, live events reach every client of
both, SIGTERM drains both and exits 0, and a worker that dies takes the API down (exit 1) so
Kubernetes restarts the pod whole."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from agentrun_devcluster.system import free_port_range
from agentrun_devcluster.testing import ClusterThread

from .conftest import FAST_STREAM, REPO_ROOT, Seeder, free_port

pytestmark = pytest.mark.slow

WORKERS = 2
CLIENTS = 24


class WorkersAPI:
    """``agentrun api --workers N`` as a child process."""

    def __init__(self, kubeconfig: Path, workers: int) -> None:
        self.port = free_port()
        self.metrics_base = free_port_range(workers)
        self.workers = workers
        self.base_url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "AGENTRUN_API_HOST": "127.0.0.1",
            "AGENTRUN_API_PORT": str(self.port),
            "AGENTRUN_API_METRICS_PORT": str(self.metrics_base),
            "AGENTRUN_API_KUBECONFIG": str(kubeconfig),
            "AGENTRUN_API_AUTH_ENABLED": "false",
            "AGENTRUN_API_LOG_LEVEL": "WARNING",
            "AGENTRUN_API_STREAM__HEARTBEAT_SECONDS": str(FAST_STREAM.heartbeat_seconds),
            "AGENTRUN_API_STREAM__UPSTREAM_IDLE_SECONDS": "0.2",
            "AGENTRUN_API_STREAM__DRAIN_SECONDS": "2",
        }
        env.pop("AGENTRUN_API_WORKERS", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agentrun_cli.main", "api", "--workers", str(workers)],
            env=env,
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def worker_pids(self) -> list[int]:
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        return [
            int(pid)
            for pid in children.split()
            if b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes()
        ]

    async def metric(self, worker: int, name: str) -> float:
        async with httpx.AsyncClient(timeout=5) as http:
            text = (await http.get(f"http://127.0.0.1:{self.metrics_base + worker}/metrics")).text
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
        raise KeyError(name)

    async def wait_ready(self) -> None:
        deadline = time.monotonic() + 90
        async with httpx.AsyncClient(timeout=1) as http:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                    raise RuntimeError(f"API exited {self.proc.returncode}: {err[-2000:]}")
                with contextlib.suppress(httpx.HTTPError, KeyError):
                    if (await http.get(self.base_url + "/livez")).status_code == 200:
                        for worker in range(self.workers):
                            await self.metric(worker, "agentrun_api_stream_clients")
                        return
                await asyncio.sleep(0.1)
        raise RuntimeError("API workers not ready")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterThread]:
    with ClusterThread() as running:
        yield running


@pytest.fixture
async def workers_api(cluster: ClusterThread) -> AsyncIterator[WorkersAPI]:
    api = WorkersAPI(cluster.kubeconfig, WORKERS)
    try:
        await api.wait_ready()
        yield api
    finally:
        api.stop()


async def _follow(url: str, first_seen: asyncio.Event, lines: list[str]) -> None:
    """Read one stream to its end, recording its lines; set ``first_seen`` at the first id."""
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(30, read=30)) as http,
        http.stream("GET", url) as response,
    ):
        assert response.status_code == 200
        async for line in response.aiter_lines():
            lines.append(line)
            if line.startswith("id: "):
                first_seen.set()


async def test_two_workers_one_watch_per_run_each_and_every_client_served(
    cluster: ClusterThread, workers_api: WorkersAPI
) -> None:
    assert len(workers_api.worker_pids()) == WORKERS
    seeder = Seeder(cluster.base_url)
    try:
        run = await seeder.run()
        await run.log("backlog")
        url = f"{workers_api.base_url}/api/v1/runs/{run.job_id}/stream"
        seen = [asyncio.Event() for _ in range(CLIENTS)]
        received: list[list[str]] = [[] for _ in range(CLIENTS)]
        readers = [asyncio.create_task(_follow(url, seen[i], received[i])) for i in range(CLIENTS)]
        async with asyncio.timeout(30):
            await asyncio.gather(*(event.wait() for event in seen))

        clients = [
            await workers_api.metric(w, "agentrun_api_stream_clients") for w in range(WORKERS)
        ]
        watches = [
            await workers_api.metric(w, "agentrun_api_stream_watches_opened_total")
            for w in range(WORKERS)
        ]
        upstreams = [
            await workers_api.metric(w, "agentrun_api_stream_upstreams") for w in range(WORKERS)
        ]
        assert sum(clients) == CLIENTS, clients
        for worker in range(WORKERS):
            # one upstream, one watch for the run in each worker that has its clients
            expected = 1 if clients[worker] else 0
            assert upstreams[worker] == expected, (worker, clients, upstreams)
            assert watches[worker] == expected, (worker, clients, watches)

        live = await run.log("live after every client connected")
        done = await run.finish()
        async with asyncio.timeout(30):
            await asyncio.gather(*readers)
        for lines in received:
            assert f"id: {live}" in lines
            assert f"id: {done}" in lines
            assert lines[-1] == "data: [DONE]" or "data: [DONE]" in lines
    finally:
        await seeder.aclose()

    workers = workers_api.worker_pids()
    workers_api.proc.send_signal(signal.SIGTERM)
    assert workers_api.proc.wait(30) == 0
    for pid in workers:
        assert _gone(pid), f"worker {pid} still runs"


async def test_a_worker_that_dies_stops_the_api(workers_api: WorkersAPI) -> None:
    victim, survivor = workers_api.worker_pids()
    os.kill(victim, signal.SIGKILL)
    assert workers_api.proc.wait(30) == 1
    deadline = time.monotonic() + 10
    while not _gone(survivor):
        assert time.monotonic() < deadline, "the other worker kept serving"
        await asyncio.sleep(0.1)


def _gone(pid: int) -> bool:
    """The process has exited (reaped, or a zombie awaiting its parent)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "State:\tZ" in status

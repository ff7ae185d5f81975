"""Benchmark of the submission API against the emulated cluster (issue 3).

Prints, from one run against the same emulated apiserver:

1. ``POST /api/v1/runs`` latency p50/p99 (through an ``agentrun api`` process), and a direct
   AgentRun create with the same client library (kubernetes_asyncio) p50/p99, and their ratio
   (target <= 1.3x);
2. the run cache's memory at N runs: the RSS of an API process serving a namespace of N runs
   against one serving an empty namespace, plus the cache's own allocations (tracemalloc);
3. ``GET /api/v1/runs`` (newest first, page of 100) latency at N runs.

Usage: ``python bench/bench_api_submit.py`` (200 submits, 10,000 runs) or ``--smoke`` (CI size).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import socket
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from agentrun_api.fingerprint import request_fingerprint
from agentrun_api.run_cache import RunCache
from agentrun_api.runs_repository import RunsRepository, build_agentrun
from agentrun_api.submission import parse_submission
from agentrun_contract import names
from agentrun_contract.resource import GROUP, PLURAL, VERSION
from agentrun_kube.client import load_api_client
from kubernetes_asyncio import client

REPO_ROOT = Path(__file__).resolve().parents[1]
PROMPT = "Summarise the quarterly sales figures and flag anomalies. " * 4


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class APIProcess:
    def __init__(self, kubeconfig: Path, namespace: str, **extra_env: str) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "AGENTRUN_API_HOST": "127.0.0.1",
            "AGENTRUN_API_PORT": str(self.port),
            "AGENTRUN_API_METRICS_PORT": "0",
            "AGENTRUN_API_KUBECONFIG": str(kubeconfig),
            "AGENTRUN_API_NAMESPACE": namespace,
            "AGENTRUN_API_AUTH_ENABLED": "false",
            "AGENTRUN_API_LOG_LEVEL": "WARNING",
            "AGENTRUN_API_CACHE_SYNC_TIMEOUT_SECONDS": "600",
            **extra_env,
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agentrun_api.main"],
            env=env,
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def wait_synced(self) -> None:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            try:
                health = httpx.get(self.base_url + "/health", timeout=5)
                if health.status_code == 200 and health.json()["cache_synced"]:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("API did not become ready")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)


EMULATOR_SCRIPT = """
import sys
from agentrun_devcluster.testing import ClusterThread
with ClusterThread(watch_window=int(sys.argv[1])) as cluster:
    print(cluster.kubeconfig, flush=True)
    sys.stdin.read()  # until the benchmark closes our stdin
"""


class EmulatorProcess:
    """The emulated apiserver in its own process, so that the direct creates and the API's
    creates both cross a process boundary, as they would against a real apiserver."""

    def __init__(self, watch_window: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", EMULATOR_SCRIPT, str(watch_window)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=REPO_ROOT,
        )
        assert self.proc.stdout is not None
        self.kubeconfig = Path(self.proc.stdout.readline().strip())
        if not self.kubeconfig.is_file():
            raise RuntimeError("the emulator did not start")

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def create_namespace(api: client.ApiClient, name: str) -> None:
    await client.CoreV1Api(api).create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name))
    )


def agentrun_body(i: int) -> dict[str, Any]:
    request = parse_submission(
        {"prompt": f"{PROMPT} #{i}", "session_id": f"s{i % 50}"},
        header_key=None,
        frameworks=["praisonai"],
        timeout_max=86400,
    )
    return build_agentrun(
        names.run_name_for_key("bench", None), request, request_fingerprint(request), "bench"
    )


class SubmitTimes:
    """Latencies in seconds, one of each per submit, measured interleaved."""

    def __init__(self) -> None:
        self.direct: list[float] = []
        self.posts: list[float] = []
        self.hops: list[float] = []
        """``GET /livez`` on the API process: the HTTP hop and the framework, no work."""
        self.work: list[float] = []
        """The submission's pure work, in this process: parse and validate the body,
        fingerprint it, build the AgentRun."""


def submission_work(i: int) -> float:
    started = time.perf_counter()
    agentrun_body(i)
    return time.perf_counter() - started


async def time_submits(kubeconfig: Path, namespace: str, base_url: str, n: int) -> SubmitTimes:
    """Interleaved, sequential: one direct create, one POST, one ``GET /livez`` and the
    submission's pure work, n times (so load changes on this shared machine hit every side
    alike).

    Both sides use the same HTTP client library, aiohttp (kubernetes_asyncio's transport), so
    the ratio measures the API, not a difference between HTTP clients; the hop and the work
    say where the difference goes."""
    api = await load_api_client(str(kubeconfig))
    objects = client.CustomObjectsApi(api)
    times = SubmitTimes()
    direct, posts = times.direct, times.posts
    try:
        async with aiohttp.ClientSession(base_url=base_url) as http:
            for i in range(n):
                body = agentrun_body(i)
                started = time.perf_counter()
                await objects.create_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, body
                )
                direct.append(time.perf_counter() - started)
                payload = {"prompt": f"{PROMPT} #{i}", "session_id": f"s{i % 50}"}
                started = time.perf_counter()
                async with http.post("/api/v1/runs", json=payload) as response:
                    await response.read()
                posts.append(time.perf_counter() - started)
                if response.status != 202:
                    raise RuntimeError(await response.text())
                started = time.perf_counter()
                async with http.get("/livez") as response:
                    await response.read()
                times.hops.append(time.perf_counter() - started)
                times.work.append(submission_work(i))
    finally:
        await api.close()
    return times


async def fill_namespace(kubeconfig: Path, namespace: str, n: int) -> float:
    """Create n AgentRuns (16 in flight); returns the seconds it took."""
    api = await load_api_client(str(kubeconfig))
    objects = client.CustomObjectsApi(api)
    semaphore = asyncio.Semaphore(16)

    async def one(i: int) -> None:
        async with semaphore:
            await objects.create_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, agentrun_body(i)
            )

    started = time.perf_counter()
    try:
        await asyncio.gather(*(one(i) for i in range(n)))
    finally:
        await api.close()
    return time.perf_counter() - started


async def cache_allocations(kubeconfig: Path, namespace: str) -> tuple[int, int]:
    """(records, bytes) held by a RunCache after a full list, measured with tracemalloc."""
    api = await load_api_client(str(kubeconfig))
    try:
        cache = RunCache(RunsRepository(api, namespace))
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        await cache.list_all()
        gc.collect()
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        held = sum(s.size_diff for s in after.compare_to(before, "filename"))
        return len(cache), held
    finally:
        await api.close()


def time_lists(base_url: str, n: int) -> list[float]:
    timings = []
    with httpx.Client(base_url=base_url, timeout=30) as http:
        for i in range(n):
            started = time.perf_counter()
            response = http.get("/api/v1/runs", params={"page": 1 + i % 5, "page_size": 100})
            timings.append(time.perf_counter() - started)
            response.raise_for_status()
    return timings


def time_posts(base_url: str, n: int) -> list[float]:
    timings = []
    with httpx.Client(base_url=base_url, timeout=30) as http:
        for i in range(n):
            started = time.perf_counter()
            response = http.post("/api/v1/runs", json={"prompt": f"{PROMPT} crowded #{i}"})
            timings.append(time.perf_counter() - started)
            response.raise_for_status()
    return timings


def ms(values: list[float], q: float) -> str:
    return f"{percentile(values, q) * 1000:7.2f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="CI size (fast)")
    parser.add_argument("--submits", type=int, default=None)
    parser.add_argument("--runs", type=int, default=None, help="runs for the cache figures")
    args = parser.parse_args()
    submits = args.submits or (30 if args.smoke else 200)
    runs = args.runs or (300 if args.smoke else 10_000)

    cluster = EmulatorProcess(watch_window=max(20_000, runs * 2))
    try:

        async def setup() -> None:
            api = await load_api_client(str(cluster.kubeconfig))
            try:
                for ns in ("bench-direct", "bench-post", "bench-cache", "bench-empty"):
                    await create_namespace(api, ns)
            finally:
                await api.close()

        asyncio.run(setup())

        # 1. submit latency: API process vs direct create, same emulator, same client library
        api_proc = APIProcess(cluster.kubeconfig, "bench-post")
        try:
            api_proc.wait_synced()
            asyncio.run(time_submits(cluster.kubeconfig, "bench-direct", api_proc.base_url, 5))
            times = asyncio.run(
                time_submits(cluster.kubeconfig, "bench-direct", api_proc.base_url, submits)
            )
            direct, posts = times.direct, times.posts
        finally:
            api_proc.stop()
        print(f"submits: {submits} sequential, each side, against one emulated apiserver")
        print(f"  POST /api/v1/runs     p50 {ms(posts, 50)}   p99 {ms(posts, 99)}")
        print(f"  direct AgentRun create p50 {ms(direct, 50)}   p99 {ms(direct, 99)}")
        ratio50 = percentile(posts, 50) / percentile(direct, 50)
        ratio99 = percentile(posts, 99) / percentile(direct, 99)
        print(
            f"  ratio                  p50 {ratio50:6.2f}x      p99 {ratio99:6.2f}x  (target <= 1.3x)"
        )
        overhead = (percentile(posts, 50) - percentile(direct, 50)) * 1000
        hop = percentile(times.hops, 50) * 1000
        work = percentile(times.work, 50) * 1000
        print(f"  API overhead at p50: {overhead:.2f} ms, of which:")
        print(f"    HTTP hop + framework (GET /livez on the API) p50 {hop:.2f} ms")
        print(f"    submission work (validate, fingerprint, build) p50 {work:.2f} ms")
        print(
            f"    the rest (auth, cache lookup, request and response bodies) "
            f"{overhead - hop - work:.2f} ms"
        )

        # 2. cache memory at `runs` runs
        fill_seconds = asyncio.run(fill_namespace(cluster.kubeconfig, "bench-cache", runs))
        print(f"cache: {runs} AgentRuns created in {fill_seconds:.1f} s")
        records, held = asyncio.run(cache_allocations(cluster.kubeconfig, "bench-cache"))
        print(
            f"  RunCache allocations (tracemalloc): {held / 1024 / 1024:.2f} MiB for {records} "
            f"runs = {held / max(records, 1):.0f} B/run"
        )
        empty = APIProcess(cluster.kubeconfig, "bench-empty")
        # every run is queued (no operator): raise the backpressure limit above them, so the
        # POSTs below are accepted (the count is still computed for each)
        full = APIProcess(
            cluster.kubeconfig, "bench-cache", AGENTRUN_API_MAX_QUEUED_RUNS=str(10 * runs)
        )
        try:
            empty.wait_synced()
            full.wait_synced()
            time.sleep(1)
            rss_empty, rss_full = rss_kib(empty.proc.pid), rss_kib(full.proc.pid)
            print(
                f"  API process RSS: {rss_full / 1024:.1f} MiB with {runs} runs vs "
                f"{rss_empty / 1024:.1f} MiB empty (+{(rss_full - rss_empty) / 1024:.1f} MiB)"
            )
            lists = time_lists(full.base_url, 20 if args.smoke else 100)
            print(
                f"  GET /api/v1/runs?page_size=100 at {runs} runs: p50 {ms(lists, 50)} "
                f"p99 {ms(lists, 99)}"
            )
            crowded = time_posts(full.base_url, 20 if args.smoke else 100)
            print(
                f"  POST /api/v1/runs at {runs} runs (queue position and backpressure count "
                f"kept in an index): p50 {ms(crowded, 50)} p99 {ms(crowded, 99)}"
            )
        finally:
            empty.stop()
            full.stop()
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

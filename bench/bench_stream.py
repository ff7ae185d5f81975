"""Benchmark of the SSE stream fan-out against ``agentrun api`` (issue 6 and issue 12.6).

N SSE clients spread over R live runs (default 1,000 over 10), against the emulated cluster, for
each worker count asked (``--workers 1,2``: one API process, then two worker processes sharing
the port). Prints, per worker count, from one run:

1. first-event latency (connect -> first ``id:`` line) p50/p99 for the burst of N clients
   connecting at once (target p99 < 100 ms), and for clients joining one at a time while the N
   are connected; as in-run comparisons, one client at a time against the idle API (opening the
   run's upstream, and joining an open one), and the same burst of N plain ``GET /livez``
   requests (the HTTP stack alone), with the API's CPU seconds for each burst;
2. live fan-out latency: one event written to each run's transcript -> received by every
   client, p50/p99;
3. upstream watches per run per process (target 1: one watch per run however many clients),
   from each worker's /metrics;
4. the API's RSS (all workers) idle and with N clients connected (per client);
5. seconds until every upstream is released after all clients disconnect.

The clients are asyncio protocols on uvloop when installed (as light as a Python client gets),
in this one process: on a small machine their own CPU is part of every latency printed, the
/livez burst shows how much.

Usage: ``python bench/bench_stream.py --burst 1000`` (the default) or ``--smoke`` (CI size).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, cast

import httpx
from agentrun_contract import names, resource
from agentrun_contract.stream import StreamEvent, encode_transcript
from agentrun_devcluster.system import free_port_range
from agentrun_devcluster.testing import ClusterThread

REPO_ROOT = Path(__file__).resolve().parents[1]
NS = "default"
RUNS = f"/apis/{resource.GROUP}/{resource.VERSION}/namespaces/{NS}/{resource.PLURAL}"
CHUNKS = f"/apis/{resource.GROUP}/{resource.VERSION}/namespaces/{NS}/{resource.TRANSCRIPT_PLURAL}"
MERGE = {"Content-Type": "application/merge-patch+json"}
BACKLOG_EVENTS = 5


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def ms(values: list[float]) -> str:
    if not values:
        return "n/a"
    return (
        f"p50 {percentile(values, 50) * 1000:7.1f} ms  p99 {percentile(values, 99) * 1000:7.1f} ms"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _PlainGet(asyncio.Protocol):
    def __init__(self, request: bytes) -> None:
        self.request = request
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: no isinstance check
        cast(asyncio.Transport, transport).write(self.request)

    def data_received(self, data: bytes) -> None:
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def plain_get(port: int, path: str) -> float:
    """One request on a fresh connection (until the server closes it), on the same client as
    the streams."""
    started = time.perf_counter()
    request = f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode()
    protocol = _PlainGet(request)
    await asyncio.get_running_loop().create_connection(lambda: protocol, "127.0.0.1", port)
    await protocol.done
    return time.perf_counter() - started


def _events(first: int, count: int, tag: str) -> list[StreamEvent]:
    return [
        StreamEvent(id=i, event="log", data={"message": f"{tag} {i}", "stream": "stdout"})
        for i in range(first, first + count)
    ]


async def seed_runs(http: httpx.AsyncClient, count: int) -> list[str]:
    """R runs, each with a transcript of BACKLOG_EVENTS events and no `complete` (live)."""
    names_: list[str] = []
    stamp = int(time.time())
    for r in range(count):
        name = f"run-bench{stamp}x{r}"
        created = await http.post(
            RUNS,
            json={
                "apiVersion": resource.API_VERSION,
                "kind": resource.KIND,
                "metadata": {"name": name},
                "spec": {"prompt": "bench"},
            },
        )
        created.raise_for_status()
        chunk = {
            "apiVersion": resource.API_VERSION,
            "kind": resource.TRANSCRIPT_KIND,
            "metadata": {
                "name": names.transcript_chunk_name(name, 0),
                "labels": {names.LABEL_RUN: name},
            },
            "spec": {
                "runName": name,
                "index": 0,
                "firstEventId": 1,
                "lastEventId": BACKLOG_EVENTS,
                "events": encode_transcript(_events(1, BACKLOG_EVENTS, "backlog")),
            },
        }
        (await http.post(CHUNKS, json=chunk)).raise_for_status()
        names_.append(name)
    return names_


async def append_live_event(http: httpx.AsyncClient, run: str) -> None:
    events = _events(1, BACKLOG_EVENTS, "backlog") + _events(BACKLOG_EVENTS + 1, 1, "live-marker")
    patched = await http.patch(
        f"{CHUNKS}/{names.transcript_chunk_name(run, 0)}",
        json={"spec": {"lastEventId": BACKLOG_EVENTS + 1, "events": encode_transcript(events)}},
        headers=MERGE,
    )
    patched.raise_for_status()


class Client(asyncio.Protocol):
    """One SSE client on a raw connection: as light as possible, so the API is what is measured."""

    def __init__(self, port: int, job_id: str) -> None:
        self.port = port
        self.job_id = job_id
        self.first_event: float | None = None
        self.live_at: float | None = None
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self._first: asyncio.Future[float] | None = None

    async def connect(self) -> float:
        """Seconds from starting to connect to the first event received."""
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        self._first = loop.create_future()
        await loop.create_connection(lambda: self, "127.0.0.1", self.port)
        return await self._first - started

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(
            f"GET /api/v1/runs/{self.job_id}/stream HTTP/1.1\r\nHost: bench\r\n"
            "Accept: text/event-stream\r\n\r\n".encode()
        )

    def data_received(self, data: bytes) -> None:
        if self.first_event is None:
            self.buffer += data
            if b"id: " in self.buffer:
                self.first_event = time.perf_counter()
                if self._first is not None and not self._first.done():
                    self._first.set_result(self.first_event)
            return
        self.buffer = self.buffer[-64:] + data
        if self.live_at is None and b"live-marker" in self.buffer:
            self.live_at = time.perf_counter()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._first is not None and not self._first.done():
            self._first.set_exception(RuntimeError(f"stream closed early: {self.buffer[:200]!r}"))

    async def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def metric(metrics_url: str, name: str) -> float:
    async with httpx.AsyncClient(timeout=10) as http:
        text = (await http.get(metrics_url)).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise KeyError(name)


async def metric_per_worker(api: API, name: str) -> list[float]:
    return list(await asyncio.gather(*(metric(url, name) for url in api.metrics_urls)))


async def wait_until(predicate: Any, within: float, step: float = 0.05) -> bool:
    """Poll ``predicate`` (sync or async) until true or ``within`` seconds pass."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return True
        await asyncio.sleep(step)
    return False


class API:
    """``agentrun api`` as a child process, with ``workers`` worker processes."""

    def __init__(self, kubeconfig: Path, workers: int) -> None:
        self.workers = workers
        self.port = free_port()
        metrics_base = free_port_range(workers)
        self.metrics_urls = [f"http://127.0.0.1:{metrics_base + i}/metrics" for i in range(workers)]
        env = {
            **os.environ,
            "AGENTRUN_API_HOST": "127.0.0.1",
            "AGENTRUN_API_PORT": str(self.port),
            "AGENTRUN_API_METRICS_PORT": str(metrics_base),
            "AGENTRUN_API_WORKERS": str(workers),
            "AGENTRUN_API_KUBECONFIG": str(kubeconfig),
            "AGENTRUN_API_AUTH_ENABLED": "false",
            "AGENTRUN_API_LOG_LEVEL": "WARNING",
            "AGENTRUN_API_STREAM__UPSTREAM_IDLE_SECONDS": "1",
            "AGENTRUN_API_STREAM__HEARTBEAT_SECONDS": "2",
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agentrun_api.main"],
            env=env,
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def pids(self) -> list[int]:
        """The processes serving (the parent and its workers)."""
        found = [self.proc.pid]
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        for pid in children.read_text().split():
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"resource_tracker" not in cmdline:
                found.append(int(pid))
        return found

    def rss_kib(self) -> int:
        return sum(rss_kib(pid) for pid in self.pids())

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids())

    async def ready(self) -> bool:
        """/livez answers and every worker's metrics are up."""
        try:
            async with httpx.AsyncClient(timeout=1) as http:
                if (await http.get(f"http://127.0.0.1:{self.port}/livez")).status_code != 200:
                    return False
                for url in self.metrics_urls:
                    (await http.get(url)).raise_for_status()
        except httpx.HTTPError:
            return False
        return True

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


async def _no_upstreams(api: API) -> bool:
    return sum(await metric_per_worker(api, "agentrun_api_stream_upstreams")) == 0


async def bench(
    cluster: ClusterThread, api: API, clients: int, runs: int, joiners: int
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    if not await wait_until(api.ready, within=90, step=0.1):
        raise RuntimeError("API did not start")
    port = api.port
    async with httpx.AsyncClient(base_url=cluster.base_url, timeout=30) as http:
        run_names = await seed_runs(http, runs)
        job_ids = [names.job_id_for_run_name(n) for n in run_names]
        results["rss_idle_kib"] = api.rss_kib()

        # comparison, same run: one client at a time against the idle API; "cold" opens the
        # run's upstream (reads the run and its chunks), "warm" joins an open one (with several
        # workers the second client may land on another worker: then it is cold too)
        cold: list[float] = []
        warm: list[float] = []
        opened: list[Client] = []
        for job_id in job_ids:
            first = Client(port, job_id)
            cold.append(await first.connect())
            second = Client(port, job_id)
            warm.append(await second.connect())
            opened += [first, second]
        for one in opened:
            await one.close()
        await wait_until(lambda: _no_upstreams(api), within=30)
        watches_before = await metric_per_worker(api, "agentrun_api_stream_watches_opened_total")

        # comparison, same run: the same burst against GET /livez (the HTTP stack alone)
        cpu_before = api.cpu_seconds()
        livez = await asyncio.gather(*(plain_get(port, "/livez") for _ in range(clients)))
        results["livez_cpu_seconds"] = api.cpu_seconds() - cpu_before

        # the burst: N clients at once, spread over R runs
        cpu_before = api.cpu_seconds()
        crowd = [Client(port, job_ids[i % len(job_ids)]) for i in range(clients)]
        burst = await asyncio.gather(*(c.connect() for c in crowd))
        results["burst_cpu_seconds"] = api.cpu_seconds() - cpu_before
        # joiners: one at a time while the crowd is connected
        joined: list[float] = []
        for i in range(joiners):
            extra = Client(port, job_ids[i % len(job_ids)])
            joined.append(await extra.connect())
            crowd.append(extra)
        results["rss_loaded_kib"] = api.rss_kib()
        watches_after = await metric_per_worker(api, "agentrun_api_stream_watches_opened_total")
        results["watches_per_worker"] = [
            after - before for before, after in zip(watches_before, watches_after, strict=True)
        ]
        results["upstreams_per_worker"] = await metric_per_worker(
            api, "agentrun_api_stream_upstreams"
        )
        results["clients_per_worker"] = await metric_per_worker(api, "agentrun_api_stream_clients")

        # live fan-out: one event per run -> every client
        written: dict[str, float] = {}
        for run, job_id in zip(run_names, job_ids, strict=True):
            written[job_id] = time.perf_counter()
            await append_live_event(http, run)
        await wait_until(lambda: all(c.live_at is not None for c in crowd), within=60)
        live = [c.live_at - written[c.job_id] for c in crowd if c.live_at is not None]
        results["live_missing"] = sum(1 for c in crowd if c.live_at is None)

        for c in crowd:
            await c.close()
        left_at = time.monotonic()
        released = await wait_until(lambda: _no_upstreams(api), within=30, step=0.1)
        results.update(
            cold=cold,
            warm=warm,
            livez=list(livez),
            burst=list(burst),
            joined=joined,
            live=live,
            release_seconds=time.monotonic() - left_at if released else None,
        )
    return results


def _new_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (the API's extra installs it): a lighter client."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def report(r: dict[str, Any], clients: int, runs: int, joiners: int, workers: int) -> bool:
    """Print one worker count's figures; True when its checks hold."""
    label = "one API process" if workers == 1 else f"{workers} API worker processes"
    print(f"stream fan-out: {clients} SSE clients over {runs} live runs, {label}")
    print(f"  first event, idle API, new upstream:    {ms(r['cold'])}  (reads run + chunks)")
    print(f"  first event, idle API, open upstream:   {ms(r['warm'])}")
    print(
        f"  GET /livez, burst of {clients:5d} at once:    {ms(r['livez'])}  "
        f"(API CPU {r['livez_cpu_seconds']:.2f} s; the HTTP stack alone)"
    )
    print(
        f"  first event, burst of {clients:5d} at once:   {ms(r['burst'])}  "
        f"(API CPU {r['burst_cpu_seconds']:.2f} s; target p99 < 100 ms)"
    )
    print(f"  first event, joining {clients:5d} open:      {ms(r['joined'])}")
    print(f"  live event -> every client:             {ms(r['live'])}  missing {r['live_missing']}")
    watches = r["watches_per_worker"]
    upstreams = r["upstreams_per_worker"]
    per_run = [w / u for w, u in zip(watches, upstreams, strict=True) if u] or [0.0]
    print(
        f"  upstream watches opened: {sum(watches):.0f} over {workers} process(es) "
        f"(per process {', '.join(f'{w:.0f}' for w in watches)}; runs served "
        f"{', '.join(f'{u:.0f}' for u in upstreams)}; clients "
        f"{', '.join(f'{c:.0f}' for c in r['clients_per_worker'])})"
    )
    print(f"  upstream watches per run per process: {max(per_run):.2f} (target 1)")
    per_client = (r["rss_loaded_kib"] - r["rss_idle_kib"]) / (clients + joiners)
    print(
        f"  API RSS: idle {r['rss_idle_kib'] / 1024:.1f} MiB, with {clients + joiners} clients "
        f"{r['rss_loaded_kib'] / 1024:.1f} MiB ({per_client:.1f} KiB per client)"
    )
    released = r["release_seconds"]
    print(
        "  upstreams released after all clients left: "
        + (f"{released:.1f} s" if released is not None else "NOT within 30 s")
    )
    # a worker the kernel handed no client has no upstream and opened no watch
    one_watch_per_run = sum(upstreams) > 0 and all(
        w == u and u <= runs for w, u in zip(watches, upstreams, strict=True)
    )
    return one_watch_per_run and r["live_missing"] == 0 and released is not None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="CI size: 50 clients over 5 runs")
    parser.add_argument(
        "--burst",
        "--clients",
        dest="burst",
        type=int,
        default=None,
        help="SSE clients connecting at once (default 1,000)",
    )
    parser.add_argument("--runs", type=int, default=None, help="live runs (default 10)")
    parser.add_argument(
        "--workers", default="1,2", help="worker counts to measure, comma-separated (1,2)"
    )
    args = parser.parse_args()
    clients = args.burst or (50 if args.smoke else 1000)
    runs = args.runs or (5 if args.smoke else 10)
    joiners = 10 if args.smoke else 50
    worker_counts = [int(w) for w in args.workers.split(",")]
    ok = True
    with ClusterThread() as cluster:
        for workers in worker_counts:
            api = API(cluster.kubeconfig, workers)
            try:
                with asyncio.Runner(loop_factory=_new_loop) as runner:
                    r = runner.run(bench(cluster, api, clients, runs, joiners))
            finally:
                api.stop()
            ok = report(r, clients, runs, joiners, workers) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark of the SSE stream fan-out (issue 6) against one ``agentrun api`` process.

N concurrent SSE clients spread over R live runs (default 1,000 over 10), against the emulated
cluster. Prints, from one run:

1. first-event latency (connect -> first ``id:`` line) p50/p99 for the whole burst of N clients
   connecting at once, and for clients joining one at a time while the N are connected
   (target p99 < 100 ms); as in-run comparisons, one client at a time against the idle process
   (opening the run's upstream, and joining an open one), and the same burst of N plain
   ``GET /livez`` requests (the HTTP stack alone);
2. live fan-out latency: one event written to each run's transcript -> received by every
   client, p50/p99;
3. upstream watches opened by the API process (target: R, one per run however many clients)
   and upstreams open, from its /metrics;
4. the API process's RSS idle and with N clients connected (per client);
5. seconds until every upstream is released after all clients disconnect.

Usage: ``python bench/bench_stream.py`` (1,000 clients, 10 runs) or ``--smoke`` (CI size).
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
from typing import Any

import httpx
from agentrun_contract import names, resource
from agentrun_contract.stream import StreamEvent, encode_transcript
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


async def plain_get(port: int, path: str) -> float:
    """One request on a fresh connection, on the same raw-socket client as the streams."""
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
    await reader.read()
    writer.close()
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


class Client:
    """One SSE client on a raw socket: as light as possible, so the API is what is measured."""

    def __init__(self, port: int, job_id: str) -> None:
        self.port = port
        self.job_id = job_id
        self.first_event: float | None = None
        self.live_at: float | None = None
        self.buffer = b""
        self.task: asyncio.Task[None] | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> float:
        started = time.perf_counter()
        reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write(
            f"GET /api/v1/runs/{self.job_id}/stream HTTP/1.1\r\nHost: bench\r\n"
            "Accept: text/event-stream\r\n\r\n".encode()
        )
        while b"id: " not in self.buffer:
            data = await reader.read(65536)
            if not data:
                raise RuntimeError(f"stream closed early: {self.buffer[:200]!r}")
            self.buffer += data
        self.first_event = time.perf_counter()
        self.task = asyncio.create_task(self._follow(reader))
        return self.first_event - started

    async def _follow(self, reader: asyncio.StreamReader) -> None:
        while True:
            data = await reader.read(65536)
            if not data:
                return
            self.buffer = self.buffer[-64:] + data
            if self.live_at is None and b"live-marker" in self.buffer:
                self.live_at = time.perf_counter()

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.writer is not None:
            self.writer.close()


async def metric(metrics_url: str, name: str) -> float:
    async with httpx.AsyncClient(timeout=10) as http:
        text = (await http.get(metrics_url)).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise KeyError(name)


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


def start_api(kubeconfig: Path) -> tuple[subprocess.Popen[bytes], int, int]:
    port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        "AGENTRUN_API_HOST": "127.0.0.1",
        "AGENTRUN_API_PORT": str(port),
        "AGENTRUN_API_METRICS_PORT": str(metrics_port),
        "AGENTRUN_API_KUBECONFIG": str(kubeconfig),
        "AGENTRUN_API_AUTH_ENABLED": "false",
        "AGENTRUN_API_LOG_LEVEL": "WARNING",
        "AGENTRUN_API_STREAM__UPSTREAM_IDLE_SECONDS": "1",
        "AGENTRUN_API_STREAM__HEARTBEAT_SECONDS": "2",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentrun_api.main"],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return proc, port, metrics_port


async def _live(port: int) -> bool:
    try:
        async with httpx.AsyncClient(timeout=1) as http:
            return (await http.get(f"http://127.0.0.1:{port}/livez")).status_code == 200
    except httpx.HTTPError:
        return False


async def bench(
    cluster: ClusterThread,
    proc: subprocess.Popen[bytes],
    port: int,
    metrics_port: int,
    clients: int,
    runs: int,
    joiners: int,
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    if not await wait_until(lambda: _live(port), within=60, step=0.1):
        raise RuntimeError("API did not start")
    async with httpx.AsyncClient(base_url=cluster.base_url, timeout=30) as http:
        run_names = await seed_runs(http, runs)
        job_ids = [names.job_id_for_run_name(n) for n in run_names]
        results["rss_idle_kib"] = rss_kib(proc.pid)

        # comparison, same run: one client at a time against the idle process; "cold" opens
        # the run's upstream (reads the run and its chunks), "warm" joins an open one
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
        await wait_until(
            lambda: _equals(metric(metrics_url, "agentrun_api_stream_upstreams"), 0), within=30
        )
        watches_before = await metric(metrics_url, "agentrun_api_stream_watches_opened_total")

        # comparison, same run: the same burst against GET /livez (the HTTP stack alone)
        cpu_before = cpu_seconds(proc.pid)
        livez = await asyncio.gather(*(plain_get(port, "/livez") for _ in range(clients)))
        results["livez_cpu_seconds"] = cpu_seconds(proc.pid) - cpu_before

        # the burst: N clients at once, spread over R runs
        cpu_before = cpu_seconds(proc.pid)
        crowd = [Client(port, job_ids[i % len(job_ids)]) for i in range(clients)]
        burst = await asyncio.gather(*(c.connect() for c in crowd))
        results["burst_cpu_seconds"] = cpu_seconds(proc.pid) - cpu_before
        # joiners: one at a time while the crowd is connected
        joined: list[float] = []
        for i in range(joiners):
            extra = Client(port, job_ids[i % len(job_ids)])
            joined.append(await extra.connect())
            crowd.append(extra)
        results["rss_loaded_kib"] = rss_kib(proc.pid)
        results["watches_opened"] = (
            await metric(metrics_url, "agentrun_api_stream_watches_opened_total") - watches_before
        )
        results["upstreams_open"] = await metric(metrics_url, "agentrun_api_stream_upstreams")
        results["clients_open"] = await metric(metrics_url, "agentrun_api_stream_clients")

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
        released = await wait_until(
            lambda: _equals(metric(metrics_url, "agentrun_api_stream_upstreams"), 0),
            within=30,
            step=0.1,
        )
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


async def _equals(value: Any, expected: float) -> bool:
    return bool(await value == expected)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="CI size: 50 clients over 5 runs")
    parser.add_argument("--clients", type=int, default=None)
    parser.add_argument("--runs", type=int, default=None)
    args = parser.parse_args()
    clients = args.clients or (50 if args.smoke else 1000)
    runs = args.runs or (5 if args.smoke else 10)
    joiners = 10 if args.smoke else 50
    with ClusterThread() as cluster:
        proc, port, metrics_port = start_api(cluster.kubeconfig)
        try:
            r = asyncio.run(bench(cluster, proc, port, metrics_port, clients, runs, joiners))
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
    print(f"stream fan-out: {clients} SSE clients over {runs} live runs, one API process")
    print(f"  first event, idle API, new upstream:    {ms(r['cold'])}  (reads run + chunks)")
    print(f"  first event, idle API, open upstream:   {ms(r['warm'])}")
    print(
        f"  GET /livez, burst of {clients:5d} at once:    {ms(r['livez'])}  "
        f"(API CPU {r['livez_cpu_seconds']:.2f} s; the HTTP stack alone)"
    )
    print(
        f"  first event, burst of {clients:5d} at once:   {ms(r['burst'])}  "
        f"(API CPU {r['burst_cpu_seconds']:.2f} s)"
    )
    print(
        f"  first event, joining {clients:5d} open:      {ms(r['joined'])}  (target p99 < 100 ms)"
    )
    print(f"  live event -> every client:             {ms(r['live'])}  missing {r['live_missing']}")
    print(
        f"  upstream watches opened: {r['watches_opened']:.0f} (target {runs}); "
        f"upstreams open {r['upstreams_open']:.0f}; clients open {r['clients_open']:.0f}"
    )
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
    ok = r["watches_opened"] == runs and r["live_missing"] == 0 and released is not None
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

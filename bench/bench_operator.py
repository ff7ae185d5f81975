"""Operator benchmark on the emulated cluster: AgentRun -> Job.

Prints, for each creation rate (AgentRuns/s): reconcile latency p50/p99 (the client's create
of the AgentRun -> the Job's ADDED event on a watch), sustained AgentRun -> Job throughput, API
requests per run (the operator's own counter), operator CPU-seconds per run; and the operator's
RSS with N AgentRuns stored (10,000 at full size).

The comparison measured in the same run: the same client creating AgentRuns *and* their Jobs
itself (no operator), which is what the emulated apiserver allows on these shared cores; the
operator is not the bottleneck when its throughput is close to that baseline.

Only the apiserver runs (no Job controller or kubelet): pods would measure process spawning,
not the operator. The concurrency limit is raised so admission never holds runs back.

    python bench/bench_operator.py            # full: 20, 50, 100 runs/s for 10 s; 10,000 stored
    python bench/bench_operator.py --smoke    # CI: 20 runs/s for 2 s; 300 stored
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from agentrun_devcluster.system import (
    free_port,
    operator_env,
    start_process,
    stop_process,
    wait_http_ok,
)
from agentrun_devcluster.testing import ClusterThread

NS = "default"
RUNS = f"/apis/agentrun.dev/v1alpha1/namespaces/{NS}/agentruns"
JOBS = f"/apis/batch/v1/namespaces/{NS}/jobs"
CLK = os.sysconf("SC_CLK_TCK")


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def proc_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def operator_requests(metrics_url: str) -> float:
    text = httpx.get(metrics_url, timeout=5).text
    for line in text.splitlines():
        if line.startswith("agentrun_operator_api_requests_total "):
            return float(line.split()[1])
    return 0.0


class JobWatcher:
    """Records when each Job's ADDED event arrives (a watch from the benchmark's own thread)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.seen: dict[str, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        rv = ""
        with httpx.Client(base_url=self.base_url, timeout=None) as http:
            listing = http.get(JOBS).json()
            rv = listing["metadata"].get("resourceVersion", "")
            for job in listing.get("items") or []:
                self.seen.setdefault(job["metadata"]["name"], time.monotonic())
            while not self.stop.is_set():
                params = {"watch": "true", "resourceVersion": rv, "timeoutSeconds": "5"}
                with http.stream("GET", JOBS, params=params) as resp:
                    for line in resp.iter_lines():
                        if not line:
                            continue
                        event = json.loads(line)
                        obj = event.get("object") or {}
                        rv = (obj.get("metadata") or {}).get("resourceVersion", rv)
                        if event.get("type") == "ADDED":
                            self.seen.setdefault(obj["metadata"]["name"], time.monotonic())


def agentrun(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "agentrun.dev/v1alpha1",
        "kind": "AgentRun",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"prompt": "bench", "timeoutSeconds": 600},
    }


def create_at_rate(
    base_url: str, prefix: str, rate: float, seconds: float, with_job: bool = False
) -> dict[str, float]:
    """Create AgentRuns at ``rate``/s for ``seconds``; returns name -> creation time."""
    created: dict[str, float] = {}
    total = int(rate * seconds)
    start = time.monotonic()
    with httpx.Client(base_url=base_url, timeout=30) as http:
        for i in range(total):
            due = start + i / rate
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            name = f"{prefix}-{i:05d}"
            r = http.post(RUNS, json=agentrun(name))
            r.raise_for_status()
            created[name] = time.monotonic()
            if with_job:
                job = {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "metadata": {"name": name, "namespace": NS},
                    "spec": {
                        "template": {
                            "spec": {
                                "restartPolicy": "Never",
                                "containers": [
                                    {"name": "runner", "image": "x", "command": ["true"]}
                                ],
                            }
                        }
                    },
                }
                http.post(JOBS, json=job).raise_for_status()
    return created


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def seed_stored(base_url: str, count: int) -> None:
    """``count`` finished AgentRuns (terminal status, transcript complete)."""
    with httpx.Client(base_url=base_url, timeout=30) as http:
        for i in range(count):
            name = f"stored-{i:05d}"
            http.post(RUNS, json=agentrun(name)).raise_for_status()
            http.patch(
                f"{RUNS}/{name}/status",
                content=json.dumps(
                    {"status": {"phase": "Succeeded", "transcript": {"complete": True}}}
                ),
                headers={"Content-Type": "application/merge-patch+json"},
            ).raise_for_status()


def start_operator(kubeconfig: Path, workdir: Path) -> tuple[Any, int, int]:
    """An operator process for the benchmark: no leader election, no concurrency limit."""
    health, metrics_port = free_port(), free_port()
    env = operator_env(
        kubeconfig=kubeconfig,
        namespace=NS,
        public_base_url="http://127.0.0.1:9",
        runner_command=["true"],
        health_port=health,
        metrics_port=metrics_port,
    )
    env.update(
        {
            "AGENTRUN_OPERATOR_MAX_CONCURRENT_RUNS": "1000000",
            "AGENTRUN_OPERATOR_LEADER_ELECTION__ENABLED": "false",
            "AGENTRUN_OPERATOR_LOG_LEVEL": "WARNING",
            "AGENTRUN_OPERATOR_RESYNC_SECONDS": "30",
        }
    )
    proc = start_process(
        [sys.executable, "-m", "agentrun_cli.main", "operator"], env, workdir / "op.log"
    )
    wait_http_ok(f"http://127.0.0.1:{health}/livez", 60, proc, workdir / "op.log")
    return proc, health, metrics_port


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="CI size")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    rates = [20.0] if args.smoke else [20.0, 50.0, 100.0]
    seconds = 2.0 if args.smoke else 10.0
    stored = 300 if args.smoke else 10_000

    with ClusterThread() as cluster:
        base = cluster.base_url
        # Baseline: the client alone creating AgentRun + Job pairs (no operator).
        t0 = time.monotonic()
        pairs = create_at_rate(base, "base", 1000.0, 1.0 if args.smoke else 3.0, with_job=True)
        baseline = len(pairs) / (time.monotonic() - t0)
        print(f"baseline (no operator): {baseline:.0f} AgentRun+Job pairs/s created by one client")
        for name in pairs:  # the operator must not see them as runs to execute
            httpx.delete(f"{base}{RUNS}/{name}")

        workdir = Path(tempfile.mkdtemp(prefix="agentrun-bench-"))

        # RSS: an operator on an empty namespace, then one started with `stored` finished
        # AgentRuns in it (it lists and watches them all).
        proc, _, _ = start_operator(cluster.kubeconfig, workdir)
        time.sleep(3.0)
        rss_empty = proc_rss_mib(proc.pid)
        stop_process(proc)
        t_seed = time.monotonic()
        seed_stored(base, stored)
        seeded_in = time.monotonic() - t_seed
        proc, _health, metrics_port = start_operator(cluster.kubeconfig, workdir)
        time.sleep(5.0)
        print(
            f"operator RSS: {rss_empty:.1f} MiB with no AgentRuns, "
            f"{proc_rss_mib(proc.pid):.1f} MiB with {stored} finished AgentRuns stored "
            f"(seeded in {seeded_in:.1f} s)"
        )
        try:
            metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
            watcher = JobWatcher(base)
            time.sleep(1.0)
            print(
                f"{'rate/s':>7} {'runs':>5} {'p50 ms':>8} {'p99 ms':>8} {'jobs/s':>7} "
                f"{'req/run':>8} {'cpu ms/run':>10}"
            )
            for rate in rates:
                cpu0, req0 = proc_cpu_seconds(proc.pid), operator_requests(metrics_url)
                start = time.monotonic()
                created = create_at_rate(base, f"r{int(rate)}", rate, seconds)
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline and not all(n in watcher.seen for n in created):
                    time.sleep(0.05)
                # let the runs settle (status patches after the Job) before reading counters
                time.sleep(1.0)
                done = [n for n in created if n in watcher.seen]
                last = max((watcher.seen[n] for n in done), default=start)
                latencies = [(watcher.seen[n] - created[n]) * 1000 for n in done]
                throughput = len(done) / max(last - start, 1e-9)
                cpu = proc_cpu_seconds(proc.pid) - cpu0
                requests = operator_requests(metrics_url) - req0
                print(
                    f"{rate:7.0f} {len(done):5d} {pct(latencies, 0.5):8.1f} {pct(latencies, 0.99):8.1f} "
                    f"{throughput:7.1f} {requests / max(len(created), 1):8.1f} "
                    f"{1000 * cpu / max(len(created), 1):10.1f}"
                )
                if len(done) < len(created):
                    print(f"  {len(created) - len(done)} runs got no Job within 60 s")
            watcher.stop.set()
            print(
                "latency is end to end: client create -> operator watch -> Job create -> "
                "benchmark watch, all through the emulated apiserver on the same cores"
            )
        finally:
            stop_process(proc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

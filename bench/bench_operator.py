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

Then the scale run (``--queued N --running M``): N + M AgentRuns at once, at most M running
(``maxConcurrentRuns``), on the emulated cluster with its Job controller and kubelet; each runner
is a shell script that prints two log lines a second (and a progress event every five) for a
while, then its result, so finished runs keep admitting queued ones. Leader election is on.
Over the start-up and a steady window it prints: the operator's CPU per second, event-loop lag
p99 (the operator's own ``agentrun_operator_event_loop_lag_seconds``: how late its timers ran;
and the ``/livez`` round trip, timed by a probe process of its own), Lease renew interval p99 and any renewal missed, RSS,
and per finished run the apiserver requests and the bytes the operator sent (counted by the
emulator), with the transcript bytes the runs produced for comparison. The admission itself is
measured in-process at the same queue size against the algorithm it replaced (sort the waiting
runs on every check, each queued run checking every resync).

    python bench/bench_operator.py            # full: 20, 50, 100 runs/s for 10 s; 10,000 stored;
                                              # scale: 10,000 queued, 100 running
    python bench/bench_operator.py --smoke    # CI: 20 runs/s for 2 s; 300 stored; 200 queued, 10 running
    python bench/bench_operator.py --queued 10000 --running 100 --scale-only
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from agentrun_devcluster.apiserver.traffic import Traffic, TrafficCounter
from agentrun_devcluster.system import (
    ControlledCluster,
    free_port,
    operator_env,
    start_process,
    stop_process,
    wait_http_ok,
)
from agentrun_devcluster.testing import ClusterThread
from agentrun_operator.admission import Admission

NS = "default"
RUNS = f"/apis/agentrun.dev/v1alpha1/namespaces/{NS}/agentruns"
JOBS = f"/apis/batch/v1/namespaces/{NS}/jobs"
CLK = os.sysconf("SC_CLK_TCK")
OPERATOR_TOKEN = "agentrun-dev-token"
"""The token of the emulator's kubeconfig, which the operator uses."""


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def proc_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def operator_requests(metrics_url: str) -> float:
    return metric_sum(metrics_url, "agentrun_operator_api_requests_total")


def metric_sum(metrics_url: str, name: str) -> float:
    """The sum of a Prometheus metric's samples over all label sets (``name`` may end with
    the start of a label set, e.g. ``metric{phase="Queued"``)."""
    text = httpx.get(metrics_url, timeout=5).text
    total = 0.0
    for line in text.splitlines():
        if (
            line.startswith(name + " ")
            or line.startswith(name + "{")
            or ("{" in name and line.startswith(name))
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


LOOP_LAG = "agentrun_operator_event_loop_lag_seconds"


def histogram_buckets(metrics_url: str, name: str, labels: str = "") -> dict[float, float]:
    """A Prometheus histogram's cumulative bucket counts (upper bound -> count); ``labels``:
    the start of its label set (``generation="2",``)."""
    text = httpx.get(metrics_url, timeout=5).text
    buckets: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "_bucket{" + labels):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            buckets[float(bound)] = float(line.rsplit(" ", 1)[1])
    return buckets


def histogram_quantile(
    before: dict[float, float], after: dict[float, float], q: float
) -> tuple[float, int]:
    """The q-quantile of the observations made between two readings of a histogram, linearly
    interpolated within its bucket as Prometheus' ``histogram_quantile`` does; and how many
    observations there were. +Inf when the quantile lies past the last finite bound."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0.0
    if total <= 0:
        return 0.0, 0
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, cumulative in zip(bounds, counts, strict=True):
        if cumulative >= rank:
            if bound == float("inf"):
                return float("inf"), int(total)
            inside = cumulative - below
            fraction = (rank - below) / inside if inside else 1.0
            return lower + (bound - lower) * fraction, int(total)
        lower, below = bound, cumulative
    return float("inf"), int(total)


INF = float("inf")


def gc_pauses(metrics_url: str) -> dict[str, dict[float, float]]:
    """The operator's garbage-collection pause histogram, by generation."""
    return {
        g: histogram_buckets(
            metrics_url, "agentrun_operator_gc_pause_seconds", f'generation="{g}",'
        )
        for g in ("0", "1", "2")
    }


def gc_summary(generation: str, before: dict[float, float], after: dict[float, float]) -> str:
    count = int(after.get(INF, 0.0) - before.get(INF, 0.0))
    if not count:
        return f"generation {generation}: none"
    ceiling = histogram_ceiling(before, after) * 1000
    return f"generation {generation}: {count}, all under {ceiling:.0f} ms"


def histogram_ceiling(before: dict[float, float], after: dict[float, float]) -> float:
    """The smallest bucket bound that every observation between two readings is under."""
    total = after.get(float("inf"), 0.0) - before.get(float("inf"), 0.0)
    for bound in sorted(after):
        if after[bound] - before.get(bound, 0.0) >= total:
            return bound
    return float("inf")


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
    parser.add_argument("--queued", type=int, help="scale run: queued AgentRuns")
    parser.add_argument("--running", type=int, help="scale run: maxConcurrentRuns")
    parser.add_argument("--window", type=float, help="scale run: seconds measured")
    parser.add_argument("--scale-only", action="store_true", help="only the scale run")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    queued = args.queued if args.queued is not None else (200 if args.smoke else 10_000)
    running = args.running if args.running is not None else (10 if args.smoke else 100)
    window = args.window if args.window is not None else (10.0 if args.smoke else 60.0)
    run_seconds = 4 if args.smoke else 20
    settle_cap = 60.0 if args.smoke else 300.0
    if args.scale_only:
        scale(queued, running, window, run_seconds, settle_cap)
        return 0
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
    scale(queued, running, window, run_seconds, settle_cap)
    return 0


# ---------------------------------------------------------------------------------------------
# Scale: N queued and M running


def runner_script(seconds: int) -> str:
    """A runner that speaks the event format from sh (no Python per pod): two log lines a
    second, a progress event every five, then its result."""
    return (
        "seq=0\n"
        'emit() { printf \'{"agentrun":1,"type":"%s","run_id":"%s","nonce":"%s",'
        '"seq":%d,"ts":"2026-01-01T00:00:00Z","data":%s}\\n\' "$1" "$AGENTRUN_RUN_ID" '
        '"$AGENTRUN_NONCE" "$seq" "$2"; seq=$((seq+1)); }\n'
        'emit start \'{"framework":"praisonai"}\'\n'
        "i=0\n"
        f'while [ "$i" -lt {seconds} ]; do\n'
        '  emit log "{\\"message\\":\\"step $i: the agent reads the quarterly sales data '
        'and thinks about it\\",\\"stream\\":\\"stdout\\"}"\n'
        '  emit log "{\\"message\\":\\"step $i: tool call returned 42 rows\\",'
        '\\"stream\\":\\"stdout\\"}"\n'
        '  if [ $((i % 5)) -eq 0 ]; then emit progress "{\\"percentage\\":'
        f'$((i * 100 / {seconds})),\\"current_step\\":\\"step $i\\"}}"; fi\n'
        "  i=$((i+1))\n"
        "  sleep 1\n"
        "done\n"
        'emit result \'{"index":0,"count":1,"text":"the bench result"}\'\n'
    )


LIVEZ_PROBE = """
import sys, time, httpx
url, path = sys.argv[1], sys.argv[2]
with httpx.Client(timeout=10) as http, open(path, "a", buffering=1) as out:
    while True:
        t0 = time.monotonic()
        try:
            http.get(url).raise_for_status()
            ms = (time.monotonic() - t0) * 1000
        except httpx.HTTPError:
            ms = 10_000.0
        out.write(f"{t0} {ms}\\n")
        time.sleep(max(0.0, 0.1 - (time.monotonic() - t0)))
"""
"""Times /livez every 0.1 s from a process of its own: this benchmark's process also runs the
emulator, whose threads would delay a probe run here (the GIL) and inflate the figure."""


class Sampler:
    """/livez latency (the operator's loop lag, plus a local HTTP round trip; from a probe
    process), and from its own thread Lease renewals as observed and the operator's RSS."""

    def __init__(self, pid: int, health_url: str, base_url: str, lease: str) -> None:
        self.pid = pid
        self.health_url = health_url
        self.lease_url = f"{base_url}/apis/coordination.k8s.io/v1/namespaces/{NS}/leases/{lease}"
        self.livez_path = Path(tempfile.mkdtemp(prefix="agentrun-livez-")) / "livez.txt"
        self.probe: subprocess.Popen[bytes] | None = None
        self.apiserver_ms: list[float] = []
        self.version_url = f"{base_url}/version"
        self.renewals: list[float] = []  # monotonic time each new renewTime was first seen
        self.rss: list[float] = []
        self.holders: set[str] = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.probe = subprocess.Popen(
            [sys.executable, "-c", LIVEZ_PROBE, self.health_url, str(self.livez_path)]
        )
        self.thread.start()

    def finish(self) -> None:
        self.stop.set()
        self.thread.join()
        if self.probe is not None:
            self.probe.terminate()
            self.probe.wait(timeout=10)

    def livez(self, since: float, until: float) -> list[float]:
        """/livez round trips (ms) started between two monotonic times."""
        if not self.livez_path.exists():
            return []
        samples = []
        for line in self.livez_path.read_text().splitlines():
            started, ms = (float(field) for field in line.split())
            if since <= started < until:
                samples.append(ms)
        return samples

    def mark(self) -> tuple[float, int, int, int]:
        """Where the samples are now (to split start-up from the steady window)."""
        return (time.monotonic(), len(self.renewals), len(self.rss), len(self.apiserver_ms))

    def figures(
        self, start: tuple[float, int, int, int] | int, end: tuple[float, int, int, int] | None
    ) -> tuple[list[float], list[float], list[float], list[float]]:
        """(/livez ms, renewal times, RSS MiB, apiserver /version ms) between two marks
        (0: the start, None: now)."""
        a = start if isinstance(start, tuple) else (0.0, 0, 0, 0)
        b = end or self.mark()
        return (
            self.livez(a[0], b[0]),
            self.renewals[max(0, a[1] - 1) : b[1]],
            self.rss[a[2] : b[2]],
            self.apiserver_ms[a[3] : b[3]],
        )

    def _run(self) -> None:
        last_renew = None
        next_lease = next_rss = 0.0
        with httpx.Client(timeout=10) as http:
            while not self.stop.is_set():
                t0 = now = time.monotonic()
                if now >= next_lease:
                    next_lease = now + 0.2
                    t1 = time.monotonic()
                    try:
                        http.get(self.version_url).raise_for_status()
                        self.apiserver_ms.append((time.monotonic() - t1) * 1000)
                    except httpx.HTTPError:
                        self.apiserver_ms.append(10_000.0)
                    try:
                        spec = http.get(self.lease_url).json().get("spec") or {}
                    except (httpx.HTTPError, ValueError):
                        spec = {}
                    renew = spec.get("renewTime")
                    if renew and renew != last_renew:
                        last_renew = renew
                        self.renewals.append(time.monotonic())
                        self.holders.add(str(spec.get("holderIdentity")))
                if now >= next_rss:
                    next_rss = now + 1.0
                    self.rss.append(proc_rss_mib(self.pid))
                self.stop.wait(max(0.0, 0.1 - (time.monotonic() - t0)))


def create_runs(base_url: str, count: int) -> float:
    """Create ``count`` AgentRuns as fast as one client can; returns the seconds it took."""
    t0 = time.monotonic()
    with httpx.Client(base_url=base_url, timeout=30) as http:
        for i in range(count):
            http.post(RUNS, json=agentrun(f"s-{i:05d}")).raise_for_status()
    return time.monotonic() - t0


def operator_traffic(traffic: TrafficCounter) -> Traffic:
    """Everything the operator process sent and received (its kubeconfig's token: kopf, its
    API clients), without the dev cluster's controllers (a token of their own) nor this
    benchmark (no token)."""
    return traffic.total(user=OPERATOR_TOKEN)


def request_kinds(traffic: TrafficCounter) -> dict[str, int]:
    """The operator's requests by "verb resource"."""
    kinds: dict[str, int] = {}
    for (user, _, verb, resource), entry in list(traffic.entries.items()):
        if user == OPERATOR_TOKEN:
            kinds[f"{verb} {resource}"] = kinds.get(f"{verb} {resource}", 0) + entry.requests
    return kinds


def written_to(traffic: TrafficCounter, resource: str) -> int:
    return traffic.total(
        user=OPERATOR_TOKEN,
        verbs=frozenset({"create", "update", "patch"}),
        resource=resource,
    ).request_bytes


def admission_comparison(queued: int, running: int, resync: float) -> tuple[float, float]:
    """CPU seconds per second of admission with ``queued`` waiting and ``running`` slots, a
    slot freeing every ``1/running``-th of a second: (this admission, the replaced one).

    The replaced one: every queued run's task called try_admit every ``resync`` seconds, and
    each call sorted all waiting runs and looked the name up in the sorted list."""
    rng = random.Random(1)
    names = [f"run-{i:06d}" for i in range(queued)]
    keys = {n: (float(1_700_000_000 + i // 7), n) for i, n in enumerate(names)}

    # The replaced algorithm: checks per second = queued / resync.
    waiting = dict(keys)
    checks = max(1, int(queued / resync))
    t0 = time.process_time()
    for _ in range(checks):
        name = rng.choice(names)
        order = [n for n, _ in sorted(waiting.items(), key=lambda kv: kv[1])]
        if name in order:
            order.index(name)
    old = time.process_time() - t0

    # This one: per second, ``running / run seconds`` slots free; each wakes the head,
    # which is admitted; new runs join at the tail. Measured for one simulated second with
    # a slot freeing 10 times a second per 100 running (runs of ~10 s).
    async def one_second() -> float:
        woken: list[str] = []
        admission = Admission(NS, running, _NoJobs(), woken.append)  # type: ignore[arg-type]
        admission.primed = True
        for n in names:
            admission.enqueue(n, keys[n])
        head = list(names[:running])
        for n in head:
            assert await admission.try_admit(n)
            admission.created(n, {"metadata": {"name": n}, "status": {}})
        frees = max(1, running // 10)
        t1 = time.process_time()
        for k in range(frees):
            done = head[k]
            admission.observe_job(done, None)
            admission.notify()
            for n in list(woken):
                if await admission.try_admit(n):
                    admission.created(n, {"metadata": {"name": n}, "status": {}})
            woken.clear()
            newcomer = f"new-{k:06d}"
            admission.enqueue(newcomer, (2_000_000_000.0, newcomer))
            admission.position(newcomer)
        return time.process_time() - t1

    new = asyncio.run(one_second())
    return new, old


class _NoJobs:
    async def list_jobs(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        return []


LEASE_DURATION_SECONDS = 15.0
LEASE_RENEW_SECONDS = 5.0
"""The chart's defaults (leader election on)."""


def scale(queued: int, running: int, window: float, run_seconds: int, settle_cap: float) -> None:
    total = queued + running
    new_cpu, old_cpu = admission_comparison(queued, running, resync=10.0)
    print(
        f"admission CPU per second at {queued} queued, {running} slots: "
        f"{new_cpu * 1000:.3f} ms/s (replaced algorithm: {old_cpu * 1000:.1f} ms/s, "
        f"{old_cpu / max(new_cpu, 1e-9):.0f}x)"
    )
    traffic = TrafficCounter()
    cluster = ControlledCluster()
    cluster.server.add_middleware(traffic.middleware)
    workdir = Path(tempfile.mkdtemp(prefix="agentrun-bench-scale-"))
    with cluster:
        base = cluster.base_url
        httpx.post(
            f"{base}/api/v1/namespaces/{NS}/secrets",
            json={
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "agentrun-llm-credentials"},
                "stringData": {"OPENAI_API_KEY": "bench-not-a-key"},
            },
        ).raise_for_status()
        created_in = create_runs(base, total)
        health, metrics_port = free_port(), free_port()
        env = operator_env(
            kubeconfig=cluster.kubeconfig,
            namespace=NS,
            public_base_url="http://127.0.0.1:9",
            runner_command=["sh", "-c", runner_script(run_seconds)],
            health_port=health,
            metrics_port=metrics_port,
        )
        env.update(
            {
                "AGENTRUN_OPERATOR_MAX_CONCURRENT_RUNS": str(running),
                "AGENTRUN_OPERATOR_LOG_LEVEL": "WARNING",
                "AGENTRUN_OPERATOR_LEADER_ELECTION__LEASE_DURATION_SECONDS": str(
                    LEASE_DURATION_SECONDS
                ),
                "AGENTRUN_OPERATOR_LEADER_ELECTION__RENEW_SECONDS": str(LEASE_RENEW_SECONDS),
                "AGENTRUN_OPERATOR_TERMINATION_GRACE_PERIOD_SECONDS": "2",
            }
        )
        log_path = workdir / "op.log"
        proc = start_process([sys.executable, "-m", "agentrun_cli.main", "operator"], env, log_path)
        sampler = Sampler(proc.pid, f"http://127.0.0.1:{health}/livez", base, "agentrun-operator")
        try:
            wait_http_ok(f"http://127.0.0.1:{health}/livez", 60, proc, log_path)
            metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
            t_start = time.monotonic()
            sampler.start()
            lag_start = histogram_buckets(metrics_url, LOOP_LAG)
            gc_start = gc_pauses(metrics_url)
            # Start-up: every queued run written Queued once (a status patch, a transcript
            # chunk, the phase label and an Event each), then the steady state.
            while time.monotonic() - t_start < settle_cap and proc.poll() is None:
                written = metric_sum(
                    metrics_url, 'agentrun_operator_phase_transitions_total{phase="Queued"'
                )
                if written >= queued:
                    break
                time.sleep(1.0)
            time.sleep(5.0)
            startup = time.monotonic() - t_start
            at_steady = sampler.mark()
            lag_steady = histogram_buckets(metrics_url, LOOP_LAG)
            gc_steady = gc_pauses(metrics_url)
            before = operator_traffic(traffic)
            kinds0 = request_kinds(traffic)
            transcripts0 = written_to(traffic, "agentruntranscripts")
            status0 = written_to(traffic, "agentruns/status")
            finished0 = metric_sum(metrics_url, "agentrun_operator_runs_finished_total")
            appended0 = metric_sum(metrics_url, "agentrun_operator_transcript_bytes_written_total")
            cpu0 = proc_cpu_seconds(proc.pid)
            time.sleep(window)
            cpu = proc_cpu_seconds(proc.pid) - cpu0
            after = operator_traffic(traffic)
            kinds = request_kinds(traffic)
            finished = metric_sum(metrics_url, "agentrun_operator_runs_finished_total") - finished0
            appended = (
                metric_sum(metrics_url, "agentrun_operator_transcript_bytes_written_total")
                - appended0
            )
            transcripts = written_to(traffic, "agentruntranscripts") - transcripts0
            status = written_to(traffic, "agentruns/status") - status0
            depth = metric_sum(metrics_url, "agentrun_operator_queue_depth")
            lag_end = histogram_buckets(metrics_url, LOOP_LAG)
            gc_end = gc_pauses(metrics_url)
        except (httpx.HTTPError, ProcessLookupError, FileNotFoundError) as exc:
            tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
            print(f"scale: the operator stopped answering ({exc}); its log ends:\n{tail}")
            lag, renewals, rss, apiserver = sampler.figures(0, None)
            print(
                f"  until then: event-loop lag p99 {pct(lag, 0.99):.1f} ms, max "
                f"{max(lag, default=0):.0f} ms; apiserver /version p99 {pct(apiserver, 0.99):.1f}"
                f" ms, max {max(apiserver, default=0):.0f} ms; RSS {max(rss, default=0):.1f} MiB"
            )
            return
        finally:
            sampler.finish()
            stop_process(proc)

    runs = max(finished, 1.0)
    print(
        f"scale: {queued} queued + {running} running (created in {created_in:.1f} s; "
        f"operator start-up {startup:.1f} s); steady window {window:.0f} s, "
        f"{finished:.0f} runs finished, {depth:.0f} still queued"
    )
    for label, (lag, renewals, rss, apiserver), (lag0, lag1), (gc0, gc1) in (
        ("start-up", sampler.figures(0, at_steady), (lag_start, lag_steady), (gc_start, gc_steady)),
        ("steady", sampler.figures(at_steady, None), (lag_steady, lag_end), (gc_steady, gc_end)),
    ):
        gaps = [b - a for a, b in itertools.pairwise(renewals)]
        missed = sum(1 for g in gaps if g > LEASE_DURATION_SECONDS)
        loop99, samples = histogram_quantile(lag0, lag1, 0.99)
        loop_max = histogram_ceiling(lag0, lag1)
        print(
            f"  {label + ':':10}event-loop lag p99 {loop99 * 1000:.1f} ms (the operator's "
            f"{LOOP_LAG}, {samples} samples, all under {loop_max * 1000:.0f} ms); /livez "
            f"round trip p99 {pct(lag, 0.99):.1f} ms, p50 {pct(lag, 0.5):.1f} ms (from a probe "
            f"process); Lease renew p99 {pct(gaps, 0.99):.2f} s "
            f"(every {LEASE_RENEW_SECONDS:.0f} s nominal; {len(gaps)} renewals, {missed} missed, "
            f"holders {len(sampler.holders)}); RSS {max(rss, default=0.0):.1f} MiB; "
            f"apiserver /version p99 {pct(apiserver, 0.99):.1f} ms"
        )
        print(
            f"  {'':10}garbage collections (agentrun_operator_gc_pause_seconds): "
            + "; ".join(gc_summary(g, gc0[g], gc1[g]) for g in sorted(gc1))
        )
    print(f"  operator CPU            {cpu / window:.3f} s/s")
    print(
        f"  apiserver requests/run  {(after.requests - before.requests) / runs:.1f} "
        f"(bytes sent/run {(after.request_bytes - before.request_bytes) / runs / 1024:.1f} KiB, "
        f"received/run {(after.response_bytes - before.response_bytes) / runs / 1024:.1f} KiB)"
    )
    per_kind = sorted(
        ((n - kinds0.get(k, 0)) / runs, k) for k, n in kinds.items() if n > kinds0.get(k, 0)
    )[::-1]
    print("  requests/run by kind    " + ", ".join(f"{k} {n:.1f}" for n, k in per_kind[:8]))
    print(
        f"  transcript bytes/run    written {transcripts / runs / 1024:.1f} KiB for "
        f"{appended / runs / 1024:.1f} KiB of events ({transcripts / max(appended, 1):.2f}x); "
        f"status patches {status / runs / 1024:.1f} KiB/run"
    )


if __name__ == "__main__":
    raise SystemExit(main())

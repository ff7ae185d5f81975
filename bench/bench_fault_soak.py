"""Fault soak: runs through the whole dev system while the apiserver throws every fault it can.

On a DevSystem (emulated cluster, fake Job controller and kubelet, the operator and the API as
processes, the tiny runner): N runs with mixed outcomes (success with a result of 0.1 to 40 KB,
agent_error, timeout, cancel through the API, and a Job deleted during a watch-history
compaction), submitted and cancelled through the API with an Idempotency-Key and retries as a
client does, each with a signed webhook to a local receiver. Meanwhile the emulated apiserver
fires every fault of agentrun_devcluster.apiserver.faults at random (seeded), and the operator
is SIGKILLed and restarted K times (DevSystem.restart_operator). A process that dies on its own
is restarted, as its Deployment would, and counted.

Then, faults off, it checks and prints: every run terminal with the right status and reason;
every succeeded run's full result (GET /result) equal to the tiny runner's deterministic answer;
every transcript complete (each log line once, one ``complete`` last) with ids 1..n; Jobs per
run (from a watch faults never hit: 0 duplicates); webhooks (at least one per run, one
webhook-id per run, signature verified, status and reason right); runs stuck.

    python bench/bench_fault_soak.py [--runs 200] [--kills 5] [--seed S] [--smoke]

Exit code 1 when a check fails. The seed is printed; ``--seed`` replays the same plan and fault
choices (their timing still varies). ``--smoke`` (or AGENTRUN_BENCH_SMOKE=1) is 12 runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from agentrun_contract import names
from agentrun_contract.stream import StreamEvent, decode_transcript
from agentrun_devcluster.apiserver.faults import SYSTEM_TOKEN, APIFault, ChaosConfig
from agentrun_devcluster.system import DevSystem, SyncKube
from agentrun_devcluster.tiny_runner import sized_result
from agentrun_webhooks.receiver import WebhookReceiver, payload_of

NS = "default"
GROUP = f"/apis/agentrun.dev/v1alpha1/namespaces/{NS}"
RUNS, CHUNKS = f"{GROUP}/agentruns", f"{GROUP}/agentruntranscripts"
JOBS = f"/apis/batch/v1/namespaces/{NS}/jobs"
PODS = f"/api/v1/namespaces/{NS}/pods"
TERMINAL = {"Succeeded", "Failed", "Cancelled"}
OUTCOMES = {  # kind: (weight, phase, reason)
    "success": (0.55, "Succeeded", None),
    "agent_error": (0.15, "Failed", "agent_error"),
    "timeout": (0.10, "Failed", "timeout"),
    "cancel": (0.12, "Cancelled", "cancelled"),
    "job_deleted": (0.08, "Failed", "job_deleted"),
}
OPERATOR_ENV = {
    "AGENTRUN_OPERATOR_MAX_CONCURRENT_RUNS": "16",
    # Test-sized like TEST_OPERATOR_ENV's, in proportion: a half-open call is abandoned after
    # 3 s, so a Lease renewal can be retried within the renew deadline.
    "AGENTRUN_OPERATOR_KUBE_REQUEST_TIMEOUT_SECONDS": "3",
    "AGENTRUN_OPERATOR_LEADER_ELECTION__LEASE_DURATION_SECONDS": "6",
    "AGENTRUN_OPERATOR_WEBHOOK__RETRY_SCHEDULE_SECONDS": "[0, 1, 2, 4, 4, 4, 4, 4, 4, 4]",
    "AGENTRUN_OPERATOR_WEBHOOK__JITTER_RATIO": "0",
}


@dataclass
class Run:
    index: int
    kind: str
    prompt: str
    timeout: int
    lines: int
    result: str | None
    act_after: float  # cancel / delete the Job this long after submission
    key: str = ""
    job_id: str = ""
    name: str = ""
    submitted_at: float = 0.0
    terminal_at: float | None = None
    acted: bool = False

    @property
    def expected(self) -> tuple[str, str | None]:
        _, phase, reason = OUTCOMES[self.kind]
        return phase, reason


def plan(rng: random.Random, count: int, seed: int) -> list[Run]:
    kinds = list(OUTCOMES)
    weights = [OUTCOMES[k][0] for k in kinds]
    runs = []
    for i in range(count):
        # every outcome at least once, then at random by weight
        kind = kinds[i] if i < len(kinds) else rng.choices(kinds, weights)[0]
        lines = rng.randrange(1, 6)
        result: str | None = None
        timeout = 600
        if kind == "success":
            sleep = f"sleep={rng.uniform(0, 1.5):.2f} steps=2"
            if rng.random() < 0.5:
                prompt = f"echo {sleep} lines={lines} soak={seed}-{i}"
                result = prompt
            else:
                size = rng.choice([100, 5_000, 40_000])
                prompt = f"result_bytes={size} {sleep} lines={lines} soak={seed}-{i}"
                result = sized_result(size)
        elif kind == "agent_error":
            prompt = f"fail lines={lines} soak={seed}-{i}"
        else:
            lines = 1
            prompt = f"sleep=60 lines=1 soak={seed}-{i}"
            if kind == "timeout":
                timeout = 3
        runs.append(Run(i, kind, prompt, timeout, lines, result, rng.uniform(2, 12)))
        runs[-1].key = f"soak-{seed}-{i}"
    return runs


class Client:
    """The API as a careful client uses it: retries on transport errors, 429 and 5xx."""

    def __init__(self, system: DevSystem) -> None:
        self.system = system
        self.http = httpx.Client(timeout=30)
        self.retries = Counter[str]()

    def call(self, method: str, path: str, *, budget: float = 120, **kwargs: Any) -> httpx.Response:
        deadline = time.monotonic() + budget
        delay = 0.2
        while True:
            try:
                r = self.http.request(method, f"{self.system.api_url}{path}", **kwargs)
                if r.status_code < 500 and r.status_code not in (408, 429):
                    return r
                problem = f"HTTP {r.status_code}"
                wait = float(r.headers.get("retry-after") or delay)
            except httpx.HTTPError as exc:
                problem = type(exc).__name__
                wait = delay
            self.retries[problem] += 1
            if time.monotonic() + wait > deadline:
                raise RuntimeError(f"{method} {path}: still failing after {budget}s ({problem})")
            time.sleep(min(wait, 5))
            delay = min(delay * 2, 3)


class JobWatch(threading.Thread):
    """Every Job uid ever created, per run, from a watch faults never hit (system token)."""

    def __init__(self, base_url: str) -> None:
        super().__init__(daemon=True, name="soak job watch")
        self.http = httpx.Client(
            base_url=base_url, headers={"Authorization": f"Bearer {SYSTEM_TOKEN}"}, timeout=60
        )
        self.uids: dict[str, set[str]] = defaultdict(set)
        self.errors: list[str] = []
        self.stop = threading.Event()

    def record(self, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        run = (meta.get("labels") or {}).get(names.LABEL_RUN)
        if run:
            self.uids[run].add(meta["uid"])

    def relist(self) -> str:
        data = self.http.get(JOBS).json()
        for obj in data["items"]:
            self.record(obj)
        return str(data["metadata"]["resourceVersion"])

    def run(self) -> None:
        rv = self.relist()
        while not self.stop.is_set():
            params = {"watch": "true", "resourceVersion": rv, "timeoutSeconds": "5"}
            try:
                with self.http.stream("GET", JOBS, params=params) as r:
                    for line in r.iter_lines():
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        obj = event["object"]
                        if event["type"] == "ERROR":
                            rv = self.relist()
                            break
                        self.record(obj)
                        rv = obj["metadata"]["resourceVersion"]
            except Exception as exc:  # never stop counting: note it, relist
                self.errors.append(repr(exc))
                time.sleep(0.2)
                with contextlib.suppress(Exception):
                    rv = self.relist()


def transcript(k: SyncKube, name: str) -> list[StreamEvent]:
    events: list[StreamEvent] = []
    for item in k.items(CHUNKS, labelSelector=f"{names.LABEL_RUN}={name}"):
        events.extend(decode_transcript(item["spec"].get("events") or ""))
    return sorted(events, key=lambda e: e.id)


@dataclass
class Soak:
    runs: list[Run]
    rng: random.Random
    kills: int
    seed: int
    chaos: ChaosConfig
    deadline_seconds: float
    system: DevSystem = field(init=False)
    problems: list[str] = field(default_factory=list)
    killed_at: list[float] = field(default_factory=list)
    crashes: list[str] = field(default_factory=list)
    deleted_jobs: list[str] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    restarted: bool = False
    leader_exits: int = 0
    operator_log_start: int = 0

    def start_operator(self, restart: bool = False) -> None:
        """(Re)start the operator, noting where its own lines start in the shared log."""
        if restart:
            self.system.kill_operator(signal.SIGKILL)
        log_path = self.system.operator_log
        self.operator_log_start = len(log_path.read_text(errors="replace"))
        self.system.start_operator()

    def submit(self, client: Client, hook: str, run: Run) -> None:
        body = {
            "prompt": run.prompt,
            "timeout": run.timeout,
            "webhook_url": hook,
            "session_id": f"soak-{self.seed}",
        }
        r = client.call("POST", "/api/v1/runs", json=body, headers={"Idempotency-Key": run.key})
        if r.status_code not in (200, 202):
            raise RuntimeError(f"submit {run.key}: {r.status_code} {r.text}")
        run.job_id = r.json()["job_id"]
        run.name = run.job_id if run.job_id.startswith("run-") else run.job_id.replace("_", "-")
        run.submitted_at = time.monotonic()

    def supervise(self) -> None:
        """Restart a process that died on its own (its Deployment would)."""
        system = self.system
        if system.operator is not None and system.operator.poll() is not None:
            code = system.operator.returncode
            log_text = system.operator_log.read_text(errors="replace")
            if "leadership lost" in log_text[self.operator_log_start :]:
                # Fail closed: an operator that could not renew its Lease in time exits, as
                # client-go's controllers do, and its Deployment restarts it.
                self.leader_exits += 1
            else:
                kept = self.keep_log(system.operator_log, "operator")
                self.crashes.append(f"operator exited {code} by itself; its log: {kept}")
            system.operator = None
            self.start_operator()
        for i, (proc, url, log_path) in enumerate(list(system.apis)):
            if proc.poll() is not None:
                kept = self.keep_log(log_path, "api")
                self.crashes.append(f"API exited {proc.returncode} by itself; its log: {kept}")
                system.apis.pop(i)
                system.start_api(port=int(url.rsplit(":", 1)[1]))

    @property
    def folder(self) -> Path:
        """Where logs and problems are kept after the soak (its work directory is removed)."""
        folder = Path(tempfile.gettempdir()) / f"agentrun-soak-{self.seed}"
        folder.mkdir(exist_ok=True)
        return folder

    def keep_log(self, path: Path, what: str) -> Path:
        """A copy of a process's log that outlives the soak's work directory."""
        kept = self.folder / f"{what}-{len(self.crashes)}.log"
        shutil.copyfile(path, kept)
        return kept

    def act(self, client: Client, k: SyncKube, run: Run, now: float) -> None:
        """Cancel, or delete the Job during a compaction, once its time has come."""
        if run.acted or now - run.submitted_at < run.act_after:
            return
        if run.kind == "cancel":
            r = client.call("POST", f"/api/v1/runs/{run.job_id}/cancel")
            if r.status_code != 200:
                self.problems.append(f"{run.key}: cancel answered {r.status_code} {r.text[:200]}")
            run.acted = True
        elif run.kind == "job_deleted":
            pods = k.items(PODS, labelSelector=f"{names.LABEL_RUN}={run.name}")
            if not any((p.get("status") or {}).get("phase") == "Running" for p in pods):
                return  # not started yet (queued): wait for its pod to run
            deleted = self.system.cluster.call(
                self.system.cluster.server.compact({names.LABEL_RUN: run.name})
            )
            self.deleted_jobs.extend(deleted)
            stamp = time.strftime("%H:%M:%S", time.gmtime())
            print(f"  {stamp} {run.key}: Job {deleted} deleted in a compaction gap")
            run.acted = True

    def drive(self, client: Client, k: SyncKube) -> float:
        """Until every run is terminal with its transcript complete, or the deadline."""
        t0 = time.monotonic()
        deadline = t0 + self.deadline_seconds
        thresholds = [(i + 1) / (self.kills + 1) for i in range(self.kills)]
        while time.monotonic() < deadline:
            self.supervise()
            now = time.monotonic()
            bodies = {r["metadata"]["name"]: r for r in k.items(RUNS)}
            done = 0
            for run in self.runs:
                status = (bodies.get(run.name) or {}).get("status") or {}
                finished = status.get("phase") in TERMINAL and (
                    (status.get("transcript") or {}).get("complete")
                )
                if finished:
                    done += 1
                    if run.terminal_at is None:
                        run.terminal_at = now
                elif run.kind in ("cancel", "job_deleted"):
                    self.act(client, k, run, now)
            if not self.restarted and done >= len(self.runs) / 3:
                # at least one apiserver restart, whatever the random intervals
                self.restarted = True
                cluster = self.system.cluster
                cluster.call(cluster.server.restart(self.chaos.down_seconds))
            if thresholds and done >= thresholds[0] * len(self.runs):
                thresholds.pop(0)
                self.start_operator(restart=True)  # DevSystem.kill_operator + start_operator
                self.killed_at.append(time.monotonic() - t0)
                print(f"  SIGKILL operator at {self.killed_at[-1]:.1f}s ({done} runs done)")
            if done == len(self.runs) and not thresholds:
                break
            time.sleep(0.25)
        return time.monotonic() - t0

    def api_catch_up(self, client: Client, timeout: float = 60) -> float:
        """Seconds until the API shows every run finished, once the faults stopped (its run
        cache may still be backing off from the last ones); ``timeout`` at most."""
        started = time.monotonic()
        pending = list(self.runs)
        while pending and time.monotonic() - started < timeout:
            views = [client.call("GET", f"/api/v1/runs/{r.job_id}").json() for r in pending]
            pending = [
                r
                for r, view in zip(pending, views, strict=True)
                if view.get("status") not in ("succeeded", "failed", "cancelled")
            ]
            if pending:
                time.sleep(0.5)
        return time.monotonic() - started

    def check(self, client: Client, k: SyncKube, jobs: JobWatch, hooks: WebhookReceiver) -> None:
        by_job_id: dict[str, list[Any]] = defaultdict(list)
        for item in hooks.requests():
            by_job_id[payload_of(item)["job_id"]].append(item)
        counts: Counter[str] = Counter()
        for run in self.runs:
            phase, reason = run.expected
            label = f"{run.key} ({run.kind}, {run.job_id})"
            uids = jobs.uids.get(run.name, set())
            if len(uids) > 1:
                counts["duplicate Jobs"] += len(uids) - 1
                self.problems.append(f"{label}: {len(uids)} Jobs {sorted(uids)}")
            view = client.call("GET", f"/api/v1/runs/{run.job_id}").json()
            got = (view.get("status"), view.get("reason"))
            right = got == (phase.lower(), reason)
            if not right:
                counts["wrong status"] += 1
                self.problems.append(f"{label}: {got} != {(phase.lower(), reason)}: {view}")
            else:
                counts["right status"] += 1
            if right and run.result is not None:
                answer = client.call("GET", f"/api/v1/runs/{run.job_id}/result").json()
                if answer.get("result") != run.result:
                    counts["result missing or wrong"] += 1
                    got_result = answer.get("result")
                    self.problems.append(
                        f"{label}: result {len(got_result or '')} chars "
                        f"(None: {got_result is None}) != expected {len(run.result)}"
                    )
                else:
                    counts["full result"] += 1
            self.check_transcript(k, run, label, counts)
            self.check_webhooks(run, label, by_job_id.get(run.job_id, []), counts)
        self.counts.update(counts)

    def check_transcript(self, k: SyncKube, run: Run, label: str, counts: Counter[str]) -> None:
        events = transcript(k, run.name)
        ids = [e.id for e in events]
        problems = []
        if ids != list(range(1, len(ids) + 1)):
            problems.append(f"ids not 1..n: {ids}")
        completes = [e for e in events if e.event == "complete"]
        last = events[-1].event if events else None
        if len(completes) != 1 or last != "complete":
            problems.append(f"{len(completes)} complete events, last {last}")
        elif completes[0].data.get("status") != run.expected[0].lower():
            problems.append(f"complete says {completes[0].data.get('status')}")
        logs = [e.data.get("message") for e in events if e.event == "log"]
        if run.kind in ("success", "agent_error"):
            expected = [f"tiny log line {i + 1} of {run.lines}" for i in range(run.lines)]
            if [m for m in logs if m in expected] != expected:
                problems.append(f"log lines {logs} != {expected}")
        if len(logs) != len(set(logs)):
            problems.append(f"duplicate log lines {logs}")
        if problems:
            counts["bad transcripts"] += 1
            self.problems.append(f"{label}: transcript: {'; '.join(problems)}")
        else:
            counts["complete transcripts"] += 1

    def check_webhooks(
        self, run: Run, label: str, received: list[Any], counts: Counter[str]
    ) -> None:
        phase, reason = run.expected
        if not received:
            counts["webhooks missing"] += 1
            self.problems.append(f"{label}: no webhook")
            return
        ids = {item.headers.get("webhook-id") for item in received}
        bodies = [payload_of(item) for item in received]
        problems = []
        if len(ids) != 1:
            problems.append(f"{len(ids)} webhook-ids {ids}")
        if any(item.verified is None for item in received):
            problems.append("signature not verified")
        for body in bodies:
            if (body["status"], body["reason"]) != (phase.lower(), reason):
                problems.append(f"payload says {body['status']}/{body['reason']}")
            if (
                run.result is not None
                and not body["result_truncated"]
                and body["result"] != run.result
            ):
                problems.append("payload result differs")
        if problems:
            counts["bad webhooks"] += 1
            self.problems.append(f"{label}: webhook: {'; '.join(problems)}")
        else:
            counts["webhooks delivered"] += 1
            counts["webhook re-deliveries (same id)"] += len(received) - 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--kills", type=int, default=5, help="operator SIGKILLs")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--rate", type=float, default=0.03, help="faults per client request")
    parser.add_argument("--log-rate", type=float, default=0.3, help="faults per log follow")
    parser.add_argument("--interval", type=float, default=6.0, help="mean s between restarts")
    parser.add_argument("--hang-seconds", type=float, default=8.0)
    parser.add_argument("--deadline", type=float, default=None, help="seconds (default: scaled)")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    if args.smoke or os.environ.get("AGENTRUN_BENCH_SMOKE") == "1":
        args.runs = min(args.runs, 12)
        args.kills = min(args.kills, 2)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 30)
    rng = random.Random(seed)
    runs = plan(rng, args.runs, seed)
    chaos = ChaosConfig(
        faults=frozenset(APIFault),
        seed=seed,
        rate=args.rate,
        log_rate=args.log_rate,
        interval_seconds=args.interval,
        hang_seconds=args.hang_seconds,
        down_seconds=1.0,
    )
    deadline = args.deadline or 120 + 2.5 * args.runs
    print(f"fault soak: AGENTRUN_SOAK_SEED={seed} runs={args.runs} kills={args.kills}")
    print(f"  planned: {dict(Counter(r.kind for r in runs))}")
    print(f"  apiserver faults: {chaos.describe()}")
    soak = Soak(runs, rng, args.kills, seed, chaos, deadline)
    hooks = WebhookReceiver().start()
    operator_env = {
        **OPERATOR_ENV,
        "AGENTRUN_OPERATOR_WEBHOOK__SIGNING_SECRETS": json.dumps([hooks.secret]),
    }
    system = DevSystem(operator_env_overrides=operator_env)
    soak.system = system
    client: Client | None = None
    jobs: JobWatch | None = None
    try:
        system.start()
        k = SyncKube(system.cluster.base_url, token=SYSTEM_TOKEN)
        jobs = JobWatch(system.cluster.base_url)
        jobs.start()
        client = Client(system)
        server = system.cluster.server
        # every request fault at least once, early, then at random
        for fault in chaos.request_faults:
            server.faults.add(fault, times=1, seconds=args.hang_seconds)
        system.cluster.loop.call_soon_threadsafe(server.start_chaos, chaos)
        t_submit = time.monotonic()
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda r: soak.submit(client, hooks.url, r), runs))  # type: ignore[arg-type]
        print(f"  submitted {len(runs)} runs in {time.monotonic() - t_submit:.1f}s")
        elapsed = soak.drive(client, k)
        system.cluster.loop.call_soon_threadsafe(server.stop_chaos)
        server.faults.clear()
        fired = dict(server.faults.fired)
        # webhooks: the faults are off; give pending deliveries their retries
        hook_deadline = time.monotonic() + 30
        while time.monotonic() < hook_deadline:
            got = {payload_of(i)["job_id"] for i in hooks.requests()}
            if all(r.job_id in got for r in runs):
                break
            time.sleep(0.5)
        caught_up = soak.api_catch_up(client)
        soak.check(client, k, jobs, hooks)
        stuck = [r for r in runs if r.terminal_at is None]
        latencies = [r.terminal_at - r.submitted_at for r in runs if r.terminal_at is not None]
        print(f"  soak time: {elapsed:.1f}s (deadline {deadline:.0f}s)")
        print(
            f"  operator SIGKILLs: {len(soak.killed_at)} at {[round(t, 1) for t in soak.killed_at]}"
        )
        print(f"  operator exits on a lost Lease (restarted): {soak.leader_exits}")
        print(f"  processes that died by themselves: {len(soak.crashes)}")
        print(f"  apiserver faults fired: {fired} (total {sum(fired.values())})")
        print(f"  Jobs deleted in a compaction gap: {len(soak.deleted_jobs)}")
        seen = sum(len(u) for u in jobs.uids.values())
        print(f"  Jobs created (seen by a watch faults never hit): {seen}")
        if jobs.errors:
            print(f"  Job watch errors (it relisted): {len(jobs.errors)}: {jobs.errors[:3]}")
        print(f"  client retries (API): {dict(client.retries)}")
        print(f"  API showed every run finished {caught_up:.1f}s after the faults stopped")
        if latencies:
            print(
                f"  submit -> terminal: p50 {statistics.median(latencies):.1f}s "
                f"max {max(latencies):.1f}s"
            )
        print("results:")
        for name in (
            "right status",
            "wrong status",
            "full result",
            "result missing or wrong",
            "complete transcripts",
            "bad transcripts",
            "duplicate Jobs",
            "webhooks delivered",
            "webhooks missing",
            "bad webhooks",
            "webhook re-deliveries (same id)",
        ):
            print(f"  {name}: {soak.counts.get(name, 0)}")
        print(f"  runs stuck: {len(stuck)}")
        expected_results = sum(r.result is not None for r in runs)
        print(f"  succeeded runs expected with a result: {expected_results}")
        for run in stuck:
            soak.problems.append(f"{run.key} ({run.kind}, {run.job_id}): stuck, not terminal")
        for crash in soak.crashes:
            soak.problems.append(crash)
        if soak.problems:
            print(f"PROBLEMS (seed {seed}): {len(soak.problems)}")
            for problem in soak.problems[:40]:
                print(f"  - {problem}")
            history = list(server.faults.history)
            notes = []
            for run in runs:
                if any(run.job_id in problem for problem in soak.problems):
                    notes.append(f"faults on the requests of {run.key} ({run.name}):")
                    notes += [
                        f"  {time.strftime('%H:%M:%S', time.gmtime(at))}.{int(at % 1 * 1000):03d}"
                        f" {fault} {method} {path}"
                        for at, fault, method, path in history
                        if run.name in path or not path
                    ]
            (soak.folder / "problems.txt").write_text("\n".join(soak.problems + notes) + "\n")
            soak.keep_log(system.operator_log, "operator-final")
            for _, _, api_log in system.apis:
                soak.keep_log(api_log, api_log.stem)
            print(f"all problems and the logs: {soak.folder}")
            return 1
        print(f"fault soak OK (seed {seed})")
        return 0
    finally:
        if jobs is not None:
            jobs.stop.set()
        system.stop()
        hooks.stop()


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark of the emulated cluster's controllers: Job -> Pod -> process -> Complete.

Prints, measured in the same run: the latency of one Job (created -> Complete) on an idle
cluster, and the throughput of N Jobs created at once (Jobs/s and p50/max latency), each running
a trivial `python -c` container. ``--smoke`` (or AGENTRUN_BENCH_SMOKE=1) uses N=5.

    python bench/bench_devcluster.py [--jobs N] [--smoke]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from agentrun_devcluster.system import (
    ControlledCluster,
    SyncKube,
    small_job_settings,
    small_kubelet_settings,
)

JOBS = "/apis/batch/v1/namespaces/default/jobs"


def job(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {"name": "c", "image": "x", "command": ["python", "-c", "print('hi')"]}
                    ],
                }
            },
        },
    }


def complete_names(kube: SyncKube) -> dict[str, float]:
    done: dict[str, float] = {}
    for j in kube.items(JOBS):
        for c in (j.get("status") or {}).get("conditions") or []:
            if c["type"] == "Complete" and c["status"] == "True":
                done[j["metadata"]["name"]] = time.monotonic()
    return done


def run_batch(kube: SyncKube, prefix: str, n: int, timeout: float = 300) -> list[float]:
    created: dict[str, float] = {}
    for i in range(n):
        name = f"{prefix}-{i}"
        kube.create(JOBS, job(name))
        created[name] = time.monotonic()
    finished: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while len(finished) < n and time.monotonic() < deadline:
        for name, at in complete_names(kube).items():
            if name in created and name not in finished:
                finished[name] = at
        time.sleep(0.02)
    if len(finished) < n:
        raise SystemExit(f"only {len(finished)}/{n} jobs completed in {timeout}s")
    return [finished[k] - created[k] for k in created]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    n = 5 if args.smoke or os.environ.get("AGENTRUN_BENCH_SMOKE") else args.jobs
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}")
    with ControlledCluster() as cluster:
        kube = SyncKube(cluster.base_url)
        single = [run_batch(kube, f"single{i}", 1)[0] for i in range(3)]
        t0 = time.monotonic()
        lat = run_batch(kube, "batch", n)
        wall = time.monotonic() - t0
    print(
        f"one job on an idle cluster: median {statistics.median(single) * 1000:.0f} ms "
        f"(create -> Complete, 3 samples)"
    )
    print(
        f"{n} jobs created at once: {n / wall:.1f} jobs/s, latency p50 "
        f"{statistics.median(lat) * 1000:.0f} ms, max {max(lat) * 1000:.0f} ms, "
        f"wall {wall:.2f} s"
    )
    with tempfile.TemporaryDirectory() as state:
        quiet = ControlledCluster(
            kubelet_settings=small_kubelet_settings(Path(state)).model_copy(
                update={"events": False}
            ),
            job_settings=small_job_settings().model_copy(update={"events": False}),
        )
        with quiet:
            kube = SyncKube(quiet.base_url)
            t0 = time.monotonic()
            run_batch(kube, "quiet", n)
            quiet_wall = time.monotonic() - t0
    print(f"same without Events: {n / quiet_wall:.1f} jobs/s, wall {quiet_wall:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

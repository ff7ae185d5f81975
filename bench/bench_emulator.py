"""Benchmark: create+get pairs per second on the emulated apiserver, empty vs 5,000 objects.

Run: ``python bench/bench_emulator.py`` (full) or ``--smoke`` (CI size). The server runs in its
own process (``python -m agentrun_devcluster.apiserver``) as in ``agentrun dev``; the client is
httpx with keep-alive, one request at a time (latency-bound, the pessimistic case). Objects are
AgentRuns, so every create goes through pruning, defaulting, schema validation and CEL rules.
Both figures come from the same run: pairs into an empty namespace, then pairs into a namespace
already holding N objects (prefilled with concurrent creates).
Target (issue 2): >= 150 pairs/s with 5,000 objects stored, on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

GROUP, VERSION, PLURAL = "agentrun.dev", "v1alpha1", "agentruns"
CRDS = Path(__file__).resolve().parents[1] / "deploy" / "crds" / "agentrun.dev.yaml"


def _agentrun(name: str) -> dict[str, object]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AgentRun",
        "metadata": {"name": name, "labels": {"agentrun.dev/session": "bench"}},
        "spec": {"prompt": "benchmark prompt " * 8, "sessionId": "bench"},
    }


def _url(namespace: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"


async def _prefill(http: httpx.AsyncClient, namespace: str, count: int, workers: int = 8) -> None:
    names = iter(range(count))

    async def worker() -> None:
        for i in names:
            r = await http.post(_url(namespace), json=_agentrun(f"pre-{i:05d}"))
            assert r.status_code == 201, r.text

    await asyncio.gather(*(worker() for _ in range(workers)))


async def _pairs(
    http: httpx.AsyncClient, namespace: str, count: int, prefix: str = "bench"
) -> float:
    started = time.perf_counter()
    for i in range(count):
        created = await http.post(_url(namespace), json=_agentrun(f"{prefix}-{i:05d}"))
        assert created.status_code == 201, created.text
        got = await http.get(f"{_url(namespace)}/{prefix}-{i:05d}")
        assert got.status_code == 200, got.text
    return count / (time.perf_counter() - started)


async def _run(base_url: str, pairs: int, stored: int) -> None:
    limits = httpx.Limits(max_connections=16)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as http:
        for ns in ("empty", "full"):
            r = await http.post(
                "/api/v1/namespaces",
                json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
            )
            assert r.status_code == 201, r.text
        await _pairs(
            http, "empty", min(20, pairs), prefix="warm"
        )  # warm-up (CEL programs, connections)
        empty_rate = await _pairs(http, "empty", pairs)
        started = time.perf_counter()
        await _prefill(http, "full", stored)
        prefill_rate = stored / (time.perf_counter() - started)
        full_rate = await _pairs(http, "full", pairs)
        listed = await http.get(_url("full"), params={"limit": "1"})
        assert listed.json()["metadata"]["remainingItemCount"] == stored + pairs - 1
    print(f"create+get pairs/s, 0 objects stored:     {empty_rate:8.1f}  ({pairs} pairs)")
    print(f"create+get pairs/s, {stored} objects stored: {full_rate:8.1f}  ({pairs} pairs)")
    print(f"ratio stored/empty: {full_rate / empty_rate:.2f}")
    print(f"prefill, 8 concurrent clients: {prefill_rate:.1f} creates/s")
    print(
        f"target >= 150 pairs/s with 5,000 stored: {'met' if full_rate >= 150 else 'NOT met'}"
        f" (load average now: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="CI size: 50 pairs, 500 objects")
    parser.add_argument("--pairs", type=int, default=None)
    parser.add_argument("--stored", type=int, default=None)
    args = parser.parse_args()
    pairs = args.pairs or (50 if args.smoke else 1000)
    stored = args.stored if args.stored is not None else (500 if args.smoke else 5000)
    server = subprocess.Popen(
        [sys.executable, "-m", "agentrun_devcluster.apiserver", "--crds", str(CRDS)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline().strip()
        if not line.startswith("EMULATED_APISERVER_URL="):
            raise SystemExit(f"emulator did not start: {line!r}")
        asyncio.run(_run(line.split("=", 1)[1], pairs, stored))
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()

"""CI runs every benchmark at smoke size: each must run and print its figures, including the
comparison it is measured against. (The emulator, dev-cluster and stream benchmarks have their
own smoke tests beside their areas; the fault soak runs at CI size in
tests/integration/system/test_fault_soak.py.)"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench"

NUMBER = r"[\d.]+"
CASES = {
    "bench_api_submit.py": [
        rf"POST /api/v1/runs\s+p50\s+({NUMBER}) ms",
        rf"direct AgentRun create p50\s+({NUMBER}) ms",
        rf"ratio\s+p50\s+({NUMBER})x",
        rf"HTTP hop \+ framework \(GET /livez on the API\) p50 ({NUMBER}) ms",
        rf"submission work \(validate, fingerprint, build\) p50 ({NUMBER}) ms",
        rf"RunCache allocations \(tracemalloc\): ({NUMBER}) MiB",
    ],
    "bench_operator.py": [
        rf"baseline \(no operator\): ({NUMBER}) AgentRun\+Job pairs/s",
        rf"operator RSS: ({NUMBER}) MiB",
        rf"\n\s+20\s+\d+\s+({NUMBER})\s+{NUMBER}\s+{NUMBER}",
        rf"admission CPU per second at \d+ queued, \d+ slots: ({NUMBER}) ms/s "
        rf"\(replaced algorithm: ({NUMBER}) ms/s",
        rf"steady window {NUMBER} s, ({NUMBER}) runs finished",
        rf"operator CPU\s+({NUMBER}) s/s",
        rf"steady:\s+event-loop lag p99 ({NUMBER}) ms \(the operator's .*Lease renew p99 ({NUMBER}) s "
        rf"\(every 5 s nominal; (\d+) renewals, 0 missed, holders 1\); RSS ({NUMBER}) MiB",
        rf"apiserver requests/run\s+({NUMBER}) \(bytes sent/run ({NUMBER}) KiB",
        rf"transcript bytes/run\s+written ({NUMBER}) KiB for ({NUMBER}) KiB of events",
    ],
    "bench_runner.py": [
        rf"tiny runner\s+first event\s+({NUMBER}) s",
        rf"agentrun-runner \(PraisonAI\)\s+first event\s+({NUMBER}) s",
        rf"bare praisonai\.arun \(comparison\)\s+first event\s+-\s+total\s+({NUMBER}) s",
    ],
    "bench_webhooks.py": [
        rf"attempt_delivery \(policy \+ checked IP \+ POST\)\s+p50\s+({NUMBER}) ms",
        rf"comparison: httpx POST, reused client\s+p50\s+({NUMBER}) ms",
    ],
}


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(CASES))
def test_benchmark_smoke_prints_its_figures(script: str) -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH / script), "--smoke"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    for pattern in CASES[script]:
        found = re.search(pattern, out.stdout)
        assert found, f"{script}: no figure matching {pattern!r} in:\n{out.stdout}"
        for figure in found.groups():
            assert float(figure) > 0, found.group(0)

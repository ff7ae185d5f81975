"""CI runs the stream benchmark at smoke size: it must run and print its figures for one API
process and for two worker processes (the burst's first-event latency beside the /livez burst
measured in the same run), and open exactly one upstream watch per run per process however
many clients."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench" / "bench_stream.py"
NUMBER = r"[\d.]+"


@pytest.mark.slow
def test_bench_stream_smoke() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH), "--smoke", "--workers", "1,2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    sections = re.split(r"^stream fan-out: ", out.stdout, flags=re.MULTILINE)[1:]
    assert [s.split("\n", 1)[0] for s in sections] == [
        "50 SSE clients over 5 live runs, one API process",
        "50 SSE clients over 5 live runs, 2 API worker processes",
    ], out.stdout
    for section, workers in zip(sections, (1, 2), strict=True):
        for pattern in (
            rf"GET /livez, burst of\s+50 at once:\s+p50\s+{NUMBER} ms\s+p99\s+{NUMBER} ms",
            rf"first event, burst of\s+50 at once:\s+p50\s+{NUMBER} ms\s+p99\s+{NUMBER} ms",
            r"live event -> every client:.*missing 0",
            r"upstream watches per run per process: 1\.00 \(target 1\)",
            rf"API RSS: idle {NUMBER} MiB",
            rf"upstreams released after all clients left: {NUMBER} s",
        ):
            assert re.search(pattern, section), f"{pattern!r} not in:\n{section}"
        opened = re.search(r"upstream watches opened: (\d+) over (\d+) process", section)
        assert opened is not None, section
        assert int(opened.group(2)) == workers
        # every process that served clients opened exactly one watch for each of the 5 runs
        per_process = re.search(r"\(per process ([\d, ]+); runs served ([\d, ]+);", section)
        assert per_process is not None, section
        assert per_process.group(1) == per_process.group(2), section

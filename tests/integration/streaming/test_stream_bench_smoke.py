"""CI runs the stream benchmark at smoke size: it must run, print its figures, and open exactly
one upstream watch per run however many clients."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench" / "bench_stream.py"


@pytest.mark.slow
def test_bench_stream_smoke() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH), "--smoke"], capture_output=True, text=True, timeout=240
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert re.search(r"first event, burst of\s+50 at once:\s+p50\s+[\d.]+ ms", out.stdout)
    assert re.search(r"live event -> every client:.*missing 0", out.stdout), out.stdout
    watches = re.search(r"upstream watches opened: (\d+) \(target (\d+)\)", out.stdout)
    assert watches is not None, out.stdout
    assert watches.group(1) == watches.group(2) == "5"
    assert re.search(r"API RSS: idle [\d.]+ MiB", out.stdout), out.stdout
    assert re.search(r"upstreams released after all clients left: [\d.]+ s", out.stdout)

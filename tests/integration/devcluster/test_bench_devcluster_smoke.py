"""CI runs the controllers' benchmark at smoke size: it must run and print its figures."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[3] / "bench" / "bench_devcluster.py"


def test_bench_devcluster_smoke() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH), "--smoke"], capture_output=True, text=True, timeout=240
    )
    assert out.returncode == 0, out.stderr
    assert re.search(r"one job on an idle cluster: median \d+ ms", out.stdout), out.stdout
    assert re.search(r"5 jobs created at once: [\d.]+ jobs/s", out.stdout), out.stdout
    assert re.search(r"same without Events: [\d.]+ jobs/s", out.stdout), out.stdout

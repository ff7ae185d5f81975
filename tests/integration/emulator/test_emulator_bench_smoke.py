"""CI runs the emulator benchmark at smoke size: it must run and print both figures."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[3] / "bench" / "bench_emulator.py"


def test_bench_emulator_smoke() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH), "--smoke"], capture_output=True, text=True, timeout=240
    )
    assert out.returncode == 0, out.stderr
    empty = re.search(r"create\+get pairs/s, 0 objects stored:\s+([\d.]+)", out.stdout)
    stored = re.search(r"create\+get pairs/s, 500 objects stored:\s+([\d.]+)", out.stdout)
    assert empty, out.stdout
    assert stored, out.stdout
    assert float(empty.group(1)) > 0
    assert float(stored.group(1)) > 0

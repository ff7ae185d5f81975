"""The fault soak at CI size: runs through the dev system while the emulated apiserver throws
every fault (log follows cut and ended, dropped and half-open connections and streams, 429/500 on writes,
restarts, compactions with Jobs deleted in the gap) and the operator is SIGKILLed and restarted.

Runs ``bench/bench_fault_soak.py`` (the full soak is 200 runs) and checks what it prints: nothing
lost, nothing stuck. The seed is printed; ``AGENTRUN_SOAK_SEED`` replays one.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SOAK = Path(__file__).resolve().parents[3] / "bench" / "bench_fault_soak.py"
RUNS = int(os.environ.get("AGENTRUN_SOAK_RUNS", "30"))
KILLS = 5
ALL_FAULTS = {
    "log_cut",
    "log_disconnect",
    "drop",
    "hang",
    "stall",
    "throttle",
    "server_error",
    "restart",
    "compact",
}


def figure(out: str, name: str) -> int:
    found = re.search(rf"^  {re.escape(name)}: (\d+)$", out, re.MULTILINE)
    assert found, f"no figure {name!r} in:\n{out}"
    return int(found.group(1))


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_fault_soak_loses_nothing() -> None:
    args = [sys.executable, str(SOAK), "--runs", str(RUNS), "--kills", str(KILLS)]
    args += ["--deadline", "150"]
    if os.environ.get("AGENTRUN_SOAK_SEED"):
        args += ["--seed", os.environ["AGENTRUN_SOAK_SEED"]]
    done = subprocess.run(args, capture_output=True, text=True, timeout=280)
    out = done.stdout
    print(out[:3000])
    assert done.returncode == 0, f"{out[-12000:]}\n{done.stderr[-3000:]}"

    fired = ast.literal_eval(re.search(r"apiserver faults fired: (\{.*?\})", out).group(1))  # type: ignore[union-attr]
    assert set(fired) == ALL_FAULTS, fired
    kills = re.search(r"operator SIGKILLs: (\d+)", out)
    assert kills is not None
    assert int(kills.group(1)) == KILLS
    planned = ast.literal_eval(re.search(r"planned: (\{.*?\})", out).group(1))  # type: ignore[union-attr]
    assert sum(planned.values()) == RUNS
    assert set(planned) == {"success", "agent_error", "timeout", "cancel", "job_deleted"}
    assert figure(out, "right status") == RUNS
    assert figure(out, "full result") == planned["success"]
    assert figure(out, "complete transcripts") == RUNS
    assert figure(out, "duplicate Jobs") == 0
    assert figure(out, "webhooks delivered") == RUNS
    assert figure(out, "runs stuck") == 0
    assert figure(out, "processes that died by themselves") == 0

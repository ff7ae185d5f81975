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

import httpx
import pytest
from agentrun_contract.stream import decode_transcript
from agentrun_devcluster.apiserver.faults import SYSTEM_TOKEN, APIFault
from agentrun_devcluster.system import DevSystem, SyncKube

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


def transcript_logs(k: SyncKube, run_name: str) -> list[str]:
    events = []
    for item in k.items(
        "/apis/agentrun.dev/v1alpha1/namespaces/default/agentruntranscripts",
        labelSelector=f"agentrun.dev/run={run_name}",
    ):
        events += decode_transcript(item["spec"].get("events") or "")
    return [
        str(e.data.get("message")) for e in sorted(events, key=lambda e: e.id) if e.event == "log"
    ]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_failed_run_keeps_its_log_through_a_cut_then_half_open_follow() -> None:
    """The soak's most frequent loss, made deterministic: the follow is cut mid-chunk, the
    resumed follow is held open with no answer; the agent_error run must still keep every
    line its agent printed (seed 78480218, runs soak-78480218-1 and -38)."""
    with DevSystem() as system:
        faults = system.cluster.server.faults
        faults.add(APIFault.LOG_CUT, times=1, after_bytes=50)
        faults.add(APIFault.HANG, times=1, seconds=20, path="/log$")
        k = SyncKube(system.cluster.base_url, token=SYSTEM_TOKEN)
        created = httpx.post(
            f"{system.api_url}/api/v1/runs", json={"prompt": "fail lines=3"}, timeout=30
        )
        job_id = created.json()["job_id"]

        def finished() -> dict[str, object] | None:
            view = httpx.get(f"{system.api_url}/api/v1/runs/{job_id}", timeout=30).json()
            return view if view["status"] in ("succeeded", "failed", "cancelled") else None

        view = k.wait_for("the run to finish", finished, timeout=120, interval=0.5)
        assert (view["status"], view["reason"]) == ("failed", "agent_error")
        assert dict(faults.fired) == {"log_cut": 1, "hang": 1}
        logs = [m for m in transcript_logs(k, job_id.replace("_", "-")) if m.startswith("tiny")]
        assert logs == [f"tiny log line {i} of 3" for i in (1, 2, 3)], system.logs()[-3000:]

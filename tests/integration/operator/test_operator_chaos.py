"""Chaos: SIGKILL the operator at random moments while 100 tiny runs go through.

Every run must reach the right terminal state, with exactly one Job (none left for cancelled
runs, whose Job is deleted) and a transcript with no gap and no duplicate. The seed is printed;
set AGENTRUN_CHAOS_SEED to replay one.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Callable

import operator_harness as h
import pytest
from agentrun_devcluster.system import SyncKube

StartOperator = Callable[..., h.OperatorProcess]
RUNS = int(os.environ.get("AGENTRUN_CHAOS_RUNS", "100"))


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_chaos_sigkill_operator(k: SyncKube, start_operator: StartOperator) -> None:
    seed = int(os.environ.get("AGENTRUN_CHAOS_SEED") or random.SystemRandom().randrange(1 << 30))
    print(f"AGENTRUN_CHAOS_SEED={seed}")
    rng = random.Random(seed)
    h.create_credentials(k)
    env = {"AGENTRUN_OPERATOR_LEADER_ELECTION__ENABLED": "false"}
    current = [start_operator(tag="0", **env)]

    plan: dict[str, tuple[str, str | None]] = {}
    cancels: list[tuple[float, str]] = []
    t0 = time.monotonic()
    for i in range(RUNS):
        name = f"ch-{i:03d}"
        roll = rng.random()
        if roll < 0.7:
            prompt, expect = (
                f"sleep={rng.uniform(0, 1.0):.2f} lines={rng.randrange(1, 6)} steps=3",
                ("Succeeded", None),
            )
        elif roll < 0.9:
            prompt, expect = f"fail lines={rng.randrange(1, 4)}", ("Failed", "agent_error")
        else:
            prompt, expect = "sleep=60 lines=2", ("Cancelled", "cancelled")
            cancels.append((rng.uniform(1, 20), name))
        plan[name] = expect
        h.make_run(k, name, prompt)

    stop = threading.Event()
    kills: list[float] = []

    def chaos() -> None:
        n = 0
        while not stop.wait(rng.uniform(1.5, 5.0)):
            current[0].stop(signal.SIGKILL)
            kills.append(time.monotonic() - t0)
            n += 1
            current[0] = start_operator(tag=str(n), **env)

    killer = threading.Thread(target=chaos, daemon=True)
    killer.start()
    try:
        pending_cancels = sorted(cancels)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            elapsed = time.monotonic() - t0
            while pending_cancels and pending_cancels[0][0] <= elapsed:
                _, name = pending_cancels.pop(0)
                k.merge_patch(f"{h.RUNS}/{name}", {"spec": {"cancelRequested": True}})
            runs = k.items(h.RUNS)
            done = [
                r for r in runs if ((r.get("status") or {}).get("transcript") or {}).get("complete")
            ]
            if len(done) == RUNS and not pending_cancels:
                break
            time.sleep(0.5)
    finally:
        stop.set()
        killer.join(30)
    print(f"chaos: {len(kills)} SIGKILLs at {[round(t, 1) for t in kills]}")

    problems: list[str] = []
    for name, (phase, reason) in plan.items():
        run = h.get_run(k, name)
        status = run.get("status") or {}
        if (status.get("phase"), status.get("reason")) != (phase, reason):
            pods = k.items(h.PODS, labelSelector=f"agentrun.dev/run={name}")
            problems.append(
                f"{name}: {status.get('phase')}/{status.get('reason')} != {phase}/{reason} "
                f"({status.get('message')}); jobs "
                f"{[(j.get('status') or {}).get('conditions') for j in h.jobs_of(k, name)]}; "
                f"pods {[(p['metadata'].get('deletionTimestamp'), p.get('status')) for p in pods]}"
            )
            continue
        if not (status.get("transcript") or {}).get("complete"):
            problems.append(f"{name}: transcript incomplete")
            continue
        jobs = h.jobs_of(k, name)
        if phase != "Cancelled" and len(jobs) != 1:
            problems.append(f"{name}: {len(jobs)} Jobs")
        events = h.transcript(k, name)
        ids = [e.id for e in events]
        if ids != list(range(1, len(ids) + 1)):
            problems.append(f"{name}: ids not contiguous: {ids}")
        logs = [(e.data.get("message"), e.data.get("stream")) for e in events if e.event == "log"]
        if len(logs) != len(set(logs)):
            problems.append(f"{name}: duplicate log lines")
        statuses = [e.data["status"] for e in events if e.event == "status"]
        if len(statuses) != len(set(statuses)) or statuses[-1] != phase.lower():
            problems.append(
                f"{name}: status events {statuses}; events "
                f"{[(e.id, e.event, e.data.get('status') or e.data.get('message')) for e in events]}"
            )
        if events[-1].event != "complete" or sum(e.event == "complete" for e in events) != 1:
            problems.append(f"{name}: complete event")
    assert not problems, (
        f"seed {seed}: " + "\n".join(problems[:20]) + "\n" + current[0].log()[-3000:]
    )

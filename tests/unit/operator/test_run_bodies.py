"""What the operator keeps of 10,000 runs: compact bodies the garbage collector never walks,
newest version wins, and every read a copy of its own."""

from __future__ import annotations

import gc
from typing import Any

from agentrun_operator.reconciler import RunContext
from agentrun_operator.settings import OperatorSettings


class NoKube:
    def size_log_pool(self, connections: int) -> None:
        pass


def body(name: str, rv: int, phase: str = "Queued") -> dict[str, Any]:
    return {
        "apiVersion": "agentrun.dev/v1alpha1",
        "kind": "AgentRun",
        "metadata": {
            "name": name,
            "namespace": "default",
            "uid": f"uid-{name}",
            "resourceVersion": str(rv),
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": {"agentrun.dev/phase": phase.lower()},
            "managedFields": [{"manager": "m", "fieldsV1": {"f:spec": {"f:prompt": {}}}}],
        },
        "spec": {"prompt": "p" * 200, "timeoutSeconds": 600, "framework": "praisonai"},
        "status": {"phase": phase, "transcript": {"lastEventId": 1, "complete": False}},
    }


def test_kept_bodies_add_almost_nothing_for_the_collector_to_walk() -> None:
    ctx = RunContext(OperatorSettings(), NoKube())  # type: ignore[arg-type]
    gc.collect()
    before = len(gc.get_objects())
    for i in range(2000):
        ctx.remember(("default", f"r{i}"), body(f"r{i}", i))
    gc.collect()
    grown = len(gc.get_objects()) - before
    # A decoded body is ~20 tracked containers; a kept one is none (plus the index's tuple).
    assert grown < 2000 * 2, grown
    assert len(ctx.bodies) == 2000


def test_the_newest_version_wins_and_reads_are_copies() -> None:
    ctx = RunContext(OperatorSettings(), NoKube())  # type: ignore[arg-type]
    key = ("default", "r")
    assert ctx.remember(key, body("r", 5)) is None
    previous = ctx.remember(key, body("r", 4, phase="Running"))  # a late watch event
    assert previous is not None
    assert ctx.bodies[key]["status"]["phase"] == "Queued"
    ctx.remember(key, body("r", 6, phase="Running"))
    read = ctx.bodies.get(key)
    assert read is not None
    assert read["status"]["phase"] == "Running"
    read["status"]["phase"] = "Failed"  # the reader's own copy
    assert ctx.bodies[key]["status"]["phase"] == "Running"
    assert ctx.bodies.pop(key) is not None
    assert key not in ctx.bodies

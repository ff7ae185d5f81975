"""Retention of finished AgentRuns: by age and by count per namespace, oldest first.

Deleting an AgentRun removes, through ownerReferences, its Job, pod, input Secret, transcript
chunks and result. A run whose webhook delivery is still pending is kept until it is delivered
or has failed (at least once: a pending delivery is never lost to cleanup).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from datetime import datetime
from typing import Any

from agentrun_contract.resource import TERMINAL_PHASES, Phase

from agentrun_operator.kube_io import Kube
from agentrun_operator.run_status import parse_time
from agentrun_operator.settings import OperatorSettings

log = logging.getLogger("agentrun.operator")
Obj = dict[str, Any]


def _finished_at(run: Obj) -> datetime | None:
    status = run.get("status") or {}
    return parse_time(status.get("completedAt")) or parse_time(
        (run.get("metadata") or {}).get("creationTimestamp")
    )


def plan_retention(
    runs: list[Obj], now: datetime, *, max_age_seconds: float, max_runs: int
) -> list[tuple[str, str]]:
    """(namespace, name) of the finished runs to delete now, oldest first.

    Finished = terminal phase. Runs with ``status.webhook.state == pending`` are never chosen.
    Per namespace: every finished run older than ``max_age_seconds`` (by completedAt), then the
    oldest beyond ``max_runs`` finished runs.
    """
    terminal = {p.value for p in TERMINAL_PHASES}
    by_namespace: dict[str, list[tuple[datetime, str]]] = defaultdict(list)
    pending: set[tuple[str, str]] = set()
    for run in runs:
        status = run.get("status") or {}
        if status.get("phase") not in terminal:
            continue
        meta = run.get("metadata") or {}
        key = (str(meta.get("namespace")), str(meta.get("name")))
        if meta.get("deletionTimestamp"):
            continue
        finished = _finished_at(run)
        if finished is None:
            continue
        by_namespace[key[0]].append((finished, key[1]))
        if (status.get("webhook") or {}).get("state") == "pending":
            pending.add(key)
    doomed: list[tuple[datetime, str, str]] = []
    for namespace, items in by_namespace.items():
        items.sort()
        excess = max(0, len(items) - max_runs)
        for position, (finished, name) in enumerate(items):
            too_old = (now - finished).total_seconds() > max_age_seconds
            if (too_old or position < excess) and (namespace, name) not in pending:
                doomed.append((finished, namespace, name))
    doomed.sort()
    return [(ns, name) for _, ns, name in doomed]


async def retention_loop(kube: Kube, settings: OperatorSettings, now: Any) -> None:
    """Apply :func:`plan_retention` every ``retention_interval_seconds`` (leader only)."""
    while True:
        try:
            runs: list[Obj] = []
            if settings.cluster_wide:
                result = await kube._call(
                    kube.custom.list_cluster_custom_object("agentrun.dev", "v1alpha1", "agentruns")
                )
                runs = list(result.get("items") or [])
            else:
                for namespace in settings.namespaces:
                    runs.extend(await kube.list_runs(namespace))
            plan = plan_retention(
                runs,
                now(),
                max_age_seconds=settings.retention_seconds,
                max_runs=settings.retention_max_runs,
            )
            for namespace, name in plan:
                await kube.delete_run(namespace, name)
            if plan:
                log.info("retention deleted %d finished runs", len(plan))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("retention pass failed: %s", exc)
        await asyncio.sleep(settings.retention_interval_seconds)


__all__ = ["Phase", "plan_retention", "retention_loop"]

"""Server-side printing: the ``meta.k8s.io/v1`` Table that ``kubectl get`` asks for.

Custom resources: Name, then the version's ``additionalPrinterColumns`` (``priority`` carried
so kubectl shows priority > 0 only with ``-o wide``), or Name + Age when it declares none.
Cells are computed as apiextensions-apiserver's table convertor does: a JSONPath per column,
``date`` columns rendered as the age since that timestamp (``5m``, ``3h2m``, as
apimachinery's HumanDuration), missing values as null (kubectl prints ``<none>``).
Builtins get the columns kubectl users know (pods: Ready/Status/Restarts/Age; jobs:
Status/Completions/Duration/Age; ...), and Name + Age otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from .resources import ResourceType

Obj = dict[str, Any]
Column = dict[str, Any]

NAME_COLUMN: Column = {
    "name": "Name",
    "type": "string",
    "format": "name",
    "description": "Name must be unique within a namespace. More info: "
    "https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names",
    "priority": 0,
}
AGE_COLUMN: Column = {
    "name": "Age",
    "type": "string",
    "format": "",
    "description": "CreationTimestamp is a timestamp representing the server time when this "
    "object was created.",
    "priority": 0,
}


def wants_table(accept: str) -> bool:
    """True when the client prefers a Table (its first Accept entry says ``as=Table``)."""
    first = accept.split(",")[0]
    return "as=Table" in first and "g=meta.k8s.io" in first


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    text = value[:-1] + "+00:00" if value.endswith("Z") else value
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def human_duration(seconds: float) -> str:
    """apimachinery's duration.HumanDuration."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        rest = s % 60
        return f"{minutes}m" if rest == 0 else f"{minutes}m{rest}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h" if rest == 0 else f"{hours}h{rest}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d" if rest == 0 else f"{hours // 24}d{rest}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        years = hours // 24 // 365
        return f"{years}y" if days == 0 else f"{years}y{days}d"
    return f"{hours // 24 // 365}y"


def age(value: Any, now: datetime | None = None) -> str:
    parsed = _parse_time(value)
    if parsed is None:
        return "<unknown>"
    return human_duration(((now or datetime.now(UTC)) - parsed).total_seconds())


# -- JSONPath (the subset printer columns use) -----------------------------------------------

_TOKEN = re.compile(
    r"\.([A-Za-z0-9_\-]+)|\[(\d+)\]|\[\?\(@\.([A-Za-z0-9_.\-]+)\s*==\s*[\"']([^\"']*)[\"']\)\]|\[\*\]"
)


def json_path(obj: Any, path: str) -> list[Any]:
    """Evaluate ``.a.b[0].c``, ``[*]`` and ``[?(@.type=="Ready")]`` paths; all matches."""
    text = path.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1]
    if text.startswith("$"):
        text = text[1:]
    nodes: list[Any] = [obj]
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            return []
        pos = m.end()
        nxt: list[Any] = []
        for node in nodes:
            if m.group(1) is not None:
                if isinstance(node, dict) and m.group(1) in node:
                    nxt.append(node[m.group(1)])
            elif m.group(2) is not None:
                i = int(m.group(2))
                if isinstance(node, list) and i < len(node):
                    nxt.append(node[i])
            elif m.group(3) is not None:
                if isinstance(node, list):
                    for item in node:
                        found = json_path(item, "." + m.group(3))
                        if found and str(found[0]) == m.group(4):
                            nxt.append(item)
            elif isinstance(node, list):
                nxt.extend(node)
        nodes = nxt
    return nodes


def _cell(column_type: str, value: Any) -> Any:
    if value is None:
        return None
    if column_type == "date":
        return age(value)
    if column_type == "integer" and isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    if column_type == "number" and isinstance(value, int | float) and not isinstance(value, bool):
        return value
    if column_type == "boolean" and isinstance(value, bool):
        return value
    if isinstance(value, dict | list):
        import json

        return json.dumps(value, separators=(",", ":"))
    return str(value) if column_type == "string" else value


# -- builtin columns -------------------------------------------------------------------------


def _pod_status(pod: Obj) -> str:
    meta, status = pod["metadata"], pod.get("status") or {}
    reason = status.get("reason") or status.get("phase") or "Pending"
    for cs in status.get("containerStatuses") or []:
        state = cs.get("state") or {}
        if state.get("waiting", {}).get("reason"):
            reason = state["waiting"]["reason"]
        elif state.get("terminated"):
            term = state["terminated"]
            reason = term.get("reason") or (
                f"Signal:{term['signal']}"
                if term.get("signal")
                else f"ExitCode:{term.get('exitCode')}"
            )
    if meta.get("deletionTimestamp") and status.get("reason") != "NodeLost":
        reason = "Terminating"
    return str(reason)


def _pod_ready(pod: Obj) -> str:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    total = len((pod.get("spec") or {}).get("containers") or [])
    ready = sum(1 for cs in statuses if cs.get("ready"))
    return f"{ready}/{total}"


def _pod_restarts(pod: Obj) -> int:
    return sum(
        int(cs.get("restartCount", 0))
        for cs in (pod.get("status") or {}).get("containerStatuses") or []
    )


def _job_status(job: Obj) -> str:
    if job["metadata"].get("deletionTimestamp"):
        return "Terminating"
    conditions = {
        c.get("type"): c.get("status") for c in (job.get("status") or {}).get("conditions") or []
    }
    for kind in ("Failed", "Complete", "FailureTarget", "SuccessCriteriaMet", "Suspended"):
        if conditions.get(kind) == "True":
            return kind
    return "Running"


def _job_duration(job: Obj) -> str:
    status = job.get("status") or {}
    start = _parse_time(status.get("startTime"))
    if start is None:
        return ""
    end = _parse_time(status.get("completionTime")) or datetime.now(UTC)
    return human_duration((end - start).total_seconds())


def _col(name: str, kind: str = "string", priority: int = 0) -> Column:
    return {"name": name, "type": kind, "format": "", "description": name, "priority": priority}


BuiltinColumns = list[tuple[Column, Callable[[Obj], Any]]]

BUILTIN: dict[tuple[str, str], BuiltinColumns] = {
    ("", "pods"): [
        (_col("Ready"), _pod_ready),
        (_col("Status"), _pod_status),
        (_col("Restarts", "string"), lambda o: str(_pod_restarts(o))),
        (AGE_COLUMN, lambda o: age(o["metadata"].get("creationTimestamp"))),
        (_col("IP", priority=1), lambda o: (o.get("status") or {}).get("podIP") or "<none>"),
        (_col("Node", priority=1), lambda o: (o.get("spec") or {}).get("nodeName") or "<none>"),
    ],
    ("batch", "jobs"): [
        (_col("Status"), _job_status),
        (
            _col("Completions"),
            lambda o: (
                f"{(o.get('status') or {}).get('succeeded', 0)}/"
                f"{(o.get('spec') or {}).get('completions', 1)}"
            ),
        ),
        (_col("Duration"), _job_duration),
        (AGE_COLUMN, lambda o: age(o["metadata"].get("creationTimestamp"))),
    ],
    ("", "namespaces"): [
        (_col("Status"), lambda o: (o.get("status") or {}).get("phase", "")),
        (AGE_COLUMN, lambda o: age(o["metadata"].get("creationTimestamp"))),
    ],
    ("", "configmaps"): [
        (
            _col("Data", "integer"),
            lambda o: len(o.get("data") or {}) + len(o.get("binaryData") or {}),
        ),
        (AGE_COLUMN, lambda o: age(o["metadata"].get("creationTimestamp"))),
    ],
    ("", "secrets"): [
        (_col("Type"), lambda o: o.get("type", "Opaque")),
        (_col("Data", "integer"), lambda o: len(o.get("data") or {})),
        (AGE_COLUMN, lambda o: age(o["metadata"].get("creationTimestamp"))),
    ],
    ("coordination.k8s.io", "leases"): [
        (_col("Holder"), lambda o: (o.get("spec") or {}).get("holderIdentity", "")),
        (AGE_COLUMN, lambda o: age(o["metadata"].get("creationTimestamp"))),
    ],
}


def table(rt: ResourceType, items: list[Obj], rv: int, include_object: str = "Metadata") -> Obj:
    """The Table for ``items`` of resource type ``rt``.

    ``include_object`` as the ``includeObject`` query: ``Metadata`` (default: rows carry a
    PartialObjectMetadata), ``Object`` (the whole object) or ``None``.
    """
    getters: list[Callable[[Obj], Any]] = [lambda o: o["metadata"]["name"]]
    columns: list[Column] = [NAME_COLUMN]
    if rt.custom:
        printer = rt.printer_columns or [
            {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
        ]
        for spec in printer:
            columns.append(
                {
                    "name": spec["name"],
                    "type": spec.get("type", "string"),
                    "format": spec.get("format", ""),
                    "description": spec.get("description", ""),
                    "priority": int(spec.get("priority", 0)),
                }
            )
            getters.append(_custom_getter(spec))
    else:
        for column, getter in BUILTIN.get(
            rt.key, [(AGE_COLUMN, lambda o: age(o["metadata"].get("creationTimestamp")))]
        ):
            columns.append(column)
            getters.append(getter)
    rows = [
        {
            "cells": [getter(item) for getter in getters],
            **_row_object(item, include_object),
        }
        for item in items
    ]
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": str(rv)},
        "columnDefinitions": columns,
        "rows": rows,
    }


def _custom_getter(spec: Column) -> Callable[[Obj], Any]:
    path = spec.get("jsonPath", "")
    kind = spec.get("type", "string")

    def getter(obj: Obj) -> Any:
        found = json_path(obj, path)
        return _cell(kind, found[0]) if found else None

    return getter


def _row_object(item: Obj, include_object: str) -> Obj:
    if include_object == "None":
        return {}
    if include_object == "Object":
        return {"object": item}
    return {
        "object": {
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": item["metadata"],
        }
    }

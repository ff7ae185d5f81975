"""Server-side printing: the meta.k8s.io/v1 Table that kubectl asks for."""

from __future__ import annotations

from typing import Any

from .resources import ResourceType


def wants_table(accept: str) -> bool:
    """True when the Accept header asks for ``as=Table`` first (kubectl get)."""
    first = accept.split(",")[0]
    return "as=Table" in first


def table(rt: ResourceType, items: list[dict[str, Any]], rv: int) -> dict[str, Any]:
    columns = [
        {"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0}
    ]
    rows = [
        {
            "cells": [item["metadata"]["name"]],
            "object": {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": item["metadata"],
            },
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

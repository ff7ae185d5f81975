"""Admission of objects before they are stored: structural-schema handling and size limits."""

from __future__ import annotations

from typing import Any

from .limits import check_sizes
from .resources import ResourceType


def admit_object(
    rt: ResourceType, new: dict[str, Any], old: dict[str, Any] | None
) -> dict[str, Any]:
    """Prune, default and validate ``new`` (custom resources), then check the size limits."""
    check_sizes(rt.kind, rt.group, new)
    return new

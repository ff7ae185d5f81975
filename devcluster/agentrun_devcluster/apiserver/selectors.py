"""Label and field selectors, parsed as the real apiserver parses them.

Label selectors: ``k=v``, ``k==v``, ``k!=v``, ``k in (a,b)``, ``k notin (a,b)``, ``k`` (exists),
``!k`` (does not exist), comma-separated (AND). Field selectors: ``f=v``, ``f==v``, ``f!=v`` on
``metadata.name``, ``metadata.namespace`` and, for pods, ``status.phase`` and ``spec.nodeName``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .errors import APIError, bad_request

Predicate = Callable[[dict[str, Any]], bool]

_SET_OP = re.compile(r"^\s*(!?)([A-Za-z0-9_./-]+)\s+(in|notin)\s*\(([^)]*)\)\s*$")
_EQ_OP = re.compile(r"^\s*([A-Za-z0-9_./-]+)\s*(==|!=|=)\s*([A-Za-z0-9_.-]*)\s*$")
_EXISTS = re.compile(r"^\s*(!?)\s*([A-Za-z0-9_./-]+)\s*$")


def _split_requirements(selector: str) -> list[str]:
    """Split on commas that are not inside ``( )``."""
    parts: list[str] = []
    depth = 0
    current = ""
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return [p for p in parts if p.strip()]


def parse_label_selector(selector: str | None) -> Predicate:
    """A predicate over objects for ``selector``; raises 400 BadRequest when malformed."""
    if not selector or not selector.strip():
        return lambda obj: True
    checks: list[Callable[[dict[str, str]], bool]] = []
    for requirement in _split_requirements(selector):
        checks.append(_parse_label_requirement(requirement))

    def predicate(obj: dict[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(check(labels) for check in checks)

    return predicate


def _parse_label_requirement(text: str) -> Callable[[dict[str, str]], bool]:
    m = _SET_OP.match(text)
    if m and not m.group(1):
        key, op = m.group(2), m.group(3)
        values = {v.strip() for v in m.group(4).split(",") if v.strip()}
        if op == "in":
            return lambda labels: key in labels and labels[key] in values
        return lambda labels: key not in labels or labels[key] not in values
    m = _EQ_OP.match(text)
    if m:
        key, op, value = m.group(1), m.group(2), m.group(3)
        if op == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: key in labels and labels[key] == value
    m = _EXISTS.match(text)
    if m:
        negate, key = bool(m.group(1)), m.group(2)
        if negate:
            return lambda labels: key not in labels
        return lambda labels: key in labels
    raise bad_request(f"unable to parse requirement: {text.strip()!r}")


def _field_value(obj: dict[str, Any], path: str) -> str:
    node: Any = obj
    for part in path.split("."):
        if not isinstance(node, dict):
            return ""
        node = node.get(part)
    return "" if node is None else str(node)


SUPPORTED_FIELDS: dict[str, frozenset[str]] = {
    "": frozenset({"metadata.name", "metadata.namespace"}),
    "pods": frozenset(
        {
            "metadata.name",
            "metadata.namespace",
            "status.phase",
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.serviceAccountName",
        }
    ),
    "events": frozenset(
        {
            "metadata.name",
            "metadata.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.kind",
            "involvedObject.namespace",
            "reason",
            "type",
            "regarding.name",
            "regarding.uid",
            "regarding.kind",
        }
    ),
    "secrets": frozenset({"metadata.name", "metadata.namespace", "type"}),
    "jobs": frozenset({"metadata.name", "metadata.namespace", "status.successful"}),
}


def parse_field_selector(selector: str | None, plural: str, kind: str) -> Predicate:
    """A predicate for ``selector``; unsupported fields get the real 400 wording."""
    if not selector or not selector.strip():
        return lambda obj: True
    allowed = SUPPORTED_FIELDS.get(plural, SUPPORTED_FIELDS[""])
    checks: list[Predicate] = []
    for requirement in _split_requirements(selector):
        m = _EQ_OP.match(requirement)
        if not m:
            raise bad_request(f"invalid selector: '{selector}'; can't understand '{requirement}'")
        path, op, value = m.group(1), m.group(2), m.group(3)
        if path not in allowed:
            raise APIError(
                400,
                "BadRequest",
                f"field label not supported: {path}",
            )
        checks.append(_field_check(path, value, negate=op == "!="))
    return lambda obj: all(check(obj) for check in checks)


def _field_check(path: str, value: str, *, negate: bool) -> Predicate:
    def check(obj: dict[str, Any]) -> bool:
        return (_field_value(obj, path) == value) != negate

    return check

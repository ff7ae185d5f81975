"""Patch application: JSON merge patch (RFC 7386), JSON patch (RFC 6902), strategic merge.

The real apiserver answers a JSON patch that cannot be applied (a failed ``test`` op, a path that
does not exist) with **422** ``Invalid`` and the message "the server rejected our request due to
an error in our request" (apiserver/pkg/endpoints/handlers/patch.go wraps the jsonpatch error in
``NewGenericServerResponse(http.StatusUnprocessableEntity, ...)``); :class:`PatchError` carries
that, and the HTTP layer answers 422 the same way.

Strategic merge patch is emulated for what this project sends: a merge patch, except that lists
of objects that Kubernetes merges by a key (containers, env, volumes, volumeMounts, ports,
conditions, ownerReferences...) are merged by that key, and ``$patch: delete`` removes an item.
"""

from __future__ import annotations

import copy
from typing import Any


class PatchError(Exception):
    """The patch could not be applied; answered as 422 (see the module docstring)."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, ``null`` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


#: Lists that strategic merge patch merges by a key field (from the Kubernetes type tags).
MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "conditions": "type",
    "ownerReferences": "uid",
    "imagePullSecrets": "name",
    "tolerations": "key",
    "containerStatuses": "name",
    "initContainerStatuses": "name",
}


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Merge patch, with keyed merging for the lists in :data:`MERGE_KEYS`."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
        elif key in MERGE_KEYS and isinstance(value, list) and isinstance(result.get(key), list):
            result[key] = _merge_keyed_list(result[key], value, MERGE_KEYS[key])
        elif key == "finalizers" and isinstance(value, list):
            # finalizers is a set-like list with merge strategy: union, keep order.
            current = list(result.get(key) or [])
            result[key] = current + [f for f in value if f not in current]
        else:
            result[key] = strategic_merge_patch(result.get(key), value)
    return result


def _merge_keyed_list(current: list[Any], patch: list[Any], merge_key: str) -> list[Any]:
    merged = [copy.deepcopy(item) for item in current]
    for item in patch:
        if not isinstance(item, dict) or merge_key not in item:
            merged.append(copy.deepcopy(item))
            continue
        index = next(
            (
                i
                for i, cur in enumerate(merged)
                if isinstance(cur, dict) and cur.get(merge_key) == item[merge_key]
            ),
            None,
        )
        if item.get("$patch") == "delete":
            if index is not None:
                del merged[index]
        elif index is None:
            merged.append(strategic_merge_patch({}, item))
        else:
            merged[index] = strategic_merge_patch(merged[index], item)
    return merged


# -- RFC 6902 --------------------------------------------------------------------------------


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _split_pointer(pointer: str) -> list[str]:
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise PatchError(f"invalid JSON pointer: {pointer!r}")
    return [_unescape(t) for t in pointer[1:].split("/")]


def _resolve_parent(doc: Any, tokens: list[str], pointer: str) -> tuple[Any, str]:
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict):
            if token not in node:
                raise PatchError(f"doc is missing path: {pointer!r}")
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(token, len(node), pointer)]
        else:
            raise PatchError(f"doc is missing path: {pointer!r}")
    return node, tokens[-1]


def _index(token: str, length: int, pointer: str, *, allow_end: bool = False) -> int:
    if token == "-" and allow_end:
        return length
    if not token.isdigit():
        raise PatchError(f"invalid array index {token!r} in {pointer!r}")
    i = int(token)
    limit = length if allow_end else length - 1
    if i > limit:
        raise PatchError(f"array index out of bounds: {pointer!r}")
    return i


def _get(doc: Any, pointer: str) -> Any:
    node = doc
    for token in _split_pointer(pointer):
        if isinstance(node, dict):
            if token not in node:
                raise PatchError(f"doc is missing path: {pointer!r}")
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(token, len(node), pointer)]
        else:
            raise PatchError(f"doc is missing path: {pointer!r}")
    return node


def _add(doc: Any, pointer: str, value: Any) -> Any:
    tokens = _split_pointer(pointer)
    if not tokens:
        return value
    parent, last = _resolve_parent(doc, tokens, pointer)
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(last, len(parent), pointer, allow_end=True), value)
    else:
        raise PatchError(f"doc is missing path: {pointer!r}")
    return doc


def _remove(doc: Any, pointer: str) -> tuple[Any, Any]:
    tokens = _split_pointer(pointer)
    if not tokens:
        raise PatchError("cannot remove the whole document")
    parent, last = _resolve_parent(doc, tokens, pointer)
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"unable to remove nonexistent key: {last}: missing value")
        return doc, parent.pop(last)
    if isinstance(parent, list):
        return doc, parent.pop(_index(last, len(parent), pointer))
    raise PatchError(f"doc is missing path: {pointer!r}")


def json_patch(doc: Any, operations: Any) -> Any:
    """Apply RFC 6902 ``operations`` to a copy of ``doc``; raises :class:`PatchError`."""
    if not isinstance(operations, list):
        raise PatchError("json patch must be a list of operations")
    result = copy.deepcopy(doc)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(f"invalid json patch operation: {op!r}")
        kind, path = op["op"], op["path"]
        if kind == "add":
            result = _add(result, path, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            result, _ = _remove(result, path)
        elif kind == "replace":
            _get(result, path)  # must exist
            result, _ = _remove(result, path) if path else (result, None)
            result = _add(result, path, copy.deepcopy(op.get("value")))
        elif kind == "move":
            source = op.get("from", "")
            result, value = _remove(result, source)
            result = _add(result, path, value)
        elif kind == "copy":
            value = copy.deepcopy(_get(result, op.get("from", "")))
            result = _add(result, path, value)
        elif kind == "test":
            _test(result, path, op.get("value"))
        else:
            raise PatchError(f"Unexpected kind: {kind}")
    return result


def _test(doc: Any, path: str, expected: Any) -> None:
    """``test``, as evanphx/json-patch (the apiserver's library) does it.

    A missing key whose parent exists compares equal to ``null``: so ``{"op": "test", "path":
    "/status", "value": null}`` passes on an object without status. A missing parent fails.
    """
    tokens = _split_pointer(path)
    if tokens:
        try:
            parent, last = _resolve_parent(doc, tokens, path)
        except PatchError:
            raise PatchError(f"testing value {path} failed: missing path") from None
        if isinstance(parent, dict):
            current = parent.get(last)
        elif isinstance(parent, list):
            try:
                current = parent[_index(last, len(parent), path)]
            except PatchError:
                current = None
        else:
            raise PatchError(f"testing value {path} failed: missing path")
    else:
        current = doc
    if current != expected:
        raise PatchError(f"testing value {path} failed: test failed")

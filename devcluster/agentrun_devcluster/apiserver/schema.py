"""Admission of objects before they are stored, as the real apiserver does it.

For custom resources with a structural schema (apiextensions-apiserver), in this order:

1. **Pruning**: fields not in the schema are dropped, except under
   ``x-kubernetes-preserve-unknown-fields: true``; ``apiVersion``, ``kind`` and ``metadata`` at
   the root are never pruned (metadata is validated as ObjectMeta, not by the schema, except
   ``metadata.name``/``generateName`` constraints).
2. **Nulls**: ``null`` values of fields that are not ``nullable`` are dropped (before defaulting).
3. **Defaulting**: an absent field with a ``default`` gets it (recursively).
4. **Validation**: type, required, enum, minimum/maximum (+exclusive), minLength/maxLength,
   pattern, minItems/maxItems, uniqueItems, minProperties/maxProperties, format (``uri`` and
   ``date-time`` as leniently as Go's parsers; unknown formats are ignored), nullable; then the
   ``x-kubernetes-validations`` CEL rules (cel-python), where a rule that mentions ``oldSelf``
   is a transition rule and only runs on update when the old value exists.

Errors are 422 Invalid with the real wording, e.g.
``AgentRun.agentrun.dev "x" is invalid: spec.prompt: Required value``.

Builtin kinds get their registry strategies' defaulting and validation (builtins.py).
Then, for every kind, the ObjectMeta checks (label syntax) and the size limits (limits.py).
"""

from __future__ import annotations

import copy
import json
import re
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from . import cel, errors
from .builtins import admit_builtin
from .limits import check_sizes
from .resources import ResourceType

Causes = list[tuple[str, str]]
_MISSING = object()


def admit_object(
    rt: ResourceType, new: dict[str, Any], old: dict[str, Any] | None
) -> dict[str, Any]:
    """Prune, default and validate ``new`` (custom resources), then check metadata and sizes."""
    name = str((new.get("metadata") or {}).get("name", ""))
    causes: Causes = []
    if rt.custom and rt.schema is not None:
        new = apply_structural_schema(rt.schema, new)
        causes += validate(rt.schema, new, old)
    elif not rt.custom:
        new, builtin_causes = admit_builtin(rt.key, new, old)
        causes += builtin_causes
    causes += validate_object_meta(new.get("metadata") or {})
    if causes:
        raise errors.invalid(rt.kind, rt.group, name, causes)
    check_sizes(rt.kind, rt.group, new)
    return new


# -- pruning, nulls, defaults ----------------------------------------------------------------


def apply_structural_schema(schema: dict[str, Any], obj: dict[str, Any]) -> dict[str, Any]:
    """Prune unknown fields, drop non-nullable nulls, apply defaults (a new object)."""
    result = copy.deepcopy(obj)
    props = schema.get("properties") or {}
    for key in list(result):
        if key in ("apiVersion", "kind", "metadata"):
            continue
        if key not in props and not schema.get("x-kubernetes-preserve-unknown-fields"):
            del result[key]
    for key, sub in props.items():
        if key in ("apiVersion", "kind", "metadata"):
            continue
        _process_field(result, key, sub)
    return result


def _process_field(container: dict[str, Any], key: str, schema: dict[str, Any]) -> None:
    if key in container and container[key] is None and not schema.get("nullable"):
        del container[key]
    if key not in container and "default" in schema:
        container[key] = copy.deepcopy(schema["default"])
    if key in container:
        container[key] = _process_value(container[key], schema)


def _process_value(value: Any, schema: dict[str, Any]) -> Any:
    if isinstance(value, dict) and (schema.get("type") == "object" or "properties" in schema):
        props = schema.get("properties")
        additional = schema.get("additionalProperties")
        preserve = schema.get("x-kubernetes-preserve-unknown-fields")
        if props is not None:
            if not preserve:
                for key in [k for k in value if k not in props]:
                    if not isinstance(additional, dict):
                        del value[key]
            for key, sub in props.items():
                _process_field(value, key, sub)
        if isinstance(additional, dict):
            for key in [k for k in value if props is None or k not in props]:
                _process_field(value, key, additional)
        elif props is None and not preserve and additional is not True:
            # type: object with neither properties nor additionalProperties: nothing is known.
            value.clear()
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        items_schema = schema["items"]
        value[:] = [
            _process_value(item, items_schema)
            for item in value
            if item is not None or items_schema.get("nullable")
        ]
    return value


# -- validation ------------------------------------------------------------------------------


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _type_ok(expected: str, value: Any) -> bool:
    actual = _type_name(value)
    if expected == "number":
        return actual in ("integer", "number")
    if expected == "integer":
        return actual == "integer" or (actual == "number" and float(value).is_integer())
    return actual == expected


def _render(value: Any) -> str:
    """A value as Go's %#v-ish rendering in field errors (strings quoted, numbers bare)."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(_type_name(value))


def _uri_ok(text: str) -> bool:
    """Go's url.Parse is lenient: reject control characters, bad escapes, bad hosts only."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        return False
    if re.search(r"%(?![0-9A-Fa-f]{2})", text):
        return False
    try:
        parts = urlsplit(text)
        _ = parts.port
    except ValueError:
        return False
    return not (parts.netloc and " " in parts.netloc)


def _datetime_ok(text: str) -> bool:
    candidate = text.strip()
    if candidate.endswith(("Z", "z")):
        candidate = candidate[:-1] + "+00:00"
    try:
        datetime.fromisoformat(candidate)
    except ValueError:
        return False
    return "T" in text or "t" in text or " " in text


FORMAT_CHECKS = {"uri": _uri_ok, "date-time": _datetime_ok, "datetime": _datetime_ok}


def validate(schema: dict[str, Any], obj: dict[str, Any], old: dict[str, Any] | None) -> Causes:
    """Schema and CEL validation of a whole custom object; returns ``(field, message)`` causes."""
    causes: Causes = []
    meta_schema = ((schema.get("properties") or {}).get("metadata") or {}).get("properties") or {}
    meta = obj.get("metadata") or {}
    for key in ("name", "generateName"):
        if key in meta_schema and key in meta:
            _validate_scalar(meta_schema[key], meta[key], f"metadata.{key}", causes)
    props = schema.get("properties") or {}
    for key in schema.get("required") or []:
        if key not in obj:
            causes.append((key, "Required value"))
    for key, sub in props.items():
        if key in ("apiVersion", "kind", "metadata") or key not in obj:
            continue
        old_value = (old or {}).get(key, _MISSING) if old is not None else _MISSING
        _validate_value(sub, obj[key], key, old_value, causes)
    _run_rules(schema, obj, old if old is not None else _MISSING, "", causes)
    return causes


def _validate_value(
    schema: dict[str, Any], value: Any, path: str, old: Any, causes: Causes
) -> None:
    if value is None:
        if not schema.get("nullable"):
            causes.append(
                (
                    path,
                    f'Invalid value: "null": {path} in body must be of type {schema.get("type", "object")}: "null"',
                )
            )
        return
    expected = schema.get("type")
    if expected and not _type_ok(expected, value):
        actual = _type_name(value)
        causes.append(
            (
                path,
                f'Invalid value: "{actual}": {path} in body must be of type {expected}: "{actual}"',
            )
        )
        return
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        for key in schema.get("required") or []:
            if key not in value:
                causes.append((f"{path}.{key}", "Required value"))
        additional = schema.get("additionalProperties")
        for key, item in value.items():
            sub = props.get(key)
            if sub is None and isinstance(additional, dict):
                sub = additional
            if sub is None:
                continue
            old_item = old.get(key, _MISSING) if isinstance(old, dict) else _MISSING
            _validate_value(sub, item, f"{path}.{key}", old_item, causes)
        if "maxProperties" in schema and len(value) > schema["maxProperties"]:
            causes.append(
                (path, f"Too many: {len(value)}: must have at most {schema['maxProperties']} items")
            )
        if "minProperties" in schema and len(value) < schema["minProperties"]:
            causes.append(
                (
                    path,
                    f"Invalid value: {len(value)}: {path} in body should have at least {schema['minProperties']} properties",
                )
            )
    elif isinstance(value, list):
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            causes.append(
                (path, f"Too many: {len(value)}: must have at most {schema['maxItems']} items")
            )
        if "minItems" in schema and len(value) < schema["minItems"]:
            causes.append(
                (
                    path,
                    f"Invalid value: {len(value)}: {path} in body should have at least {schema['minItems']} items",
                )
            )
        if schema.get("uniqueItems"):
            seen = [json.dumps(v, sort_keys=True) for v in value]
            if len(set(seen)) != len(seen):
                causes.append(
                    (path, f"Duplicate value: {path} in body shouldn't contain duplicates")
                )
        items = schema.get("items")
        if isinstance(items, dict):
            for i, item in enumerate(value):
                _validate_value(items, item, f"{path}[{i}]", _MISSING, causes)
    else:
        _validate_scalar(schema, value, path, causes)
    _run_rules(schema, value, old, path, causes)


def _validate_scalar(schema: dict[str, Any], value: Any, path: str, causes: Causes) -> None:
    if "enum" in schema and value not in schema["enum"]:
        supported = ", ".join(_render(v) for v in schema["enum"])
        causes.append((path, f"Unsupported value: {_render(value)}: supported values: {supported}"))
    if isinstance(value, str):
        length = len(value)
        if "maxLength" in schema and length > schema["maxLength"]:
            causes.append((path, f"Too long: may not be more than {schema['maxLength']} bytes"))
        if "minLength" in schema and length < schema["minLength"]:
            causes.append(
                (
                    path,
                    f"Invalid value: {_render(value)}: {path} in body should be at least {schema['minLength']} chars long",
                )
            )
        if "pattern" in schema and not re.search(schema["pattern"], value):
            causes.append(
                (
                    path,
                    f"Invalid value: {_render(value)}: {path} in body should match '{schema['pattern']}'",
                )
            )
        check = FORMAT_CHECKS.get(schema.get("format", ""))
        if check is not None and not check(value):
            causes.append(
                (
                    path,
                    f"Invalid value: {_render(value)}: {path} in body must be of type {schema['format']}: {_render(value)}",
                )
            )
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if "maximum" in schema:
            limit = schema["maximum"]
            if value > limit or (schema.get("exclusiveMaximum") and value == limit):
                word = "less than" if schema.get("exclusiveMaximum") else "less than or equal to"
                causes.append(
                    (
                        path,
                        f"Invalid value: {_render(value)}: {path} in body should be {word} {limit}",
                    )
                )
        if "minimum" in schema:
            limit = schema["minimum"]
            if value < limit or (schema.get("exclusiveMinimum") and value == limit):
                word = (
                    "greater than" if schema.get("exclusiveMinimum") else "greater than or equal to"
                )
                causes.append(
                    (
                        path,
                        f"Invalid value: {_render(value)}: {path} in body should be {word} {limit}",
                    )
                )


# -- CEL -------------------------------------------------------------------------------------


_REASON_PREFIX = {
    "FieldValueForbidden": "Forbidden: ",
    "FieldValueRequired": "Required value: ",
    "FieldValueDuplicate": "Duplicate value: ",
}


def _run_rules(schema: dict[str, Any], value: Any, old: Any, path: str, causes: Causes) -> None:
    rules = schema.get("x-kubernetes-validations") or []
    if not rules:
        return
    for rule in rules:
        expression = rule.get("rule", "")
        transition = re.search(r"\boldSelf\b", expression) is not None
        if transition and old is _MISSING and not rule.get("optionalOldSelf"):
            continue
        activation = {"self": value}
        if transition:
            activation["oldSelf"] = None if old is _MISSING else old
        field = path
        if rule.get("fieldPath"):
            field = (path + rule["fieldPath"]) if path else rule["fieldPath"].lstrip(".")
        shown = schema.get("type", "object")
        try:
            result = cel.evaluate(expression, activation)
        except cel.CelError as exc:  # CEL runtime errors are reported, as the real server does
            causes.append((field, f'Invalid value: "{shown}": {exc} evaluating rule: {expression}'))
            continue
        if result is not True:
            message = rule.get("message") or f"failed rule: {expression}"
            prefix = _REASON_PREFIX.get(rule.get("reason", ""), "")
            if prefix:
                causes.append((field, f"{prefix}{message}"))
            else:
                causes.append((field, f'Invalid value: "{shown}": {message}'))


# -- ObjectMeta ------------------------------------------------------------------------------

_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
    "'my_value',  or '12345', regex used for validation is "
    "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)
_QUALIFIED_MSG = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
    "with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used "
    "for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)


def _qualified_name_errors(key: str) -> list[str]:
    prefix, _, name = key.rpartition("/")
    problems = []
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        problems.append("prefix part must be a valid RFC 1123 subdomain")
    if not name or len(name) > 63:
        problems.append("name part must be no more than 63 characters")
    elif not _LABEL_NAME.match(name):
        problems.append(_QUALIFIED_MSG)
    return problems


_META_TYPES: dict[str, tuple[type, str]] = {
    "name": (str, "string"),
    "generateName": (str, "string"),
    "namespace": (str, "string"),
    "labels": (dict, "map[string]string"),
    "annotations": (dict, "map[string]string"),
    "finalizers": (list, "[]string"),
    "ownerReferences": (list, "[]v1.OwnerReference"),
}


def check_meta_types(meta: Any) -> None:
    """ObjectMeta fields of the wrong JSON type: a decode error (400), as on a real server."""
    if not isinstance(meta, dict):
        raise errors.bad_request(
            "json: cannot unmarshal into Go struct field of type v1.ObjectMeta (metadata)"
        )
    for field, (kind, go_type) in _META_TYPES.items():
        value = meta.get(field)
        if value is None:
            continue
        ok = isinstance(value, kind)
        if ok and go_type == "map[string]string":
            ok = all(isinstance(v, str) for v in value.values())
        elif ok and go_type == "[]string":
            ok = all(isinstance(v, str) for v in value)
        elif ok and field == "ownerReferences":
            ok = all(isinstance(v, dict) for v in value)
        if not ok:
            raise errors.bad_request(
                f"json: cannot unmarshal {_type_name(value)} into Go struct field "
                f"ObjectMeta.metadata.{field} of type {go_type}"
            )


def validate_object_meta(meta: dict[str, Any]) -> Causes:
    """Label keys/values, annotation keys and ownerReferences, worded as apimachinery's."""
    check_meta_types(meta)
    causes: Causes = []
    for i, ref in enumerate(meta.get("ownerReferences") or []):
        for field in ("apiVersion", "kind", "name"):
            if not ref.get(field):
                causes.append((f"metadata.ownerReferences[{i}].{field}", "Required value"))
        if not ref.get("uid"):
            causes.append(
                (f"metadata.ownerReferences[{i}].uid", 'Invalid value: "": uid must not be empty')
            )
    labels = meta.get("labels") or {}
    if not isinstance(labels, dict):
        return [("metadata.labels", "Invalid value: must be a map of strings")]
    for key, value in labels.items():
        for problem in _qualified_name_errors(str(key)):
            causes.append(("metadata.labels", f'Invalid value: "{key}": {problem}'))
        text = str(value)
        if len(text) > 63:
            causes.append(
                ("metadata.labels", f'Invalid value: "{text}": must be no more than 63 characters')
            )
        elif not _LABEL_VALUE.match(text):
            causes.append(("metadata.labels", f'Invalid value: "{text}": {_LABEL_VALUE_MSG}'))
    annotations = meta.get("annotations") or {}
    if isinstance(annotations, dict):
        for key in annotations:
            for problem in _qualified_name_errors(str(key)):
                causes.append(("metadata.annotations", f'Invalid value: "{key}": {problem}'))
    return causes

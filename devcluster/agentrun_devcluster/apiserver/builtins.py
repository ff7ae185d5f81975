"""Defaulting and validation of builtin kinds, as the real registry strategies do it.

Only what this project's objects meet:

- **Job** (create): ``parallelism``/``completions`` 1, ``backoffLimit`` 6, ``completionMode``
  NonIndexed, ``suspend`` false, ``podReplacementPolicy`` TerminatingOrFailed (Failed with a
  podFailurePolicy), the generated ``selector`` (``batch.kubernetes.io/controller-uid``) and
  the template labels ``batch.kubernetes.io/controller-uid``, ``controller-uid``,
  ``batch.kubernetes.io/job-name``, ``job-name``; pod-spec defaults on the template.
  Validation: the template's ``restartPolicy`` must be Never or OnFailure, containers are
  required, and on update ``spec.template``/``spec.selector``/``spec.completions`` are immutable.
- **Pod** (create): container defaults (``terminationMessagePath`` /dev/termination-log,
  ``terminationMessagePolicy`` File, ``imagePullPolicy`` Always for ``:latest``/untagged
  images, else IfNotPresent); containers need a name and an image. Pod spec updates are not
  restricted here (the fake kubelet binds pods with a patch of ``spec.nodeName``).
- **Secret**: ``stringData`` is merged into ``data`` (base64) and never stored; ``data`` must
  be base64 (400 otherwise, as JSON decoding into []byte fails on a real server); ``type``
  defaults to Opaque.
"""

from __future__ import annotations

import base64
import binascii
import copy
from typing import Any

from . import errors

Obj = dict[str, Any]
Causes = list[tuple[str, str]]


def admit_builtin(key: tuple[str, str], new: Obj, old: Obj | None) -> tuple[Obj, Causes]:
    """Default and validate a builtin object; returns it and the field errors found."""
    if key == ("batch", "jobs"):
        return _job(new, old)
    if key == ("", "pods"):
        if old is None:
            _pod_spec_defaults(new.setdefault("spec", {}))
        return new, _pod_spec_errors(new.get("spec") or {}, "spec")
    if key == ("", "secrets"):
        return _secret(new), []
    return new, []


def _image_pull_policy(image: str) -> str:
    last = image.rsplit("/", 1)[-1]
    if "@" in last:
        return "IfNotPresent"
    tag = last.split(":", 1)[1] if ":" in last else ""
    return "Always" if tag in ("", "latest") else "IfNotPresent"


def _pod_spec_defaults(spec: Obj, *, template: bool = False) -> None:
    if not template:
        spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    for kind in ("initContainers", "containers"):
        for container in spec.get(kind) or []:
            if not isinstance(container, dict):
                continue
            container.setdefault("terminationMessagePath", "/dev/termination-log")
            container.setdefault("terminationMessagePolicy", "File")
            if isinstance(container.get("image"), str):
                container.setdefault("imagePullPolicy", _image_pull_policy(container["image"]))
            container.setdefault("resources", {})


def _pod_spec_errors(spec: Obj, path: str) -> Causes:
    causes: Causes = []
    containers = spec.get("containers")
    if not containers:
        return [(f"{path}.containers", "Required value")]
    for i, container in enumerate(containers):
        if not isinstance(container, dict):
            causes.append((f"{path}.containers[{i}]", "Invalid value: must be an object"))
            continue
        if not container.get("name"):
            causes.append((f"{path}.containers[{i}].name", "Required value"))
        if not container.get("image"):
            causes.append((f"{path}.containers[{i}].image", "Required value"))
    return causes


def _job(new: Obj, old: Obj | None) -> tuple[Obj, Causes]:
    spec = new.setdefault("spec", {})
    if not isinstance(spec, dict):
        return new, [("spec", "Invalid value: must be an object")]
    template = spec.get("template")
    if not isinstance(template, dict):
        return new, [("spec.template", "Required value")]
    if old is None:
        meta = new["metadata"]
        uid, name = meta["uid"], meta["name"]
        spec.setdefault("parallelism", 1)
        spec.setdefault("completions", 1)
        spec.setdefault("backoffLimit", 6)
        spec.setdefault("completionMode", "NonIndexed")
        spec.setdefault("suspend", False)
        spec.setdefault(
            "podReplacementPolicy",
            "Failed" if spec.get("podFailurePolicy") else "TerminatingOrFailed",
        )
        if not spec.get("manualSelector"):
            spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
            labels = template.setdefault("metadata", {}).setdefault("labels", {})
            labels.update(
                {
                    "batch.kubernetes.io/controller-uid": uid,
                    "batch.kubernetes.io/job-name": name,
                    "controller-uid": uid,
                    "job-name": name,
                }
            )
        _pod_spec_defaults(template.setdefault("spec", {}), template=True)
    causes: Causes = []
    pod_spec = template.get("spec") or {}
    policy = pod_spec.get("restartPolicy")
    if policy is None:
        causes.append(
            (
                "spec.template.spec.restartPolicy",
                'Required value: valid values: "OnFailure", "Never"',
            )
        )
    elif policy not in ("OnFailure", "Never"):
        causes.append(
            (
                "spec.template.spec.restartPolicy",
                f'Unsupported value: "{policy}": supported values: "OnFailure", "Never"',
            )
        )
    causes += _pod_spec_errors(pod_spec, "spec.template.spec")
    if old is not None:
        old_spec = old.get("spec") or {}
        for field in ("template", "selector", "completions"):
            if field in old_spec and spec.get(field) != old_spec.get(field):
                causes.append((f"spec.{field}", 'Invalid value: "object": field is immutable'))
    return new, causes


def _secret(new: Obj) -> Obj:
    data = dict(new.get("data") or {})
    for key, value in data.items():
        try:
            base64.b64decode(str(value), validate=True)
        except (binascii.Error, ValueError):
            raise errors.bad_request(
                f'Secret in version "v1" cannot be handled as a Secret: illegal base64 data '
                f"at input byte 0 (key {key!r})"
            ) from None
    string_data = new.pop("stringData", None) or {}
    for key, value in string_data.items():
        data[key] = base64.b64encode(str(value).encode()).decode()
    if data or "data" in new:
        new["data"] = data
    new.setdefault("type", "Opaque")
    return copy.copy(new)

"""The admission plugins that refuse a pod create, as a v1.36 kube-apiserver runs them.

Only the refusals this project meets (the Job controller then records them as ``FailedCreate``),
in the real order and words:

1. **ServiceAccount** (mutating, before the name is generated, so the error names the pod by its
   ``generateName``): ``spec.serviceAccountName`` (default ``default``) must exist::

       pods "run-abc-" is forbidden: error looking up service account ft/agentrun-runner:
       serviceaccount "agentrun-runner" not found

2. **PodSecurity** (validating, after the name is generated): the namespace's
   ``pod-security.kubernetes.io/enforce`` level (``privileged``, ``baseline``, ``restricted``;
   ``enforce-version`` default ``latest``)::

       pods "run-abc-7vq4n" is forbidden: violates PodSecurity "restricted:latest":
       allowPrivilegeEscalation != false (container "x" must set ...), ...

   Checks (pod-security-admission's wording, baseline then restricted, each in check-ID order):
   non-default capabilities, host namespaces, hostPath volumes, privileged;
   allowPrivilegeEscalation, unrestricted capabilities, restricted volume types, runAsNonRoot,
   runAsUser=0, seccompProfile. Not emulated: AppArmor, SELinux, procMount, sysctls, host
   ports and probes, Windows host process, exemptions.

3. **ResourceQuota** (validating, last): every ResourceQuota of the namespace whose ``hard``
   lists ``pods``/``count/pods``, ``requests.cpu``/``cpu``, ``requests.memory``/``memory``,
   ``limits.cpu``, ``limits.memory``::

       pods "run-abc-k2x9q" is forbidden: exceeded quota: compute, requested:
       limits.memory=1Gi, used: limits.memory=0, limited: limits.memory=512Mi
       pods "run-abc-k2x9q" is forbidden: failed quota: compute: must specify limits.cpu for: runner

   Simplification: ``used`` is summed from the namespace's pods at admission (not phase
   Succeeded or Failed) instead of the quota controller's ``status.used``; init containers are
   not counted.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from decimal import Decimal, InvalidOperation
from typing import Any

from .errors import APIError

Obj = dict[str, Any]

LABEL_ENFORCE = "pod-security.kubernetes.io/enforce"
LABEL_ENFORCE_VERSION = "pod-security.kubernetes.io/enforce-version"

_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_QUANTITY = re.compile(r"^([+-]?[0-9]*\.?[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|[eE][+-]?[0-9]+|[numkMGTPE])?$")

#: pod-security-admission's baseline capabilities (capabilities_baseline, v1.0+).
BASELINE_CAPABILITIES = frozenset(
    {
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    }
)
RESTRICTED_VOLUME_TYPES = frozenset(
    {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
)


# -- quantities ---------------------------------------------------------------------------


def parse_quantity(text: Any) -> tuple[Decimal, bool]:
    """A Kubernetes quantity as (value, binary suffix?); a 400-worthy value raises ValueError."""
    m = _QUANTITY.match(str(text).strip())
    if not m:
        raise ValueError(f"quantities must match the regular expression: {text!r}")
    try:
        number = Decimal(m.group(1))
    except InvalidOperation as exc:
        raise ValueError(str(text)) from exc
    suffix = m.group(2) or ""
    if suffix in _BINARY:
        return number * (Decimal(1024) ** _BINARY[suffix]), True
    if suffix[:1] in ("e", "E") and len(suffix) > 1:
        return number.scaleb(int(suffix[1:])), False
    return number.scaleb(_DECIMAL[suffix]), False


def format_quantity(value: Decimal, binary: bool) -> str:
    """The canonical form Quantity.String() gives (``1Gi``, ``256Mi``, ``100m``, ``2``)."""
    if value == 0:
        return "0"
    if binary and value == value.to_integral_value():
        for suffix, power in sorted(_BINARY.items(), key=lambda kv: -kv[1]):
            unit = Decimal(1024) ** power
            if value % unit == 0:
                return f"{int(value / unit)}{suffix}"
        return str(int(value))
    for suffix, exponent in sorted(_DECIMAL.items(), key=lambda kv: -kv[1]):
        scaled = value.scaleb(-exponent)
        if scaled == scaled.to_integral_value():
            return f"{int(scaled)}{suffix}"
    return str(value)


# -- the checks ----------------------------------------------------------------------------


def forbidden(name: str, message: str) -> APIError:
    """403 as admission.NewForbidden words it: ``pods "<name>" is forbidden: <message>``."""
    return APIError(
        403,
        "Forbidden",
        f'pods "{name}" is forbidden: {message}',
        details={"name": name, "kind": "pods"},
    )


def admit_pod_create(
    pod: Obj,
    *,
    service_account: Callable[[str, str], Obj | None],
    namespace: Callable[[str], Obj | None],
    quotas: Callable[[str], list[Obj]],
    pods: Callable[[str], Iterable[Obj]],
) -> None:
    """Raise the 403 the first refusing plugin answers for creating ``pod`` (whose name is
    already generated; ``generateName`` is kept in its metadata)."""
    meta = pod.get("metadata") or {}
    ns = str(meta.get("namespace") or "default")
    spec = pod.get("spec") or {}
    account = str(spec.get("serviceAccountName") or "default")
    if service_account(ns, account) is None:
        before_naming = str(meta.get("generateName") or meta.get("name") or "")
        raise forbidden(
            before_naming,
            f"error looking up service account {ns}/{account}: "
            f'serviceaccount "{account}" not found',
        )
    name = str(meta.get("name") or "")
    labels = ((namespace(ns) or {}).get("metadata") or {}).get("labels") or {}
    level = str(labels.get(LABEL_ENFORCE) or "privileged")
    if level in ("baseline", "restricted"):
        violations = pod_security_violations(spec, restricted=level == "restricted")
        if violations:
            version = str(labels.get(LABEL_ENFORCE_VERSION) or "latest")
            detail = ", ".join(f"{reason} ({why})" if why else reason for reason, why in violations)
            raise forbidden(name, f'violates PodSecurity "{level}:{version}": {detail}')
    for quota in sorted(quotas(ns), key=lambda q: str((q.get("metadata") or {}).get("name"))):
        try:
            problem = quota_problem(quota, pod, pods(ns))
        except ValueError:
            continue  # a malformed quantity: validation refuses those before admission
        if problem:
            raise forbidden(name, problem)


def _containers(spec: Obj) -> list[Obj]:
    out: list[Obj] = []
    for kind in ("initContainers", "containers", "ephemeralContainers"):
        out += [c for c in spec.get(kind) or [] if isinstance(c, dict)]
    return out


def _plural(word: str, count: int) -> str:
    return word if count == 1 else f"{word}s"


def _quote(items: Iterable[str]) -> str:
    return ", ".join(f'"{item}"' for item in items)


def _who(names: list[str], word: str = "container") -> str:
    return f"{_plural(word, len(names))} {_quote(names)}"


def pod_security_violations(spec: Obj, *, restricted: bool) -> list[tuple[str, str]]:
    """(ForbiddenReason, ForbiddenDetail) of every failed check, in the real order."""
    out: list[tuple[str, str]] = []
    containers = _containers(spec)
    pod_sc = spec.get("securityContext") or {}

    def sc(c: Obj) -> Obj:
        return c.get("securityContext") or {}

    # baseline
    added: dict[str, list[str]] = {}
    for c in containers:
        for cap in (sc(c).get("capabilities") or {}).get("add") or []:
            if cap not in BASELINE_CAPABILITIES:
                added.setdefault(str(c.get("name")), []).append(str(cap))
    if added and not restricted:
        caps = sorted({cap for caps in added.values() for cap in caps})
        out.append(
            (
                "non-default capabilities",
                f"{_who(list(added))} must not include {_quote(caps)} in "
                f"securityContext.capabilities.add",
            )
        )
    hosts = [f"{f}=true" for f in ("hostNetwork", "hostPID", "hostIPC") if spec.get(f)]
    if hosts:
        out.append(("host namespaces", ", ".join(hosts)))
    host_paths = [str(v.get("name")) for v in spec.get("volumes") or [] if v.get("hostPath")]
    if host_paths:
        out.append(("hostPath volumes", _who(host_paths, "volume")))
    privileged = [str(c.get("name")) for c in containers if sc(c).get("privileged") is True]
    if privileged:
        out.append(
            ("privileged", f"{_who(privileged)} must not set securityContext.privileged=true")
        )
    if not restricted:
        return out

    escalating = [
        str(c.get("name")) for c in containers if sc(c).get("allowPrivilegeEscalation") is not False
    ]
    if escalating:
        out.append(
            (
                "allowPrivilegeEscalation != false",
                f"{_who(escalating)} must set securityContext.allowPrivilegeEscalation=false",
            )
        )
    no_drop = [
        str(c.get("name"))
        for c in containers
        if "ALL" not in ((sc(c).get("capabilities") or {}).get("drop") or [])
    ]
    adding = {
        str(c.get("name")): [
            str(cap)
            for cap in (sc(c).get("capabilities") or {}).get("add") or []
            if cap != "NET_BIND_SERVICE"
        ]
        for c in containers
    }
    adding = {name: caps for name, caps in adding.items() if caps}
    details = []
    if no_drop:
        details.append(f'{_who(no_drop)} must set securityContext.capabilities.drop=["ALL"]')
    if adding:
        caps = sorted({cap for caps in adding.values() for cap in caps})
        details.append(
            f"{_who(list(adding))} must not include {_quote(caps)} in "
            f"securityContext.capabilities.add"
        )
    if details:
        out.append(("unrestricted capabilities", "; ".join(details)))
    bad_volumes: list[str] = []
    bad_types: set[str] = set()
    for volume in spec.get("volumes") or []:
        kinds = [k for k in volume if k != "name"]
        wrong = [k for k in kinds if k not in RESTRICTED_VOLUME_TYPES]
        if wrong:
            bad_volumes.append(str(volume.get("name")))
            bad_types.update(wrong)
    if bad_volumes:
        verb = "uses" if len(bad_volumes) == 1 else "use"
        kinds = sorted(bad_types)
        out.append(
            (
                "restricted volume types",
                f"{_who(bad_volumes, 'volume')} {verb} restricted volume "
                f"{_plural('type', len(kinds))} {_quote(kinds)}",
            )
        )
    pod_non_root = pod_sc.get("runAsNonRoot") is True
    explicit = [str(c.get("name")) for c in containers if sc(c).get("runAsNonRoot") is False]
    implicit = [
        str(c.get("name"))
        for c in containers
        if sc(c).get("runAsNonRoot") is None and not pod_non_root
    ]
    setters = (["pod"] if pod_sc.get("runAsNonRoot") is False else []) + (
        [_who(explicit)] if explicit else []
    )
    if setters:
        out.append(
            (
                "runAsNonRoot != true",
                f"{' and '.join(setters)} must not set securityContext.runAsNonRoot=false",
            )
        )
    elif implicit:
        out.append(
            (
                "runAsNonRoot != true",
                f"pod or {_who(implicit)} must set securityContext.runAsNonRoot=true",
            )
        )
    root = [str(c.get("name")) for c in containers if sc(c).get("runAsUser") == 0]
    root_setters = (["pod"] if pod_sc.get("runAsUser") == 0 else []) + (
        [_who(root)] if root else []
    )
    if root_setters:
        out.append(("runAsUser=0", f"{' and '.join(root_setters)} must not set runAsUser=0"))
    valid = ("RuntimeDefault", "Localhost")
    pod_type = (pod_sc.get("seccompProfile") or {}).get("type")
    bad_setters = ["pod"] if pod_type is not None and pod_type not in valid else []
    bad_values = {str(pod_type)} if bad_setters else set()
    explicit_bad = []
    implicit_bad = []
    for c in containers:
        ctype = (sc(c).get("seccompProfile") or {}).get("type")
        if ctype is not None:
            if ctype not in valid:
                explicit_bad.append(str(c.get("name")))
                bad_values.add(str(ctype))
        elif pod_type not in valid:
            implicit_bad.append(str(c.get("name")))
    if explicit_bad:
        bad_setters.append(_who(explicit_bad))
    if bad_setters:
        out.append(
            (
                "seccompProfile",
                f"{' and '.join(bad_setters)} must not set securityContext.seccompProfile.type "
                f"to {_quote(sorted(bad_values))}",
            )
        )
    elif implicit_bad:
        out.append(
            (
                "seccompProfile",
                f"pod or {_who(implicit_bad)} must set securityContext.seccompProfile.type to "
                f'"RuntimeDefault" or "Localhost"',
            )
        )
    return out


_QUOTA_RESOURCES = {
    "pods": ("count", ""),
    "count/pods": ("count", ""),
    "requests.cpu": ("requests", "cpu"),
    "cpu": ("requests", "cpu"),
    "requests.memory": ("requests", "memory"),
    "memory": ("requests", "memory"),
    "limits.cpu": ("limits", "cpu"),
    "limits.memory": ("limits", "memory"),
}


def _pod_usage(pod: Obj, resource: str) -> tuple[Decimal, bool] | None:
    """What ``pod`` uses of a quota resource (None: a container leaves it unset)."""
    kind, what = _QUOTA_RESOURCES[resource]
    if kind == "count":
        return Decimal(1), False
    total = Decimal(0)
    binary: bool | None = None  # a sum keeps the format of its first term, as Quantity.Add
    for c in (pod.get("spec") or {}).get("containers") or []:
        resources = c.get("resources") or {}
        value = (resources.get(kind) or {}).get(what)
        if value is None and kind == "requests":
            value = (resources.get("limits") or {}).get(what)  # requests default to limits
        if value is None:
            return None
        amount, is_binary = parse_quantity(value)
        total += amount
        if binary is None:
            binary = is_binary
    return total, bool(binary)


def _counts(pod: Obj) -> bool:
    return (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


def quota_problem(quota: Obj, pod: Obj, existing: Iterable[Obj]) -> str | None:
    """The ResourceQuota admission error for adding ``pod`` under ``quota``, or None."""
    name = str((quota.get("metadata") or {}).get("name"))
    hard = {k: v for k, v in ((quota.get("spec") or {}).get("hard") or {}).items()}
    tracked = sorted(r for r in hard if r in _QUOTA_RESOURCES)
    missing: dict[str, list[str]] = {}
    for resource in tracked:
        kind, what = _QUOTA_RESOURCES[resource]
        if kind == "count":
            continue
        for c in (pod.get("spec") or {}).get("containers") or []:
            resources = c.get("resources") or {}
            value = (resources.get(kind) or {}).get(what)
            if value is None and kind == "requests":
                value = (resources.get("limits") or {}).get(what)
            if value is None:
                missing.setdefault(f"{kind}.{what}", []).append(str(c.get("name")))
    if missing:
        parts = [f"{r} for: {','.join(sorted(set(n)))}" for r, n in sorted(missing.items())]
        return f"failed quota: {name}: must specify {'; '.join(parts)}"
    others = [p for p in existing if _counts(p)]
    requested: list[str] = []
    used_text: list[str] = []
    limited: list[str] = []
    for resource in tracked:
        mine = _pod_usage(pod, resource)
        if mine is None:
            continue
        limit, limit_binary = parse_quantity(hard[resource])
        used = Decimal(0)
        for other in others:
            theirs = _pod_usage(other, resource)
            if theirs is not None:
                used += theirs[0]
        if used + mine[0] > limit:
            binary = mine[1]
            requested.append(f"{resource}={format_quantity(mine[0], binary)}")
            used_text.append(f"{resource}={format_quantity(used, binary)}")
            limited.append(f"{resource}={format_quantity(limit, limit_binary)}")
    if not requested:
        return None
    return (
        f"exceeded quota: {name}, requested: {','.join(requested)}, used: "
        f"{','.join(used_text)}, limited: {','.join(limited)}"
    )

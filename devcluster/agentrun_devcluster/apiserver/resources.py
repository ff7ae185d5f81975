"""The resource types the emulator serves, and the discovery documents that describe them.

A :class:`ResourceType` is what discovery advertises (plural, kind, verbs, scope, short names,
subresources) plus what the storage layer needs (does it have a status subresource, does a
spec change bump ``metadata.generation``, the CRD schema for custom resources).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass
class ResourceType:
    """One served resource of one group/version."""

    group: str
    version: str
    plural: str
    kind: str
    singular: str
    namespaced: bool
    verbs: tuple[str, ...] = ALL_VERBS
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    has_status: bool = False
    #: Extra subresources besides ``status`` (e.g. ``log`` for pods).
    subresources: tuple[str, ...] = ()
    #: Whether a change outside metadata/status bumps ``metadata.generation``.
    tracks_generation: bool = False
    #: For custom resources: the version's ``openAPIV3Schema`` (None for builtins).
    schema: dict[str, Any] | None = None
    #: For custom resources: the version's ``additionalPrinterColumns``.
    printer_columns: list[dict[str, Any]] = field(default_factory=list)
    #: True for resources defined by a CustomResourceDefinition.
    custom: bool = False

    @property
    def key(self) -> tuple[str, str]:
        """Storage key: objects are stored per group and plural (one version per group here)."""
        return (self.group, self.plural)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    def discovery_entries(self) -> list[dict[str, Any]]:
        """The APIResource entries for this resource and its subresources."""
        main: dict[str, Any] = {
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": list(self.verbs),
        }
        if self.short_names:
            main["shortNames"] = list(self.short_names)
        if self.categories:
            main["categories"] = list(self.categories)
        entries = [main]
        if self.has_status:
            entries.append(
                {
                    "name": f"{self.plural}/status",
                    "singularName": "",
                    "namespaced": self.namespaced,
                    "kind": self.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
        for sub in self.subresources:
            entries.append(
                {
                    "name": f"{self.plural}/{sub}",
                    "singularName": "",
                    "namespaced": self.namespaced,
                    "kind": "Pod" if sub == "log" else self.kind,
                    "verbs": ["get"],
                }
            )
        return entries


def builtin_resources() -> list[ResourceType]:
    """The builtin kinds this project uses, as Kubernetes v1.36 advertises them."""
    return [
        ResourceType(
            "",
            "v1",
            "namespaces",
            "Namespace",
            "namespace",
            False,
            verbs=("create", "delete", "get", "list", "patch", "update", "watch"),
            short_names=("ns",),
            has_status=True,
        ),
        ResourceType(
            "",
            "v1",
            "pods",
            "Pod",
            "pod",
            True,
            short_names=("po",),
            categories=("all",),
            has_status=True,
            subresources=("log",),
        ),
        ResourceType("", "v1", "configmaps", "ConfigMap", "configmap", True, short_names=("cm",)),
        ResourceType("", "v1", "secrets", "Secret", "secret", True),
        ResourceType(
            "",
            "v1",
            "serviceaccounts",
            "ServiceAccount",
            "serviceaccount",
            True,
            short_names=("sa",),
        ),
        ResourceType(
            "",
            "v1",
            "resourcequotas",
            "ResourceQuota",
            "resourcequota",
            True,
            short_names=("quota",),
            has_status=True,
        ),
        ResourceType("", "v1", "events", "Event", "event", True, short_names=("ev",)),
        ResourceType(
            "batch",
            "v1",
            "jobs",
            "Job",
            "job",
            True,
            categories=("all",),
            has_status=True,
            tracks_generation=True,
        ),
        ResourceType("events.k8s.io", "v1", "events", "Event", "event", True, short_names=("ev",)),
        ResourceType("coordination.k8s.io", "v1", "leases", "Lease", "lease", True),
        ResourceType(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            "customresourcedefinition",
            False,
            short_names=("crd", "crds"),
            categories=("api-extensions",),
            has_status=True,
            tracks_generation=True,
        ),
    ]


def resources_from_crd(crd: dict[str, Any]) -> list[ResourceType]:
    """The served versions of a CustomResourceDefinition, as resource types."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    result = []
    for version in spec.get("versions") or []:
        if not version.get("served", True):
            continue
        subresources = version.get("subresources") or {}
        schema = (version.get("schema") or {}).get("openAPIV3Schema")
        result.append(
            ResourceType(
                group=spec["group"],
                version=version["name"],
                plural=names["plural"],
                kind=names["kind"],
                singular=names.get("singular") or names["kind"].lower(),
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                short_names=tuple(names.get("shortNames") or ()),
                categories=tuple(names.get("categories") or ()),
                has_status="status" in subresources,
                tracks_generation=True,
                schema=schema,
                printer_columns=list(version.get("additionalPrinterColumns") or []),
                custom=True,
            )
        )
    return result


class ResourceRegistry:
    """All served resource types, looked up by group/version/plural."""

    def __init__(self) -> None:
        self._by_gvr: dict[tuple[str, str, str], ResourceType] = {}
        #: group -> ordered versions (first is preferred)
        self._groups: dict[str, list[str]] = {}

    def add(self, rt: ResourceType) -> None:
        self._by_gvr[(rt.group, rt.version, rt.plural)] = rt
        versions = self._groups.setdefault(rt.group, [])
        if rt.version not in versions:
            versions.append(rt.version)

    def remove_group_plural(self, group: str, plural: str) -> None:
        for gvr in [k for k in self._by_gvr if k[0] == group and k[2] == plural]:
            del self._by_gvr[gvr]
        remaining = {k[1] for k in self._by_gvr if k[0] == group}
        if group in self._groups:
            self._groups[group] = [v for v in self._groups[group] if v in remaining]
            if not self._groups[group]:
                del self._groups[group]

    def get(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._by_gvr.get((group, version, plural))

    def has_group_version(self, group: str, version: str) -> bool:
        return version in self._groups.get(group, [])

    def all(self) -> list[ResourceType]:
        return list(self._by_gvr.values())

    def by_key(self, key: tuple[str, str]) -> ResourceType | None:
        for rt in self._by_gvr.values():
            if rt.key == key:
                return rt
        return None

    # -- discovery documents -------------------------------------------------------------

    def resource_list(self, group: str, version: str) -> dict[str, Any]:
        """APIResourceList for ``/api/v1`` or ``/apis/{group}/{version}``."""
        entries: list[dict[str, Any]] = []
        for rt in self._by_gvr.values():
            if rt.group == group and rt.version == version:
                entries.extend(rt.discovery_entries())
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": entries,
        }

    def api_group(self, group: str) -> dict[str, Any]:
        versions = self._groups[group]
        gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {
            "kind": "APIGroup",
            "apiVersion": "v1",
            "name": group,
            "versions": gvs,
            "preferredVersion": gvs[0],
        }

    def has_group(self, group: str) -> bool:
        return group in self._groups

    def api_group_list(self) -> dict[str, Any]:
        groups = [self.api_group(g) for g in self._groups if g]
        for g in groups:
            del g["kind"], g["apiVersion"]
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}

"""A request log of the emulated apiserver, in the terms Kubernetes' authorizer uses.

:class:`RequestLog` is an aiohttp middleware (install it with
:meth:`~agentrun_devcluster.apiserver.server.EmulatedAPIServer.add_middleware` before start).
Each resource request becomes one :class:`RequestAttributes`: who asked (the bearer token, the
emulator's stand-in for an authenticated user), the RBAC verb, API group, resource, subresource,
namespace and name, derived from the method, path and query exactly as the real apiserver's
``RequestInfoFactory`` does (GET of a collection is ``list``, or ``watch`` with ``watch=true``;
DELETE of a collection is ``deletecollection``; ...). Discovery and other non-resource paths
(``/version``, ``/apis``, ``/apis/{group}/{version}``) are not recorded: every authenticated user
may read them (the ``system:discovery`` ClusterRole).

It also records what the OwnerReferencesPermissionEnforcement admission plugin (on by default in
OpenShift) checks: a successful write whose body sets an ownerReference with
``blockOwnerDeletion: true`` needs ``update`` on the owner's ``finalizers`` subresource. Those
entries have ``origin == ADMISSION``.

Tests compare the recorded attributes with the RBAC a process is granted (see
:mod:`agentrun_contract.permissions`).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from .resources import ResourceRegistry

REQUEST: Final = "request"
ADMISSION: Final = "admission:OwnerReferencesPermissionEnforcement"

_VERB_OF_METHOD: Final = {
    "GET": "get",
    "HEAD": "get",
    "POST": "create",
    "PUT": "update",
    "PATCH": "patch",
    "DELETE": "delete",
}
_WRITES: Final = frozenset({"POST", "PUT", "PATCH"})
_NAMESPACE_SUBRESOURCES: Final = frozenset({"status", "finalize"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class RequestAttributes:
    """One authorization decision's inputs: who did what to which resource."""

    user: str
    verb: str
    group: str
    resource: str
    subresource: str = ""
    namespace: str | None = None
    """None: a cluster-scoped request (a cluster-scoped resource, or all namespaces)."""
    name: str = ""
    origin: str = REQUEST

    @property
    def rbac_resource(self) -> str:
        """``resource`` or ``resource/subresource``, as RBAC rules name it."""
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


def request_attributes(
    user: str, method: str, path: str, query: Mapping[str, str]
) -> RequestAttributes | None:
    """The attributes of a resource request; None for a non-resource path (discovery...)."""
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        group, rest = "", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, rest = parts[1], parts[3:]
    else:
        return None
    if not rest:
        return None  # the group version's resource list: discovery
    verb = _VERB_OF_METHOD.get(method.upper(), method.lower())
    namespace: str | None = None
    if rest[0] == "namespaces" and len(rest) >= 2:
        # As RequestInfoFactory: /namespaces/{ns}[/status|/finalize] is the namespace itself
        # (in its own scope); anything else after the name is a resource in that namespace.
        namespace = rest[1]
        if len(rest) >= 3 and rest[2] not in _NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) >= 2 else ""
    subresource = "/".join(rest[2:])
    if not name and verb == "get":
        verb = "watch" if query.get("watch", "").lower() in ("true", "1") else "list"
    elif not name and verb == "delete":
        verb = "deletecollection"
    return RequestAttributes(
        user=user,
        verb=verb,
        group=group,
        resource=resource,
        subresource=subresource,
        namespace=namespace,
        name=name,
    )


def bearer_token(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


class RequestLog:
    """Records every resource request (and owner-reference admission check) it sees."""

    def __init__(self, registry: ResourceRegistry) -> None:
        self._registry = registry
        self.entries: list[RequestAttributes] = []

    def of_user(self, user: str) -> list[RequestAttributes]:
        return [e for e in self.entries if e.user == user]

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        attributes = request_attributes(
            bearer_token(request), request.method, request.path, request.query
        )
        if attributes is not None:
            self.entries.append(attributes)
        response = await handler(request)
        if attributes is not None and request.method in _WRITES and response.status < 300:
            # The handler has read (and aiohttp cached) the body of a successful write.
            self.entries.extend(self._owner_checks(attributes, await request.read()))
        return response

    def _owner_checks(self, attributes: RequestAttributes, raw: bytes) -> list[RequestAttributes]:
        try:
            body = json.loads(raw)
        except ValueError:
            return []
        metadata = body.get("metadata") if isinstance(body, dict) else None
        refs = metadata.get("ownerReferences") if isinstance(metadata, dict) else None
        checks = []
        for ref in refs if isinstance(refs, list) else []:
            if not isinstance(ref, dict) or ref.get("blockOwnerDeletion") is not True:
                continue
            group = str(ref.get("apiVersion", "")).rpartition("/")[0]
            plural = self._plural_of(group, str(ref.get("kind", "")))
            checks.append(
                RequestAttributes(
                    user=attributes.user,
                    verb="update",
                    group=group,
                    resource=plural,
                    subresource="finalizers",
                    namespace=attributes.namespace,
                    name=str(ref.get("name", "")),
                    origin=ADMISSION,
                )
            )
        return checks

    def _plural_of(self, group: str, kind: str) -> str:
        for rt in self._registry.all():
            if rt.group == group and rt.kind == kind:
                return rt.plural
        return kind.lower() + "s"

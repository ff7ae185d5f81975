"""The emulated cluster's storage and its API semantics, without HTTP.

:class:`ClusterState` holds every object in memory, per resource type, keyed by
``(namespace, name)`` (O(1) get/create), with one global ``resourceVersion`` counter, a bounded
ring of watch events per resource type (for watches from a resourceVersion and 410 Gone), the
live watchers, and uid/owner indexes for garbage collection. Stored objects are never mutated in
place: every write stores a new dict, so watch events and responses can share them safely.

Semantics follow the real apiserver (v1.36) for what clients of this project rely on; each
method's docstring says which.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
import random
import re
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from . import errors
from .errors import APIError
from .limits import MAX_OBJECT_BYTES, encoded_size
from .pod_admission import admit_pod_create
from .resources import ResourceRegistry, ResourceType, builtin_resources, resources_from_crd

Obj = dict[str, Any]
ObjectKey = tuple[str, str]  # (namespace or "", name)
Predicate = Callable[[Obj], bool]

#: Characters of generated name suffixes (k8s.io/apimachinery/pkg/util/rand: no vowels, no 0/1/3).
_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
    "for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and "
    "must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex "
    "used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
FOREGROUND_FINALIZER = "foregroundDeletion"
ORPHAN_FINALIZER = "orphan"
PROTECTED_NAMESPACES = frozenset({"default", "kube-system", "kube-public"})
CRD_KEY = ("apiextensions.k8s.io", "customresourcedefinitions")


def now_rfc3339() -> str:
    """The current time as Kubernetes writes metadata timestamps (second resolution, ``Z``)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class WatchEvent:
    rv: int
    type: str  # ADDED | MODIFIED | DELETED
    obj: Obj
    old: Obj | None = None
    size: int = 0


@dataclass(eq=False)
class Watcher:
    """One open watch: receives matching events on ``queue``; ``None`` means the server stops."""

    namespace: str | None
    predicate: Predicate
    queue: asyncio.Queue[tuple[str, Obj] | None] = field(default_factory=asyncio.Queue)

    def offer(self, event: WatchEvent) -> None:
        """Queue ``event`` as this watcher sees it (selectors turn edges into ADDED/DELETED)."""
        ns = event.obj.get("metadata", {}).get("namespace", "")
        if self.namespace is not None and ns != self.namespace:
            return
        matches_now = self.predicate(event.obj)
        if event.type == "MODIFIED" and event.old is not None:
            matched_before = self.predicate(event.old)
            if matched_before and not matches_now:
                self.queue.put_nowait(("DELETED", event.obj))
            elif matches_now and not matched_before:
                self.queue.put_nowait(("ADDED", event.obj))
            elif matches_now:
                self.queue.put_nowait(("MODIFIED", event.obj))
        elif matches_now:
            self.queue.put_nowait((event.type, event.obj))


class Collection:
    """All objects of one resource type, their recent events and their watchers."""

    def __init__(self, window: int, window_bytes: int) -> None:
        self.objects: dict[ObjectKey, Obj] = {}
        #: Encoded size of each stored object (what etcd would hold).
        self.sizes: dict[ObjectKey, int] = {}
        self.events: deque[WatchEvent] = deque()
        self.window = window
        self.window_bytes = window_bytes
        self.event_bytes = 0
        #: The highest resourceVersion whose event was dropped from the ring (0: none yet).
        self.expired_rv = 0
        self.watchers: set[Watcher] = set()

    def record(self, event: WatchEvent) -> None:
        """Keep ``event`` for watches from a resourceVersion; drop the oldest beyond the
        window (count or bytes: old versions of big objects must not pile up in memory, as
        etcd compaction also forgets them), then hand it to the live watchers."""
        self.events.append(event)
        self.event_bytes += event.size
        while len(self.events) > 1 and (
            len(self.events) > self.window or self.event_bytes > self.window_bytes
        ):
            dropped = self.events.popleft()
            self.event_bytes -= dropped.size
            self.expired_rv = dropped.rv
        for watcher in list(self.watchers):
            watcher.offer(event)


@dataclass
class DeleteOptions:
    propagation_policy: str | None = None
    grace_period_seconds: int | None = None
    precondition_uid: str | None = None
    precondition_rv: str | None = None
    orphan_dependents: bool | None = None


def encode_continue(namespace: str, name: str, rv: int) -> str:
    raw = json.dumps({"ns": namespace, "name": name, "rv": rv}).encode()
    return base64.urlsafe_b64encode(raw).decode()


def decode_continue(token: str) -> tuple[ObjectKey, int]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        return (str(data["ns"]), str(data["name"])), int(data["rv"])
    except (ValueError, KeyError, TypeError):
        raise errors.bad_request(
            "continue key is not valid: the continue token is not a token this server issued"
        ) from None


class ClusterState:
    """In-memory objects with the apiserver's create/get/list/update/patch/delete semantics.

    ``admit`` (set by the server) is called on every create/update of a resource type with the
    new object and the old one (or None); it prunes, defaults and validates (schema.py) and
    returns the object to store, or raises :class:`APIError`.
    """

    def __init__(
        self, *, watch_window: int = 10_000, watch_window_bytes: int = 64 * 1024 * 1024
    ) -> None:
        self.registry = ResourceRegistry()
        self.watch_window = watch_window
        self.watch_window_bytes = watch_window_bytes
        #: Seconds before the garbage collector deletes an object whose owners are all gone.
        self.gc_delay = 0.2
        self.collections: dict[tuple[str, str], Collection] = {}
        self.rv = 0
        self._by_uid: dict[str, tuple[tuple[str, str], ObjectKey]] = {}
        self._dependents: dict[str, set[str]] = {}  # owner uid -> dependent uids
        self.admit: Callable[[ResourceType, Obj, Obj | None], Obj] = lambda rt, new, old: new
        #: ServiceAccounts every namespace gets when it is created (the ServiceAccount
        #: controller's ``default``, made at once instead of a moment later).
        self.namespace_service_accounts: list[str] = ["default"]
        for rt in builtin_resources():
            self.add_resource(rt)
        for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self.create(
                self.resolve("", "v1", "namespaces"),
                None,
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
            )

    # -- resource types ------------------------------------------------------------------

    def add_resource(self, rt: ResourceType) -> None:
        self.registry.add(rt)
        self.collections.setdefault(rt.key, Collection(self.watch_window, self.watch_window_bytes))

    def collection(self, rt: ResourceType) -> Collection:
        return self.collections[rt.key]

    def resolve(self, group: str, version: str, plural: str) -> ResourceType:
        rt = self.registry.get(group, version, plural)
        if rt is None:
            raise errors.page_not_found()
        return rt

    # -- helpers -------------------------------------------------------------------------

    def _next_rv(self) -> int:
        self.rv += 1
        return self.rv

    def _store(self, rt: ResourceType, obj: Obj, event_type: str, old: Obj | None) -> Obj:
        """Stamp a new resourceVersion on ``obj``, store it, index it and emit the event.

        Objects over etcd's request limit (1.5 MiB) are refused here, at the storage layer,
        with the error a real apiserver passes through from etcd (see limits.py).
        """
        size = encoded_size(obj)
        if size > MAX_OBJECT_BYTES:
            raise APIError(500, "InternalError", "etcdserver: request is too large")
        rv = self._next_rv()
        obj["metadata"]["resourceVersion"] = str(rv)
        meta = obj["metadata"]
        key = (meta.get("namespace", ""), meta["name"])
        coll = self.collection(rt)
        coll.objects[key] = obj
        coll.sizes[key] = size
        uid = meta["uid"]
        self._by_uid[uid] = (rt.key, key)
        self._reindex_owners(uid, old, obj)
        coll.record(WatchEvent(rv, event_type, obj, old, size))
        return obj

    def _reindex_owners(self, uid: str, old: Obj | None, new: Obj | None) -> None:
        old_owners = {
            r.get("uid") for r in (old or {}).get("metadata", {}).get("ownerReferences") or []
        }
        new_owners = {
            r.get("uid") for r in (new or {}).get("metadata", {}).get("ownerReferences") or []
        }
        for owner in old_owners - new_owners:
            deps = self._dependents.get(str(owner))
            if deps is not None:
                deps.discard(uid)
                if not deps:
                    del self._dependents[str(owner)]
        for owner in new_owners - old_owners:
            self._dependents.setdefault(str(owner), set()).add(uid)

    def _remove(self, rt: ResourceType, obj: Obj) -> Obj:
        """Remove ``obj`` for good: a DELETED event with a fresh resourceVersion."""
        meta = obj["metadata"]
        key = (meta.get("namespace", ""), meta["name"])
        coll = self.collection(rt)
        coll.objects.pop(key, None)
        size = coll.sizes.pop(key, 0)
        final = copy.copy(obj)
        final["metadata"] = dict(meta)
        rv = self._next_rv()
        final["metadata"]["resourceVersion"] = str(rv)
        self._by_uid.pop(meta["uid"], None)
        self._reindex_owners(meta["uid"], obj, None)
        coll.record(WatchEvent(rv, "DELETED", final, size=size))
        return final

    def _require_namespace(self, rt: ResourceType, namespace: str | None) -> str:
        if not rt.namespaced:
            return ""
        if not namespace:
            raise errors.bad_request(
                "the server could not find the requested resource: namespace is required"
            )
        ns_coll = self.collections[("", "namespaces")]
        if ("", namespace) not in ns_coll.objects:
            raise errors.not_found("", "namespaces", namespace)
        return namespace

    def get_object(self, rt: ResourceType, namespace: str | None, name: str) -> Obj:
        key = (namespace or "" if rt.namespaced else "", name)
        obj = self.collection(rt).objects.get(key)
        if obj is None:
            raise errors.not_found(rt.group, rt.plural, name)
        return obj

    def _validate_name(self, rt: ResourceType, name: str) -> None:
        pattern, msg, limit = _DNS1123_SUBDOMAIN, _SUBDOMAIN_MSG, 253
        if rt.key == ("", "namespaces"):
            pattern, msg, limit = _DNS1123_LABEL, _LABEL_MSG, 63
        if len(name) > limit:
            raise errors.invalid(
                rt.kind,
                rt.group,
                name,
                [
                    (
                        "metadata.name",
                        f'Invalid value: "{name}": must be no more than {limit} characters',
                    )
                ],
            )
        if not pattern.match(name):
            raise errors.invalid(
                rt.kind, rt.group, name, [("metadata.name", f'Invalid value: "{name}": {msg}')]
            )

    def _check_type_meta(self, rt: ResourceType, body: Obj) -> None:
        """apiVersion/kind must match the endpoint; builtins default them from the URL."""
        if not isinstance(body, dict):
            raise errors.bad_request("the body of the request was in an unknown format")
        kind = body.get("kind")
        api_version = body.get("apiVersion")
        if rt.custom and (not kind or not api_version):
            missing = "Kind" if not kind else "Version"
            raise errors.bad_request(f"Object '{missing}' is missing in '{json.dumps(body)[:200]}'")
        if api_version and api_version != rt.api_version:
            raise errors.bad_request(
                f"the API version in the data ({api_version}) does not match the expected API "
                f"version ({rt.api_version})"
            )
        if kind and kind != rt.kind:
            raise errors.bad_request(
                f"the kind in the data ({kind}) does not match the expected kind ({rt.kind})"
            )
        body["apiVersion"] = rt.api_version
        body["kind"] = rt.kind
        if not isinstance(body.get("metadata", {}), dict):
            raise errors.bad_request("metadata must be an object")

    @staticmethod
    def _spec_part(obj: Obj) -> Obj:
        return {
            k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")
        }

    # -- create --------------------------------------------------------------------------

    def create(
        self, rt: ResourceType, namespace: str | None, body: Obj, *, dry_run: bool = False
    ) -> Obj:
        """POST: 201 semantics. Fills uid, resourceVersion, generation, creationTimestamp.

        The namespace comes from the URL (a body without one gets it; a different one is 400).
        ``generateName`` appends 5 random characters. Objects with a status subresource lose any
        status sent on create (CRs) or get their initial status (pods: Pending).
        """
        self._check_type_meta(rt, body)
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        ns = self._require_namespace(rt, namespace)
        body_ns = meta.get("namespace")
        if rt.namespaced:
            if body_ns and body_ns != ns:
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        if not meta.get("name"):
            generate = meta.get("generateName")
            if not generate:
                raise errors.invalid(
                    rt.kind,
                    rt.group,
                    "",
                    [("metadata.name", "Required value: name or generateName is required")],
                )
            meta["name"] = generate + "".join(random.choices(_NAME_ALPHABET, k=5))
        name = meta["name"]
        self._validate_name(rt, name)
        if meta.get("resourceVersion"):
            # registry/generic store: Create refuses a set resourceVersion.
            raise errors.bad_request("resourceVersion should not be set on objects to be created")
        for drop in (
            "resourceVersion",
            "uid",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
            "managedFields",
        ):
            meta.pop(drop, None)
        coll = self.collection(rt)
        if (ns, name) in coll.objects:
            raise errors.already_exists(rt.group, rt.plural, name)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        if rt.tracks_generation:
            meta["generation"] = 1
        self._initial_status(rt, obj)
        obj = self.admit(rt, obj, None)
        if rt.key == ("", "pods"):
            self._admit_pod_create(obj)
        if dry_run:
            return obj
        stored = self._store(rt, obj, "ADDED", None)
        if rt.key == CRD_KEY:
            self.install_crd(stored)
        if rt.key == ("", "namespaces"):
            self._create_service_accounts(name, self.namespace_service_accounts)
        self._collect_if_dangling(rt, stored)
        return stored

    def _admit_pod_create(self, pod: Obj) -> None:
        """ServiceAccount, PodSecurity and ResourceQuota admission (pod_admission.py)."""

        def objects(plural: str, namespace: str) -> list[Obj]:
            coll = self.collections.get(("", plural))
            if coll is None:
                return []
            return [o for (ns, _), o in coll.objects.items() if ns == namespace]

        admit_pod_create(
            pod,
            service_account=lambda ns, name: self.collections[("", "serviceaccounts")].objects.get(
                (ns, name)
            ),
            namespace=lambda ns: self.collections[("", "namespaces")].objects.get(("", ns)),
            quotas=lambda ns: objects("resourcequotas", ns),
            pods=lambda ns: objects("pods", ns),
        )

    def _create_service_accounts(self, namespace: str, names: list[str]) -> None:
        sa_type = self.resolve("", "v1", "serviceaccounts")
        for name in names:
            if (namespace, name) not in self.collection(sa_type).objects:
                self.create(
                    sa_type,
                    namespace,
                    {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}},
                )

    def ensure_service_accounts(self, names: list[str]) -> None:
        """Give every namespace, existing and future, these ServiceAccounts too (the emulated
        cluster stands for one where the chart created the runner's ServiceAccount)."""
        for name in names:
            if name not in self.namespace_service_accounts:
                self.namespace_service_accounts.append(name)
        for _, namespace in list(self.collections[("", "namespaces")].objects):
            self._create_service_accounts(namespace, self.namespace_service_accounts)

    def _collect_if_dangling(self, rt: ResourceType, obj: Obj) -> None:
        """The garbage collector deletes an object whose owners are all gone (by uid), e.g.
        a Job created for an AgentRun deleted a moment before. Like the real (asynchronous)
        collector, it acts a little later (``gc_delay`` seconds), not inside the request."""
        meta = obj["metadata"]
        owners = [r.get("uid") for r in meta.get("ownerReferences") or []]
        if not owners or any(o in self._by_uid for o in owners):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # used without an event loop (unit tests): no collector runs
        key = (meta.get("namespace", ""), meta["name"])
        loop.call_later(self.gc_delay, self._collect_dangling, rt.key, key, meta["uid"])

    def _collect_dangling(self, rt_key: tuple[str, str], key: ObjectKey, uid: str) -> None:
        rt = self.registry.by_key(rt_key)
        coll = self.collections.get(rt_key)
        obj = coll.objects.get(key) if coll is not None else None
        if rt is None or obj is None or obj["metadata"]["uid"] != uid:
            return
        owners = [r.get("uid") for r in obj["metadata"].get("ownerReferences") or []]
        if not owners or any(o in self._by_uid for o in owners):
            return
        with contextlib.suppress(APIError):
            self.delete(rt, key[0] or None, key[1], DeleteOptions(propagation_policy="Background"))

    def _initial_status(self, rt: ResourceType, obj: Obj) -> None:
        if rt.key == ("", "pods"):
            # Spec defaults are the pod strategy's (builtins.py); status starts Pending.
            obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
            obj.setdefault("spec", {}).setdefault("serviceAccountName", "default")
        elif rt.key == ("", "namespaces"):
            obj["status"] = {"phase": "Active"}
            obj.setdefault("spec", {"finalizers": ["kubernetes"]})
            obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj[
                "metadata"
            ]["name"]
        elif rt.key == CRD_KEY:
            names = (obj.get("spec") or {}).get("names") or {}
            obj["status"] = {
                "acceptedNames": names,
                "storedVersions": [
                    v["name"]
                    for v in (obj.get("spec") or {}).get("versions") or []
                    if v.get("storage")
                ],
                "conditions": [
                    {
                        "type": t,
                        "status": "True",
                        "reason": r,
                        "message": m,
                        "lastTransitionTime": now_rfc3339(),
                    }
                    for t, r, m in (
                        ("NamesAccepted", "NoConflicts", "no conflicts found"),
                        (
                            "Established",
                            "InitialNamesAccepted",
                            "the initial names have been accepted",
                        ),
                    )
                ],
            }
        elif rt.has_status:
            obj.pop("status", None)
            if rt.key == ("batch", "jobs"):
                obj["status"] = {}

    # -- read ----------------------------------------------------------------------------

    def list_objects(
        self,
        rt: ResourceType,
        namespace: str | None,
        predicate: Predicate,
        *,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> Obj:
        """A List: items ordered by (namespace, name), paged by ``limit``/``continue``."""
        coll = self.collection(rt)
        start_after: ObjectKey | None = None
        list_rv = self.rv
        if continue_token:
            start_after, list_rv = decode_continue(continue_token)
        keys: Iterable[ObjectKey] = sorted(coll.objects)
        items: list[Obj] = []
        remaining = 0
        next_token: str | None = None
        for key in keys:
            if namespace is not None and key[0] != namespace:
                continue
            if start_after is not None and key <= start_after:
                continue
            obj = coll.objects[key]
            if not predicate(obj):
                continue
            if limit and len(items) >= limit:
                remaining += 1
                continue
            items.append(obj)
        # Every page reports the first page's resourceVersion, as kube-apiserver does: a
        # client that lists in pages (kopf) watches from it, and so sees every change made to
        # an earlier page while it read the later ones (the pages here are not snapshots).
        meta: Obj = {"resourceVersion": str(list_rv)}
        if remaining and items:
            last = items[-1]["metadata"]
            next_token = encode_continue(last.get("namespace", ""), last["name"], list_rv)
            meta["continue"] = next_token
            meta["remainingItemCount"] = remaining
        return {
            "kind": rt.list_kind,
            "apiVersion": rt.api_version,
            "metadata": meta,
            "items": items,
        }

    def open_watch(
        self,
        rt: ResourceType,
        namespace: str | None,
        predicate: Predicate,
        resource_version: str | None,
    ) -> tuple[Watcher, list[tuple[str, Obj]]]:
        """Register a watcher; returns it and the events it must send first.

        ``resourceVersion`` unset, ``""`` or ``"0"``: synthetic ADDED for every current matching
        object, then changes. ``N``: only events after N (from the retained ring); N older than
        the ring -> :func:`errors.gone` (sent as an ERROR event by the HTTP layer).
        Registration and the snapshot happen without awaiting, so no event is lost or doubled.
        """
        coll = self.collection(rt)
        watcher = Watcher(namespace, predicate)
        initial: list[tuple[str, Obj]] = []
        if resource_version in (None, "", "0"):
            for key in sorted(coll.objects):
                obj = coll.objects[key]
                if (namespace is None or key[0] == namespace) and predicate(obj):
                    initial.append(("ADDED", obj))
        else:
            try:
                since = int(resource_version)
            except ValueError:
                raise errors.bad_request(
                    f"invalid resource version: {resource_version!r}"
                ) from None
            if since < coll.expired_rv:
                raise errors.gone(f"too old resource version: {since} ({coll.expired_rv + 1})")
            collector = Watcher(namespace, predicate)
            for event in coll.events:
                if event.rv > since:
                    collector.offer(event)
            while not collector.queue.empty():
                item = collector.queue.get_nowait()
                if item is not None:
                    initial.append(item)
        coll.watchers.add(watcher)
        return watcher, initial

    def compact_history(self) -> None:
        """Forget every retained watch event, as etcd compaction (or a restarted apiserver's
        fresh watch cache) does: a watch from any resourceVersion issued so far gets 410 Gone;
        a list's resourceVersion from now on is watchable. The resourceVersion skips one
        (real ones have gaps: they are shared by every resource type)."""
        self.rv += 1
        for coll in self.collections.values():
            coll.events.clear()
            coll.event_bytes = 0
            coll.expired_rv = self.rv

    def close_watch(self, rt: ResourceType, watcher: Watcher) -> None:
        self.collection(rt).watchers.discard(watcher)

    def stop_watchers(self) -> None:
        for coll in self.collections.values():
            for watcher in coll.watchers:
                watcher.queue.put_nowait(None)

    # -- update / patch ------------------------------------------------------------------

    def update(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        body: Obj,
        *,
        subresource: str | None = None,
        require_rv: bool | None = None,
        dry_run: bool = False,
    ) -> Obj:
        """PUT (and the last step of PATCH). ``dry_run``: admit and answer, store nothing.

        A ``metadata.resourceVersion`` that is not the current one -> 409 Conflict. Custom
        resources require it on PUT (422 otherwise), as the real server does. On the main
        endpoint of a kind with a status subresource the status is kept; on ``/status`` only
        the status is taken. uid, creationTimestamp, generation and deletionTimestamp cannot be
        changed. A no-op write changes nothing (no new resourceVersion, no event). Clearing the
        last finalizer of an object being deleted deletes it.
        """
        self._check_type_meta(rt, body)
        old = self.get_object(rt, namespace, name)
        old_meta = old["metadata"]
        new = copy.deepcopy(body)
        meta = new.setdefault("metadata", {})
        if meta.get("name", name) != name:
            raise errors.bad_request(
                f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})"
            )
        rv = meta.get("resourceVersion")
        if require_rv is None:
            require_rv = rt.custom
        if rv in (None, ""):
            if require_rv:
                raise errors.invalid(
                    rt.kind,
                    rt.group,
                    name,
                    [
                        (
                            "metadata.resourceVersion",
                            "Invalid value: 0x0: must be specified for an update",
                        )
                    ],
                )
        elif str(rv) != old_meta["resourceVersion"]:
            raise errors.conflict(rt.group, rt.plural, name)
        if subresource == "status":
            merged = copy.copy(old)
            merged["status"] = new.get("status")
            if merged["status"] is None:
                merged.pop("status")
            new = merged
            new["metadata"] = dict(old_meta)
        else:
            for keep in (
                "uid",
                "creationTimestamp",
                "generation",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "namespace",
            ):
                if keep in old_meta:
                    meta[keep] = old_meta[keep]
                else:
                    meta.pop(keep, None)
            meta["name"] = name
            if rt.has_status:
                if "status" in old:
                    new["status"] = old["status"]
                else:
                    new.pop("status", None)
            if rt.tracks_generation and self._spec_part(new) != self._spec_part(old):
                meta["generation"] = int(old_meta.get("generation", 1)) + 1
        meta = new["metadata"]
        meta["resourceVersion"] = old_meta["resourceVersion"]
        if old_meta.get("deletionTimestamp"):
            added = set(meta.get("finalizers") or []) - set(old_meta.get("finalizers") or [])
            if added:
                raise errors.invalid(
                    rt.kind,
                    rt.group,
                    name,
                    [
                        (
                            "metadata.finalizers",
                            "Forbidden: no new finalizers can be added if the object is being deleted",
                        )
                    ],
                )
        new = self.admit(rt, new, old)
        if dry_run:
            return new
        if new == old:
            return old
        if (
            old_meta.get("deletionTimestamp")
            and not new["metadata"].get("finalizers")
            and not old_meta.get("deletionGracePeriodSeconds")
        ):
            stored = self._store(rt, new, "MODIFIED", old)
            return self._finish_delete(rt, stored, self._policy_from_finalizers(old))
        stored = self._store(rt, new, "MODIFIED", old)
        if rt.key == CRD_KEY and subresource is None:
            self.install_crd(stored)
        return stored

    # -- delete --------------------------------------------------------------------------

    def delete(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        options: DeleteOptions,
        *,
        dry_run: bool = False,
    ) -> tuple[Obj, bool]:
        """DELETE. Returns (object, gone): gone=False while finalizers or grace keep it.

        Finalizers: the object gets deletionTimestamp once and stays until they are empty.
        Pods with ``spec.nodeName`` get graceful deletion (deletionGracePeriodSeconds from the
        request, else the pod's terminationGracePeriodSeconds, default 30) and stay until a
        DELETE with gracePeriodSeconds=0 (the kubelet's). propagationPolicy: Background
        (default, but Orphan for batch/v1 Jobs, as the real server's Job strategy says),
        Foreground (dependents first, the owner keeps a ``foregroundDeletion`` finalizer until
        they are gone), Orphan (dependents lose the ownerReference).
        """
        obj = self.get_object(rt, namespace, name)
        meta = obj["metadata"]
        if rt.key == ("", "namespaces") and name in PROTECTED_NAMESPACES:
            raise errors.APIError(
                403,
                "Forbidden",
                f'namespaces "{name}" is forbidden: this namespace may not be deleted',
                details={"name": name, "kind": "namespaces"},
            )
        if options.precondition_uid and options.precondition_uid != meta["uid"]:
            raise errors.APIError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {errors.qualified(rt.group, rt.plural)} "{name}": '
                f"Precondition failed: UID in precondition: {options.precondition_uid}, UID in object meta: {meta['uid']}",
            )
        if options.precondition_rv and options.precondition_rv != meta["resourceVersion"]:
            raise errors.APIError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {errors.qualified(rt.group, rt.plural)} "{name}": '
                f"Precondition failed: ResourceVersion in precondition: {options.precondition_rv}, "
                f"ResourceVersion in object meta: {meta['resourceVersion']}",
            )
        policy = options.propagation_policy
        if policy is None:
            policy = "Orphan" if rt.key == ("batch", "jobs") else "Background"
        if policy not in ("Background", "Foreground", "Orphan"):
            raise errors.invalid(
                "DeleteOptions",
                "",
                "",
                [
                    (
                        "propagationPolicy",
                        f'Unsupported value: "{policy}": supported values: "Foreground", "Background", "Orphan"',
                    )
                ],
            )
        if dry_run:
            return obj, False
        finalizers = list(meta.get("finalizers") or [])
        extra: list[str] = []
        if policy == "Foreground" and self._dependents.get(meta["uid"]):
            extra.append(FOREGROUND_FINALIZER)
        graceful = self._grace_period(rt, obj, options)
        if finalizers or extra or graceful:
            if meta.get("deletionTimestamp"):
                # A second DELETE: only a shorter grace period (e.g. the kubelet's 0) matters.
                if graceful == 0 and not finalizers and rt.key == ("", "pods"):
                    return self._finish_delete(rt, obj, policy), True
                return obj, False
            new = copy.copy(obj)
            new["metadata"] = dict(meta)
            new["metadata"]["deletionTimestamp"] = now_rfc3339()
            new["metadata"]["deletionGracePeriodSeconds"] = graceful or 0
            if extra:
                new["metadata"]["finalizers"] = finalizers + [
                    f for f in extra if f not in finalizers
                ]
            if rt.tracks_generation:
                new["metadata"]["generation"] = int(meta.get("generation", 1)) + 1
            stored = self._store(rt, new, "MODIFIED", obj)
            if extra:
                self._delete_dependents(meta["uid"], "Foreground")
                stored = (
                    self.get_object(rt, namespace, name) if self._exists(rt, stored) else stored
                )
            elif policy == "Orphan":
                self._orphan_dependents(meta["uid"])
            return stored, not self._exists(rt, stored)
        return self._finish_delete(rt, obj, policy), True

    def _exists(self, rt: ResourceType, obj: Obj) -> bool:
        meta = obj["metadata"]
        return (meta.get("namespace", ""), meta["name"]) in self.collection(rt).objects

    def _grace_period(self, rt: ResourceType, obj: Obj, options: DeleteOptions) -> int:
        """Graceful deletion applies to scheduled pods only (the kubelet finishes it)."""
        if rt.key != ("", "pods") or not (obj.get("spec") or {}).get("nodeName"):
            return 0
        phase = (obj.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            # A terminated pod needs no grace: the real strategy deletes it at once.
            return 0
        if options.grace_period_seconds is not None:
            return max(0, options.grace_period_seconds)
        return int((obj.get("spec") or {}).get("terminationGracePeriodSeconds", 30))

    @staticmethod
    def _policy_from_finalizers(obj: Obj) -> str:
        finalizers = obj["metadata"].get("finalizers") or []
        return "Orphan" if ORPHAN_FINALIZER in finalizers else "Background"

    def _finish_delete(self, rt: ResourceType, obj: Obj, policy: str) -> Obj:
        uid = obj["metadata"]["uid"]
        final = self._remove(rt, obj)
        if policy == "Orphan":
            self._orphan_dependents(uid)
        else:
            self._delete_dependents(uid, "Background")
        if rt.key == ("", "namespaces"):
            self._purge_namespace(obj["metadata"]["name"])
        elif rt.key == CRD_KEY:
            self.uninstall_crd(obj)
        self._release_foreground_owners(obj)
        return final

    def _delete_dependents(self, owner_uid: str, policy: str) -> None:
        for dep_uid in sorted(self._dependents.get(owner_uid, set())):
            where = self._by_uid.get(dep_uid)
            if where is None:
                continue
            dep_rt = self.registry.by_key(where[0])
            if dep_rt is None:
                continue
            dep = self.collection(dep_rt).objects.get(where[1])
            if dep is None:
                continue
            owners = [r.get("uid") for r in dep["metadata"].get("ownerReferences") or []]
            # The garbage collector only deletes a dependent with no other live owner.
            if any(o != owner_uid and o in self._by_uid for o in owners):
                self._drop_owner_ref(dep_rt, dep, owner_uid)
                continue
            ns, name = where[1]
            try:
                self.delete(dep_rt, ns or None, name, DeleteOptions(propagation_policy=policy))
            except APIError:
                continue

    def _orphan_dependents(self, owner_uid: str) -> None:
        for dep_uid in sorted(self._dependents.get(owner_uid, set())):
            where = self._by_uid.get(dep_uid)
            if where is None:
                continue
            dep_rt = self.registry.by_key(where[0])
            dep = self.collection(dep_rt).objects.get(where[1]) if dep_rt else None
            if dep_rt is not None and dep is not None:
                self._drop_owner_ref(dep_rt, dep, owner_uid)

    def _drop_owner_ref(self, rt: ResourceType, obj: Obj, owner_uid: str) -> None:
        new = copy.copy(obj)
        new["metadata"] = dict(obj["metadata"])
        refs = [
            r for r in obj["metadata"].get("ownerReferences") or [] if r.get("uid") != owner_uid
        ]
        if refs:
            new["metadata"]["ownerReferences"] = refs
        else:
            new["metadata"].pop("ownerReferences", None)
        self._store(rt, new, "MODIFIED", obj)

    def _release_foreground_owners(self, deleted: Obj) -> None:
        """After a dependent is gone, finish the foreground deletion of owners waiting on it."""
        for ref in deleted["metadata"].get("ownerReferences") or []:
            owner_uid = ref.get("uid")
            where = self._by_uid.get(str(owner_uid))
            if where is None or self._dependents.get(str(owner_uid)):
                continue
            owner_rt = self.registry.by_key(where[0])
            if owner_rt is None:
                continue
            owner = self.collection(owner_rt).objects.get(where[1])
            if owner is None:
                continue
            finalizers = owner["metadata"].get("finalizers") or []
            if FOREGROUND_FINALIZER not in finalizers:
                continue
            new = copy.copy(owner)
            new["metadata"] = dict(owner["metadata"])
            remaining = [f for f in finalizers if f != FOREGROUND_FINALIZER]
            if remaining:
                new["metadata"]["finalizers"] = remaining
                self._store(owner_rt, new, "MODIFIED", owner)
            else:
                new["metadata"].pop("finalizers", None)
                stored = self._store(owner_rt, new, "MODIFIED", owner)
                self._finish_delete(owner_rt, stored, "Background")

    def _purge_namespace(self, namespace: str) -> None:
        for key, coll in list(self.collections.items()):
            rt = self.registry.by_key(key)
            if rt is None or not rt.namespaced:
                continue
            for obj_key, obj in list(coll.objects.items()):
                if obj_key[0] == namespace:
                    self._remove(rt, obj)

    # -- CRDs ----------------------------------------------------------------------------

    def install_crd(self, crd: Obj) -> None:
        """Serve the CRD's resources at once (and in discovery)."""
        for rt in resources_from_crd(crd):
            existing = self.registry.get(rt.group, rt.version, rt.plural)
            if existing is not None:
                self.registry.remove_group_plural(rt.group, rt.plural)
            self.add_resource(rt)

    def uninstall_crd(self, crd: Obj) -> None:
        spec = crd.get("spec") or {}
        group, plural = spec.get("group", ""), (spec.get("names") or {}).get("plural", "")
        self.registry.remove_group_plural(group, plural)
        coll = self.collections.pop((group, plural), None)
        if coll is not None:
            for watcher in coll.watchers:
                watcher.queue.put_nowait(None)

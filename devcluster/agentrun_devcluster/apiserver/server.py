"""The HTTP face of the emulated apiserver (aiohttp.web over 127.0.0.1).

Routing is done here by hand (CRDs add resources at run time): ``/api/v1/...`` and
``/apis/{group}/{version}/...`` followed by ``[namespaces/{ns}/]{plural}[/{name}[/{sub}]]``.
Handlers stay thin: the semantics live in :mod:`.state`, schema handling in :mod:`.schema`,
tables in :mod:`.printing`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import weakref
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from . import errors, printing
from .errors import APIError
from .faults import APIFault, APIFaultInjector, APIFaultRule, ChaosConfig, RequestInfo
from .limits import MAX_REQUEST_BODY_BYTES
from .logs import EmptyLogProvider, LogRequest, PodLogProvider
from .patching import PatchError, json_patch, merge_patch, strategic_merge_patch
from .resources import ResourceType
from .schema import admit_object
from .selectors import parse_field_selector, parse_label_selector
from .state import ClusterState, DeleteOptions, Watcher

log = logging.getLogger("agentrun_devcluster.apiserver")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: The request fault a log follow gets while it streams (set by the fault check).
_FAULT = web.RequestKey("agentrun_fault", APIFaultRule)
#: Without timeoutSeconds the real server ends a watch after a random 30-60 minutes.
DEFAULT_WATCH_TIMEOUT_SECONDS = 1800
KUBE_VERSION = {
    "major": "1",
    "minor": "36",
    "gitVersion": "v1.36.0-agentrun-emulated",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.25.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}


def _json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(body, separators=(",", ":")).encode(),
        status=status,
        content_type="application/json",
    )


def _error_response(error: APIError) -> web.Response:
    return _json_response(error.status(), error.code)


class _Target:
    """A parsed resource path."""

    def __init__(self, rt: ResourceType, namespace: str | None, name: str | None, sub: str | None):
        self.rt = rt
        self.namespace = namespace
        self.name = name
        self.sub = sub


class EmulatedAPIServer:
    """An in-memory Kubernetes API server over real HTTP (see the package docstring)."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        watch_window: int = 10_000,
        bookmark_interval: float = 60.0,
        watch_window_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        """``watch_window``: watch events kept per resource type (older rv -> 410 Gone);
        ``watch_window_bytes``: and at most this many bytes of them per resource type.
        ``bookmark_interval``: seconds between BOOKMARK events on watches that allow them
        (the real server sends one about every minute).
        """
        self.bookmark_interval = bookmark_interval
        self.host = host
        self.port = port
        self.state = ClusterState(watch_window=watch_window, watch_window_bytes=watch_window_bytes)
        self.state.admit = admit_object
        self._log_provider: PodLogProvider = EmptyLogProvider()
        self._extra_routes: list[tuple[str, str, Handler]] = []
        self._middlewares: list[Any] = []
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None
        self._streams: set[asyncio.Task[Any]] = set()
        self._stopping: asyncio.Event | None = None  # created on start (needs a loop)
        #: Request faults, restarts and compactions (faults.py); inactive until given rules.
        self.faults = APIFaultInjector()
        #: Whether each client connection's last request carried a system token.
        self._system_transports: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()
        #: Streaming handlers of clients (faults drop them): task -> its request's transport.
        self._client_streams: dict[asyncio.Task[Any], Any] = {}
        self._client_watches: set[Watcher] = set()
        self._down_until = 0.0
        self._chaos_task: asyncio.Task[None] | None = None

    # -- public interface ----------------------------------------------------------------

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("EmulatedAPIServer is not started")
        return self._base_url

    def set_pod_log_provider(self, provider: PodLogProvider) -> None:
        self._log_provider = provider

    def add_route(self, method: str, path: str, handler: Handler) -> None:
        """Add an extra route (e.g. ``/_emulator/faults``); call before :meth:`start`."""
        if self._runner is not None:
            raise RuntimeError("add_route must be called before start()")
        self._extra_routes.append((method, path, handler))

    def add_middleware(self, middleware: Any) -> None:
        """Add an aiohttp middleware (e.g. :class:`.audit.RequestLog`); call before :meth:`start`."""
        if self._runner is not None:
            raise RuntimeError("add_middleware must be called before start()")
        self._middlewares.append(middleware)

    async def start(self) -> str:
        app = web.Application(
            client_max_size=MAX_REQUEST_BODY_BYTES * 2, middlewares=self._middlewares
        )
        for method, path, handler in self._extra_routes:
            app.router.add_route(method, path, handler)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._stopping = asyncio.Event()
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1]
        self._base_url = f"http://{self.host}:{self.port}"
        log.info("emulated apiserver listening url=%s", self._base_url)
        return self._base_url

    async def stop(self) -> None:
        if self._runner is None:
            return
        if self._stopping is not None:
            self._stopping.set()
        self.state.stop_watchers()
        if self._chaos_task is not None:
            self._chaos_task.cancel()
            self._chaos_task = None
        for task in list(self._streams):
            task.cancel()
        await self._runner.cleanup()
        self._runner = None

    def write_kubeconfig(
        self, path: str | Path, namespace: str = "default", token: str = "agentrun-dev-token"
    ) -> Path:
        """Write a kubeconfig for this server (plain http, a dummy bearer token; with
        ``token=faults.SYSTEM_TOKEN`` its client is never hit by faults)."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "agentrun-dev", "cluster": {"server": self.base_url}}],
            "users": [{"name": "agentrun-dev", "user": {"token": token}}],
            "contexts": [
                {
                    "name": "agentrun-dev",
                    "context": {
                        "cluster": "agentrun-dev",
                        "user": "agentrun-dev",
                        "namespace": namespace,
                    },
                }
            ],
            "current-context": "agentrun-dev",
            "preferences": {},
        }
        target.write_text(yaml.safe_dump(config, sort_keys=False))
        return target

    async def apply_crds_from_file(self, path: str | Path) -> None:
        """Install (create or replace) every CRD document in a YAML file."""
        crd_rt = self.state.resolve("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        text = await asyncio.to_thread(Path(path).read_text)
        for doc in yaml.safe_load_all(text):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            name = doc["metadata"]["name"]
            try:
                existing = self.state.get_object(crd_rt, None, name)
            except APIError:
                self.state.create(crd_rt, None, doc)
            else:
                doc = dict(doc)
                doc["metadata"] = dict(
                    doc["metadata"], resourceVersion=existing["metadata"]["resourceVersion"]
                )
                self.state.update(crd_rt, None, name, doc)

    # -- faults (faults.py) --------------------------------------------------------------

    async def restart(self, down_seconds: float = 1.0) -> None:
        """Restart as a real apiserver does, objects kept: every client connection is dropped
        (in-flight requests, watches, log follows), new client connections are reset for
        ``down_seconds``, and the watch history is gone, so a watch resuming from an earlier
        resourceVersion gets 410 Gone. Returns once the server answers again. Clients with a
        system token (faults.SYSTEM_TOKEN) keep their connections."""
        loop = asyncio.get_running_loop()
        self._down_until = loop.time() + down_seconds
        self.faults.count(APIFault.RESTART)
        self.state.compact_history()
        dropped = self._drop_client_connections()
        log.warning(
            "emulated apiserver fault=restart dropped_connections=%d down_seconds=%s rv=%d",
            dropped,
            down_seconds,
            self.state.rv,
        )
        await asyncio.sleep(down_seconds)

    async def compact(self, delete_jobs: dict[str, str] | None = None) -> list[str]:
        """End every client watch (as a watch timeout does), delete the Jobs whose labels match
        ``delete_jobs`` (None: none) with background propagation, then compact the history:
        clients resume into 410 Gone and only a relist shows them what went away in the gap.
        Returns the deleted Jobs as ``namespace/name``."""
        for watcher in list(self._client_watches):
            watcher.queue.put_nowait(None)
        deleted: list[str] = []
        if delete_jobs is not None:
            jobs = self.state.resolve("batch", "v1", "jobs")
            for (namespace, name), obj in list(self.state.collection(jobs).objects.items()):
                labels = obj["metadata"].get("labels") or {}
                if all(labels.get(k) == v for k, v in delete_jobs.items()):
                    with contextlib.suppress(APIError):
                        self.state.delete(
                            jobs, namespace, name, DeleteOptions(propagation_policy="Background")
                        )
                        deleted.append(f"{namespace}/{name}")
        self.state.compact_history()
        self.faults.count(APIFault.COMPACT)
        log.warning(
            "emulated apiserver fault=compact rv=%d deleted_jobs=%s", self.state.rv, deleted
        )
        return deleted

    def start_chaos(self, config: ChaosConfig) -> None:
        """Random faults from now on (see faults.ChaosConfig); call on the server's loop."""
        self.faults.set_chaos(config)
        log.warning("emulated apiserver random faults %s", config.describe())
        if config.actions and self._chaos_task is None:
            self._chaos_task = asyncio.get_running_loop().create_task(
                self._chaos_actions(), name="emulated apiserver chaos"
            )

    def stop_chaos(self) -> None:
        self.faults.set_chaos(None)
        if self._chaos_task is not None:
            self._chaos_task.cancel()
            self._chaos_task = None

    async def _chaos_actions(self) -> None:
        while True:
            config, rng = self.faults.chaos, self.faults.chaos_rng()
            if config is None or rng is None or not config.actions:
                return
            await asyncio.sleep(rng.expovariate(1.0 / config.interval_seconds))
            action = rng.choice(config.actions)
            try:
                if action == APIFault.RESTART:
                    await self.restart(config.down_seconds)
                else:
                    await self.compact()
            except Exception:  # a bug in the emulator must not stop the faults
                log.exception("emulated apiserver fault=%s failed", action.value)

    def _drop_client_connections(self) -> int:
        """Reset every connection whose last request was not a system one; returns how many."""
        dropped = 0
        server = self._runner.server if self._runner is not None else None
        for handler in server.connections if server is not None else []:
            transport = handler.transport
            if transport is None or self._system_transports.get(transport, False):
                continue
            transport.abort()
            dropped += 1
        for task, transport in list(self._client_streams.items()):
            if transport is None or transport.is_closing():
                task.cancel()
        return dropped

    async def _client_fault(self, request: web.Request) -> web.StreamResponse | None:
        """Apply the fault this client request gets, if any: an answer to send instead (429,
        500), a connection closed (the answer returned is never sent), or None to serve it
        (log faults are applied while the log streams)."""
        loop = asyncio.get_running_loop()
        transport = request.transport
        if loop.time() < self._down_until:
            if transport is not None:
                transport.abort()  # restarting: the connection is reset
            return web.Response(status=503)
        query = request.query
        info = RequestInfo(
            method=request.method,
            path=request.path,
            log_follow=request.path.endswith("/log")
            and query.get("follow", "").lower() in ("true", "1"),
            watch=query.get("watch", "").lower() in ("true", "1"),
        )
        rule = self.faults.pick(info)
        if rule is None:
            return None
        log.info(
            "emulated apiserver fault=%s method=%s path=%s",
            rule.fault.value,
            request.method,
            request.path,
        )
        if rule.fault == APIFault.DROP:
            if transport is not None:
                transport.close()
            return web.Response(status=503)
        if rule.fault == APIFault.HANG:
            await self._hang(request, rule.seconds)
            return web.Response(status=503)
        if rule.fault == APIFault.THROTTLE:
            response = _error_response(
                APIError(
                    429,
                    "TooManyRequests",
                    "Too many requests, please try again later.",
                    details={"retryAfterSeconds": rule.retry_after},
                )
            )
            response.headers["Retry-After"] = str(rule.retry_after)
            return response
        if rule.fault == APIFault.SERVER_ERROR:
            return _error_response(
                APIError(
                    500,
                    "InternalError",
                    "Internal error occurred: etcdserver: leader changed (emulated fault; "
                    "the request was not applied)",
                )
            )
        request[_FAULT] = rule
        return None

    async def _hang(self, request: web.Request, seconds: float) -> None:
        """Answer nothing for ``seconds`` (a half-open connection), then reset the connection."""
        loop = asyncio.get_running_loop()
        transport = request.transport
        task = asyncio.current_task()
        if task is not None:
            self._streams.add(task)
        deadline = loop.time() + seconds
        try:
            while transport is not None and not transport.is_closing():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                await asyncio.sleep(min(0.25, remaining))
        except asyncio.CancelledError:
            pass
        finally:
            if task is not None:
                self._streams.discard(task)
            if transport is not None:
                transport.abort()

    # -- dispatch ------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        system = self.faults.is_system(request.headers.get("Authorization"))
        transport = request.transport
        if transport is not None:
            self._system_transports[transport] = system
        if not system:
            answer = await self._client_fault(request)
            if answer is not None:
                return answer
        try:
            return await self._route(request)
        except APIError as exc:
            return _error_response(exc)
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as exc:  # a bug in the emulator: answer 500 like a real server would
            log.exception("emulated apiserver internal error path=%s", request.path)
            return _error_response(
                APIError(500, "InternalError", f"Internal error occurred: {exc}")
            )

    async def _route(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        if not parts:
            return _json_response({"paths": ["/api", "/api/v1", "/apis", "/version"]})
        if parts == ["version"]:
            return _json_response(KUBE_VERSION)
        if parts[0] in ("healthz", "livez", "readyz"):
            return web.Response(text="ok")
        if parts == ["openapi", "v2"]:
            # An empty but valid document: kubectl's client-side validation finds no model
            # for a kind and skips it (OpenAPI v3 is absent, so kubectl falls back to v2).
            if "protobuf" in request.headers.get("Accept", ""):
                # gnostic openapi_v2.Document with only field 1 (swagger) = "2.0".
                return web.Response(
                    body=b"\x0a\x032.0",
                    content_type="application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
                )
            return _json_response(
                {
                    "swagger": "2.0",
                    "info": {"title": "Kubernetes", "version": KUBE_VERSION["gitVersion"]},
                    "paths": {},
                    "definitions": {},
                }
            )
        if parts[0] == "api":
            if len(parts) == 1:
                return _json_response(
                    {
                        "kind": "APIVersions",
                        "versions": ["v1"],
                        "serverAddressByClientCIDRs": [
                            {"clientCIDR": "0.0.0.0/0", "serverAddress": f"{self.host}:{self.port}"}
                        ],
                    }
                )
            group, version, rest = "", parts[1], parts[2:]
        elif parts[0] == "apis":
            if len(parts) == 1:
                return _json_response(self.state.registry.api_group_list())
            if len(parts) == 2:
                if not self.state.registry.has_group(parts[1]):
                    raise errors.page_not_found()
                return _json_response(self.state.registry.api_group(parts[1]))
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise errors.page_not_found()
        if not self.state.registry.has_group_version(group, version):
            raise errors.page_not_found()
        if not rest:
            if request.method != "GET":
                raise errors.method_not_allowed()
            return _json_response(self.state.registry.resource_list(group, version))
        target = self._parse_target(group, version, rest)
        return await self._serve(request, target)

    def _parse_target(self, group: str, version: str, rest: list[str]) -> _Target:
        state = self.state
        namespace: str | None = None
        if (
            rest[0] == "namespaces"
            and group == ""
            and (len(rest) == 2 or (len(rest) == 3 and rest[2] in ("status", "finalize")))
        ):
            rt = state.resolve(group, version, "namespaces")
            return _Target(rt, None, rest[1], rest[2] if len(rest) == 3 else None)
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        if len(rest) > 3:
            raise errors.page_not_found()
        rt = state.resolve(group, version, rest[0])
        if namespace is not None and not rt.namespaced:
            raise errors.page_not_found()
        name = rest[1] if len(rest) >= 2 else None
        sub = rest[2] if len(rest) == 3 else None
        if sub is not None and not ((sub == "status" and rt.has_status) or sub in rt.subresources):
            raise errors.page_not_found()
        if rt.namespaced and name is not None and namespace is None:
            raise errors.page_not_found()
        return _Target(rt, namespace, name, sub)

    async def _serve(self, request: web.Request, t: _Target) -> web.StreamResponse:
        method = request.method
        q = request.query
        if t.sub == "log":
            if method != "GET":
                raise errors.method_not_allowed()
            return await self._serve_log(request, t)
        if t.name is None:
            if method == "GET":
                if q.get("watch", "").lower() in ("true", "1"):
                    return await self._serve_watch(request, t)
                return self._serve_list(request, t)
            if method == "POST":
                if t.rt.namespaced and t.namespace is None:
                    raise errors.method_not_allowed()
                body = await self._read_body(request)
                obj = self.state.create(t.rt, t.namespace, body, dry_run=_dry_run(request))
                return _json_response(obj, 201)
            if method == "DELETE":
                return await self._delete_collection(request, t)
            raise errors.method_not_allowed()
        if method == "GET":
            obj = self.state.get_object(t.rt, t.namespace, t.name)
            if printing.wants_table(request.headers.get("Accept", "")):
                return _json_response(
                    printing.table(
                        t.rt, [obj], self.state.rv, request.query.get("includeObject", "Metadata")
                    )
                )
            return _json_response(obj)
        if method == "PUT":
            body = await self._read_body(request)
            obj = self.state.update(
                t.rt, t.namespace, t.name, body, subresource=t.sub, dry_run=_dry_run(request)
            )
            return _json_response(obj)
        if method == "PATCH":
            return await self._patch(request, t)
        if method == "DELETE":
            if t.sub is not None:
                raise errors.method_not_allowed()
            options = await self._delete_options(request)
            obj, gone = self.state.delete(
                t.rt, t.namespace, t.name, options, dry_run=_dry_run(request)
            )
            if gone and t.rt.key != ("", "pods"):
                meta = obj["metadata"]
                return _json_response(
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "metadata": {},
                        "status": "Success",
                        "details": {
                            "name": meta["name"],
                            "group": t.rt.group,
                            "kind": t.rt.plural,
                            "uid": meta["uid"],
                        },
                    }
                )
            # Not deleted yet (finalizers, graceful pod deletion): the real handler still answers
            # 200, and 202 only when orphanDependents=false was asked for (handlers/delete.go).
            accepted = not gone and options.orphan_dependents is False
            return _json_response(obj, 202 if accepted else 200)
        raise errors.method_not_allowed()

    # -- bodies --------------------------------------------------------------------------

    async def _read_body(self, request: web.Request) -> Any:
        raw = await request.read()
        if len(raw) > MAX_REQUEST_BODY_BYTES:
            raise APIError(
                413,
                "RequestEntityTooLarge",
                f"Request entity too large: limit is {MAX_REQUEST_BODY_BYTES}",
            )
        if not raw:
            raise errors.bad_request("the body of the request was empty")
        ctype = request.content_type
        if "protobuf" in ctype or "cbor" in ctype:
            raise APIError(
                415,
                "UnsupportedMediaType",
                f"the emulated apiserver does not decode {ctype}: send JSON "
                "(e.g. kubectl create -f / kubectl apply instead of kubectl create <kind>)",
            )
        try:
            if ctype in ("application/yaml", "application/apply-patch+yaml"):
                return yaml.safe_load(raw)
            return json.loads(raw)
        except (ValueError, yaml.YAMLError) as exc:
            raise errors.bad_request(
                f"the body of the request could not be decoded: {exc}"
            ) from None

    async def _patch(self, request: web.Request, t: _Target) -> web.StreamResponse:
        assert t.name is not None
        ctype = request.content_type
        body = await self._read_body(request)
        current = self.state.get_object(t.rt, t.namespace, t.name)
        try:
            if ctype == "application/merge-patch+json":
                if not isinstance(body, dict):
                    raise PatchError("merge patch must be a JSON object")
                patched = merge_patch(current, body)
            elif ctype == "application/json-patch+json":
                if not isinstance(body, list):
                    # What the real server answers (jsonpatch.DecodePatch fails -> BadRequest).
                    # kubernetes_asyncio sends a dict body to CustomObjectsApi.patch_* with this
                    # content type unless given _content_type="application/merge-patch+json".
                    raise errors.bad_request(
                        f"json: cannot unmarshal {type(body).__name__.replace('dict', 'object')} "
                        "into Go value of type jsonpatch.Patch"
                    )
                patched = json_patch(current, body)
            elif ctype == "application/strategic-merge-patch+json":
                if t.rt.custom:
                    raise APIError(
                        415,
                        "UnsupportedMediaType",
                        "strategic merge patch is not supported for custom resources: "
                        "use application/merge-patch+json or application/json-patch+json",
                    )
                if not isinstance(body, dict):
                    raise PatchError("strategic merge patch must be a JSON object")
                patched = strategic_merge_patch(current, body)
            elif ctype == "application/apply-patch+yaml":
                if not isinstance(body, dict):
                    raise PatchError("apply patch must be an object")
                patched = merge_patch(current, body)
            else:
                raise APIError(
                    415,
                    "UnsupportedMediaType",
                    f"the body of the request was in an unknown format - accepted media types "
                    f"include: application/json-patch+json, application/merge-patch+json, "
                    f"application/apply-patch+yaml (got {ctype})",
                )
        except PatchError as exc:
            raise APIError(
                422,
                "Invalid",
                f"the server rejected our request due to an error in our request: {exc}",
            ) from None
        if not isinstance(patched, dict):
            raise APIError(
                422, "Invalid", "the server rejected our request due to an error in our request"
            )
        patched_meta = patched.get("metadata") or {}
        sent_rv = None
        if ctype in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            sent_rv = (
                (body.get("metadata") or {}) if isinstance(body.get("metadata"), dict) else {}
            ).get("resourceVersion")
        else:
            sent_rv = patched_meta.get("resourceVersion")
        if sent_rv is not None and str(sent_rv) != current["metadata"]["resourceVersion"]:
            raise errors.conflict(t.rt.group, t.rt.plural, t.name)
        patched.setdefault("metadata", {})["resourceVersion"] = current["metadata"][
            "resourceVersion"
        ]
        obj = self.state.update(
            t.rt,
            t.namespace,
            t.name,
            patched,
            subresource=t.sub,
            require_rv=False,
            dry_run=_dry_run(request),
        )
        return _json_response(obj)

    async def _delete_options(self, request: web.Request) -> DeleteOptions:
        q = request.query
        body: dict[str, Any] = {}
        if request.can_read_body:
            raw = await request.read()
            if raw.strip():
                try:
                    parsed = json.loads(raw)
                except ValueError:
                    raise errors.bad_request(
                        "the DeleteOptions body could not be decoded"
                    ) from None
                if isinstance(parsed, dict):
                    body = parsed
        policy = q.get("propagationPolicy") or body.get("propagationPolicy")
        orphan = q.get("orphanDependents", body.get("orphanDependents"))
        orphan_flag = None if orphan is None else str(orphan).lower() in ("true", "1")
        if policy is None and orphan_flag is not None:
            policy = "Orphan" if orphan_flag else "Background"
        grace_raw = q.get("gracePeriodSeconds", body.get("gracePeriodSeconds"))
        grace: int | None = None
        if grace_raw is not None and grace_raw != "":
            try:
                grace = int(grace_raw)
            except (TypeError, ValueError):
                raise errors.bad_request(f"invalid gracePeriodSeconds: {grace_raw!r}") from None
        preconditions = body.get("preconditions") or {}
        return DeleteOptions(
            propagation_policy=policy,
            grace_period_seconds=grace,
            precondition_uid=preconditions.get("uid"),
            precondition_rv=preconditions.get("resourceVersion"),
            orphan_dependents=orphan_flag,
        )

    # -- list / watch --------------------------------------------------------------------

    def _predicates(
        self, request: web.Request, rt: ResourceType
    ) -> Callable[[dict[str, Any]], bool]:
        labels = parse_label_selector(request.query.get("labelSelector"))
        fields = parse_field_selector(request.query.get("fieldSelector"), rt.plural, rt.kind)
        return lambda obj: labels(obj) and fields(obj)

    def _serve_list(self, request: web.Request, t: _Target) -> web.Response:
        q = request.query
        limit_raw = q.get("limit")
        limit = None
        if limit_raw:
            try:
                limit = int(limit_raw)
            except ValueError:
                raise errors.bad_request(f"invalid limit: {limit_raw!r}") from None
        result = self.state.list_objects(
            t.rt,
            t.namespace,
            self._predicates(request, t.rt),
            limit=limit if limit and limit > 0 else None,
            continue_token=q.get("continue") or None,
        )
        if printing.wants_table(request.headers.get("Accept", "")):
            table = printing.table(
                t.rt, result["items"], self.state.rv, q.get("includeObject", "Metadata")
            )
            table["metadata"] = result["metadata"]
            return _json_response(table)
        return _json_response(result)

    async def _serve_watch(self, request: web.Request, t: _Target) -> web.StreamResponse:
        q = request.query
        predicate = self._predicates(request, t.rt)
        timeout_raw = q.get("timeoutSeconds")
        try:
            timeout = float(timeout_raw) if timeout_raw else DEFAULT_WATCH_TIMEOUT_SECONDS
        except ValueError:
            raise errors.bad_request(f"invalid timeoutSeconds: {timeout_raw!r}") from None
        bookmarks = q.get("allowWatchBookmarks", "").lower() in ("true", "1")
        response = web.StreamResponse(status=200)
        response.content_type = "application/json"
        response.enable_chunked_encoding()
        initial_events = q.get("sendInitialEvents", "").lower() == "true"
        try:
            watcher, initial = self.state.open_watch(
                t.rt,
                t.namespace,
                predicate,
                # Watch-list: the current objects first, whatever resourceVersion says.
                None if initial_events else q.get("resourceVersion"),
            )
        except APIError as exc:
            if exc.code != 410:
                raise
            # The real server answers 200 and then one ERROR event carrying the 410 Status.
            await response.prepare(request)
            await response.write(_line({"type": "ERROR", "object": exc.status()}))
            await response.write_eof()
            return response
        task = asyncio.current_task()
        if task is not None:
            self._streams.add(task)
        client = not self.faults.is_system(request.headers.get("Authorization"))
        if client:
            self._client_watches.add(watcher)
            if task is not None:
                self._client_streams[task] = request.transport
        try:
            await response.prepare(request)
            as_table = printing.wants_table(request.headers.get("Accept", ""))
            include = q.get("includeObject", "Metadata")
            first = [True]

            def render(obj: dict[str, Any]) -> dict[str, Any]:
                # kubectl get -w asks for Tables: one row per event, the column definitions
                # on the first event only, as the real server does.
                if not as_table:
                    return obj
                table = printing.table(t.rt, [obj], self.state.rv, include)
                if not first[0]:
                    table["columnDefinitions"] = []
                first[0] = False
                return table

            for event_type, obj in initial:
                await response.write(_line({"type": event_type, "object": render(obj)}))
            stall = request.get(_FAULT)
            if stall is not None and stall.fault == APIFault.STALL:
                await self._hang(request, stall.seconds)  # silent, then reset
                return response
            if bookmarks and initial_events:
                await response.write(_line(self._bookmark(t.rt, initial_done=True)))
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            next_bookmark = loop.time() + self.bookmark_interval
            while True:
                now = loop.time()
                remaining = deadline - now
                if remaining <= 0:
                    break
                wait = min(remaining, next_bookmark - now) if bookmarks else remaining
                try:
                    item = await asyncio.wait_for(watcher.queue.get(), timeout=max(0.0, wait))
                except TimeoutError:
                    if bookmarks and loop.time() >= next_bookmark and watcher.queue.empty():
                        # Every event up to state.rv has been sent (events are queued
                        # synchronously), so the bookmark's resourceVersion is safe to resume.
                        await response.write(_line(self._bookmark(t.rt)))
                        next_bookmark = loop.time() + self.bookmark_interval
                    continue
                if item is None:
                    break
                event_type, obj = item
                await response.write(_line({"type": event_type, "object": render(obj)}))
            with contextlib.suppress(ConnectionResetError, RuntimeError):
                await response.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.state.close_watch(t.rt, watcher)
            self._client_watches.discard(watcher)
            if task is not None:
                self._streams.discard(task)
                self._client_streams.pop(task, None)
        return response

    def _bookmark(self, rt: ResourceType, *, initial_done: bool = False) -> dict[str, Any]:
        meta: dict[str, Any] = {"resourceVersion": str(self.state.rv)}
        if initial_done:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {
            "type": "BOOKMARK",
            "object": {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": meta},
        }

    async def _delete_collection(self, request: web.Request, t: _Target) -> web.Response:
        options = await self._delete_options(request)
        result = self.state.list_objects(t.rt, t.namespace, self._predicates(request, t.rt))
        deleted = []
        for obj in result["items"]:
            meta = obj["metadata"]
            with contextlib.suppress(APIError):
                final, _ = self.state.delete(
                    t.rt, meta.get("namespace") or None, meta["name"], options
                )
                deleted.append(final)
        return _json_response(
            {
                "kind": t.rt.list_kind,
                "apiVersion": t.rt.api_version,
                "metadata": {"resourceVersion": str(self.state.rv)},
                "items": deleted,
            }
        )

    # -- logs ----------------------------------------------------------------------------

    async def _serve_log(self, request: web.Request, t: _Target) -> web.StreamResponse:
        assert t.name is not None
        assert t.namespace is not None
        pod = self.state.get_object(t.rt, t.namespace, t.name)
        params = LogRequest(dict(request.query), pod)
        response = web.StreamResponse(status=200)
        response.content_type = "text/plain"
        response.enable_chunked_encoding()
        try:
            await response.prepare(request)
        except ConnectionResetError:
            return response  # the client went away before the answer (e.g. its timeout)
        task = asyncio.current_task()
        if task is not None:
            self._streams.add(task)
            if not self.faults.is_system(request.headers.get("Authorization")):
                self._client_streams[task] = request.transport
        fault = request.get(_FAULT)
        sent = 0
        stream = self._log_provider.read_log(
            t.namespace,
            t.name,
            params.container,
            follow=params.follow,
            since_time=params.since,
            tail_lines=params.tail_lines,
            timestamps=params.timestamps,
        )
        try:
            if (
                fault is not None
                and fault.fault == APIFault.LOG_DISCONNECT
                and fault.after_bytes <= 0
            ):
                await self._end_log_cleanly(request, response)
                return response
            async for chunk in stream:
                if params.limit_bytes is not None:
                    chunk = chunk[: max(0, params.limit_bytes - sent)]
                if (
                    fault is not None
                    and fault.fault == APIFault.LOG_CUT
                    and chunk
                    and sent + len(chunk) > fault.after_bytes
                ):
                    await self._cut_log(request, response, chunk, fault.after_bytes - sent)
                    return response
                if chunk:
                    await response.write(chunk)
                    sent += len(chunk)
                if params.limit_bytes is not None and sent >= params.limit_bytes:
                    break
                if (
                    fault is not None
                    and fault.fault == APIFault.STALL
                    and sent >= fault.after_bytes
                ):
                    await self._hang(request, fault.seconds)  # silent, then reset
                    return response
                if (
                    fault is not None
                    and fault.fault == APIFault.LOG_DISCONNECT
                    and sent >= fault.after_bytes
                ):
                    await self._end_log_cleanly(request, response)
                    return response
            with contextlib.suppress(ConnectionResetError, RuntimeError):
                await response.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
            if task is not None:
                self._streams.discard(task)
                self._client_streams.pop(task, None)
        return response

    @staticmethod
    async def _cut_log(
        request: web.Request, response: web.StreamResponse, chunk: bytes, keep: int
    ) -> None:
        """Fault ``log_cut``: send ``chunk[:keep]`` (at least one byte) as a chunk, then the
        header of a chunk that carries the rest and only half of it, then close the
        connection: the client holds a partial line and its payload is not completed."""
        keep = min(max(1, keep), len(chunk))
        head, tail = chunk[:keep], chunk[keep:]
        await response.write(head)  # also sends the headers
        transport = request.transport
        if transport is not None:
            transport.write(f"{max(len(tail), 1):x}\r\n".encode() + tail[: len(tail) // 2])
            transport.close()

    @staticmethod
    async def _end_log_cleanly(request: web.Request, response: web.StreamResponse) -> None:
        """Fault ``log_disconnect``: a well-formed end of the follow (terminating chunk) while
        the container still runs, then the server closes the connection."""
        with contextlib.suppress(ConnectionResetError, RuntimeError):
            await response.write_eof()
        transport = request.transport
        if transport is not None:
            transport.close()


def _dry_run(request: web.Request) -> bool:
    """``dryRun=All``: the request is admitted and answered, and nothing is stored."""
    values = request.query.getall("dryRun", [])
    unknown = [v for v in values if v != "All"]
    if unknown:
        raise errors.bad_request(f"unsupported dryRun value(s): {', '.join(unknown)}; use All")
    return bool(values)


def _line(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode() + b"\n"

"""A JSON-dict Kubernetes client and a list+watch cache, for the fake Job controller and kubelet.

Both controllers talk to the emulated apiserver over HTTP through kubernetes_asyncio's
``ApiClient`` (authentication, kubeconfig, connection pool), like real controllers talk to a real
apiserver; objects stay plain dicts (no model deserialisation: the controllers read a handful of
fields and write merge patches).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from agentrun_kube.errors import Gone, KubeError, from_api_exception
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

log = logging.getLogger(__name__)

Obj = dict[str, Any]
MERGE_PATCH = "application/merge-patch+json"


class JsonKube:
    """Raw JSON calls on an ``ApiClient``; errors raise :mod:`agentrun_kube.errors` types."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        request_timeout: float | None = 30,
    ) -> Any:
        """One call; returns the decoded JSON body (or None for an empty body)."""
        resp = await self._call(
            method,
            path,
            query=query,
            body=body,
            content_type=content_type,
            request_timeout=request_timeout,
        )
        try:
            data = await resp.read()
        finally:
            resp.release()
        return json.loads(data) if data else None

    async def stream(
        self, path: str, *, query: dict[str, Any], request_timeout: float | None = None
    ) -> Any:
        """An open streaming response (aiohttp ClientResponse); the caller releases it."""
        return await self._call("GET", path, query=query, request_timeout=request_timeout)

    async def _call(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        request_timeout: float | None = 30,
    ) -> Any:
        params = [(k, _query_value(v)) for k, v in (query or {}).items() if v is not None]
        headers = {"Accept": "application/json", "Content-Type": content_type}
        try:
            resp = await self.api.call_api(
                path,
                method,
                query_params=params,
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
                _return_http_data_only=True,
                _preload_content=False,
                _request_timeout=request_timeout,
            )
        except ApiException as exc:
            raise from_api_exception(exc) from exc
        except (TimeoutError, OSError) as exc:
            raise from_api_exception(ApiException(status=0, reason=str(exc))) from exc
        if not 200 <= resp.status <= 299:
            data = await resp.read()
            resp.release()
            failure = ApiException(status=resp.status, reason=resp.reason)
            failure.body = data.decode("utf-8", "replace")
            raise from_api_exception(failure)
        return resp

    async def get(self, path: str) -> Obj:
        result: Obj = await self.request("GET", path)
        return result

    async def get_or_none(self, path: str) -> Obj | None:
        try:
            return await self.get(path)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    async def create(self, path: str, body: Obj) -> Obj:
        result: Obj = await self.request("POST", path, body=body)
        return result

    async def merge_patch(self, path: str, patch: Obj) -> Obj:
        result: Obj = await self.request("PATCH", path, body=patch, content_type=MERGE_PATCH)
        return result

    async def delete(self, path: str, **options: Any) -> Obj | None:
        """DELETE with a DeleteOptions body; a 404 is success (already gone)."""
        body = {"apiVersion": "v1", "kind": "DeleteOptions", **options}
        try:
            result: Obj | None = await self.request("DELETE", path, body=body)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise
        return result


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def object_key(obj: Obj) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))


EventCallback = Callable[[str, Obj], Awaitable[None] | None]


class Informer:
    """List, then watch from the list's resourceVersion; keeps a cache and calls ``on_event``.

    On 410 Gone (or any broken watch) it re-lists: objects that vanished meanwhile are reported
    as DELETED, the rest as MODIFIED, so the cache never misses a final state for long.
    """

    def __init__(
        self,
        kube: JsonKube,
        path: str,
        on_event: EventCallback,
        *,
        watch_timeout_seconds: int = 60,
        retry_seconds: float = 0.5,
    ) -> None:
        self.kube = kube
        self.path = path
        self.on_event = on_event
        self.watch_timeout_seconds = watch_timeout_seconds
        self.retry_seconds = retry_seconds
        self.cache: dict[tuple[str, str], Obj] = {}
        self.synced = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"informer {self.path}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _emit(self, kind: str, obj: Obj) -> None:
        try:
            result = self.on_event(kind, obj)
            if result is not None:
                await result
        except Exception:  # a handler bug must not kill the watch
            log.exception("informer handler failed", extra={"path": self.path})

    async def _relist(self) -> str:
        data = await self.kube.request("GET", self.path)
        rv = str((data.get("metadata") or {}).get("resourceVersion") or "")
        fresh = {object_key(o): o for o in data.get("items") or []}
        for key in list(self.cache):
            if key not in fresh:
                gone = self.cache.pop(key)
                await self._emit("DELETED", gone)
        for key, obj in fresh.items():
            # items in a list carry no kind/apiVersion; the watch's objects do
            old = self.cache.get(key)
            self.cache[key] = obj
            if old is None or _rv(old) != _rv(obj):
                await self._emit("ADDED" if old is None else "MODIFIED", obj)
        return rv

    async def _run(self) -> None:
        rv = ""
        while True:
            try:
                if not rv:
                    rv = await self._relist()
                    self.synced.set()
                rv = await self._watch(rv)
            except asyncio.CancelledError:
                raise
            except Gone:
                rv = ""
            except Exception as exc:
                log.debug("watch %s broke: %s; re-listing", self.path, exc)
                rv = ""
                await asyncio.sleep(self.retry_seconds)

    async def _watch(self, rv: str) -> str:
        resp = await self.kube.stream(
            self.path,
            query={
                "watch": True,
                "resourceVersion": rv,
                "allowWatchBookmarks": True,
                "timeoutSeconds": self.watch_timeout_seconds,
            },
            request_timeout=self.watch_timeout_seconds + 30,
        )
        try:
            while True:
                line = await resp.content.readline()
                if not line:
                    return rv
                if not line.strip():
                    continue
                event = json.loads(line)
                kind = event.get("type")
                obj = event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise Gone(410, "Expired", str(obj.get("message")))
                    raise KubeError(int(obj.get("code") or 500), "", str(obj.get("message")))
                new_rv = _rv(obj)
                if new_rv:
                    rv = new_rv
                if kind == "BOOKMARK":
                    continue
                key = object_key(obj)
                if kind == "DELETED":
                    self.cache.pop(key, None)
                else:
                    self.cache[key] = obj
                await self._emit(str(kind), obj)
        finally:
            resp.close()


def _rv(obj: Obj) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


class EventRecorder:
    """Posts core/v1 Events about objects, as the real controllers do (fire and forget).

    Failures are logged at debug level and never affect the caller: Events are best effort on a
    real cluster too.
    """

    def __init__(
        self, kube: JsonKube, component: str, host: str | None = None, enabled: bool = True
    ) -> None:
        self.kube = kube
        self.component = component
        self.host = host
        self.enabled = enabled
        self._tasks: set[asyncio.Task[None]] = set()

    def emit(self, obj: Obj, reason: str, message: str, *, warning: bool = False) -> None:
        if not self.enabled:
            return
        task = asyncio.create_task(self._post(obj, reason, message, warning))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post(self, obj: Obj, reason: str, message: str, warning: bool) -> None:
        meta = obj.get("metadata") or {}
        namespace = str(meta.get("namespace") or "default")
        now = datetime.now(UTC)
        stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        source: dict[str, str] = {"component": self.component}
        if self.host:
            source["host"] = self.host
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{meta.get('name')}.{secrets.token_hex(8)}",
                "namespace": namespace,
            },
            "involvedObject": {
                "apiVersion": obj.get("apiVersion"),
                "kind": obj.get("kind"),
                "name": meta.get("name"),
                "namespace": namespace,
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "reason": reason,
            "message": message,
            "type": "Warning" if warning else "Normal",
            "source": source,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "eventTime": None,
            "count": 1,
            "reportingComponent": self.component,
            "reportingInstance": self.host or "",
        }
        try:
            await self.kube.create(f"/api/v1/namespaces/{namespace}/events", event)
        except KubeError as exc:
            log.debug("event %s for %s not recorded: %s", reason, meta.get("name"), exc)

    async def flush(self) -> None:
        """Wait for the events in flight (used on stop)."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

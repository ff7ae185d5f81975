"""Where the hub reads transcripts from: the AgentRun and its AgentRunTranscript chunks.

:class:`TranscriptSource` is the seam the hub's unit tests replace; :class:`KubeTranscriptSource`
is the Kubernetes implementation (kubernetes_asyncio, read-only).
"""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
from agentrun_contract import names, resource
from agentrun_kube.errors import Gone, KubeError, Unavailable, from_api_exception
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException


@dataclass(frozen=True, slots=True)
class RunSnapshot:
    """What the stream needs from the AgentRun: which incarnation it is (a run deleted and
    created again under the same name has a new uid), and whether `complete` is stored."""

    uid: str
    transcript_complete: bool
    transcript_last_event_id: int

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> RunSnapshot:
        status = obj.get("status") or {}
        transcript = status.get("transcript") if isinstance(status, Mapping) else None
        if not isinstance(transcript, Mapping):
            transcript = {}
        return cls(
            uid=str((obj.get("metadata") or {}).get("uid") or ""),
            transcript_complete=bool(transcript.get("complete", False)),
            transcript_last_event_id=int(transcript.get("lastEventId", 0) or 0),
        )


@dataclass(frozen=True, slots=True)
class WatchEvent:
    type: str
    """ADDED, MODIFIED, DELETED or BOOKMARK."""
    object: dict[str, Any]

    @property
    def resource_version(self) -> str | None:
        rv = self.object.get("metadata", {}).get("resourceVersion")
        return str(rv) if rv else None


class TranscriptSource(Protocol):
    async def get_run(self, run_name: str) -> RunSnapshot | None:
        """The run, or None if it does not exist. Raises :class:`KubeError` otherwise."""

    async def list_chunks(self, run_name: str) -> tuple[list[dict[str, Any]], str]:
        """The run's chunks and the list's resourceVersion."""

    def watch_chunks(self, run_name: str, resource_version: str) -> AsyncIterator[WatchEvent]:
        """Changes to the run's chunks after ``resource_version``. Ends cleanly when the server
        ends the watch; raises :class:`agentrun_kube.errors.Gone` when the version expired
        (re-list) and other :class:`KubeError` on failure."""

    async def close(self) -> None: ...


class KubeTranscriptSource:
    """Reads through its own ApiClient: open watches hold a connection each, and sharing the
    API's connection pool would let many streamed runs starve the API's other calls."""

    def __init__(
        self,
        api_client: client.ApiClient,
        namespace: str,
        *,
        watch_timeout_seconds: int,
        request_timeout_seconds: float,
        connection_pool_size: int,
    ) -> None:
        configuration = copy.deepcopy(api_client.configuration)
        configuration.connection_pool_maxsize = connection_pool_size
        self._api = client.ApiClient(configuration=configuration)
        self._objects = client.CustomObjectsApi(self._api)
        self._namespace = namespace
        self._watch_timeout = watch_timeout_seconds
        self._request_timeout = request_timeout_seconds
        self.watches_opened = 0
        """Watch requests sent (re-opens included), for the benchmark and metrics."""

    async def close(self) -> None:
        await self._api.close()

    async def get_run(self, run_name: str) -> RunSnapshot | None:
        try:
            obj = await self._objects.get_namespaced_custom_object(
                resource.GROUP,
                resource.VERSION,
                self._namespace,
                resource.PLURAL,
                run_name,
                _request_timeout=self._request_timeout,
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise from_api_exception(exc) from exc
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise Unavailable(0, "Unreachable", str(exc) or type(exc).__name__) from exc
        return RunSnapshot.from_object(obj)

    def _selector(self, run_name: str) -> str:
        return f"{names.LABEL_RUN}={run_name}"

    async def list_chunks(self, run_name: str) -> tuple[list[dict[str, Any]], str]:
        try:
            listing = await self._objects.list_namespaced_custom_object(
                resource.GROUP,
                resource.VERSION,
                self._namespace,
                resource.TRANSCRIPT_PLURAL,
                label_selector=self._selector(run_name),
                _request_timeout=self._request_timeout,
            )
        except ApiException as exc:
            raise from_api_exception(exc) from exc
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise Unavailable(0, "Unreachable", str(exc) or type(exc).__name__) from exc
        items = list(listing.get("items") or [])
        rv = str((listing.get("metadata") or {}).get("resourceVersion") or "")
        return items, rv

    async def watch_chunks(self, run_name: str, resource_version: str) -> AsyncIterator[WatchEvent]:
        self.watches_opened += 1
        try:
            response = await self._objects.list_namespaced_custom_object(
                resource.GROUP,
                resource.VERSION,
                self._namespace,
                resource.TRANSCRIPT_PLURAL,
                label_selector=self._selector(run_name),
                watch=True,
                allow_watch_bookmarks=True,
                resource_version=resource_version,
                timeout_seconds=self._watch_timeout,
                _preload_content=False,
                # no total limit; a silent connection is dead once the server's own timeout
                # has passed with a margin
                _request_timeout=(self._request_timeout, self._watch_timeout + 30),
            )
        except ApiException as exc:
            raise from_api_exception(exc) from exc
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise Unavailable(0, "Unreachable", str(exc) or type(exc).__name__) from exc
        try:
            buffer = b""
            # Lines can be long (a chunk's events are JSON inside JSON): split ourselves rather
            # than use readline, whose buffer limit a 32 KiB chunk of escaped text can exceed.
            async for data in response.content.iter_any():
                buffer += data
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        yield _watch_event(line)
            if buffer.strip():
                yield _watch_event(buffer)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise Unavailable(0, "Unreachable", str(exc) or type(exc).__name__) from exc
        finally:
            response.release()


def _watch_event(line: bytes) -> WatchEvent:
    try:
        event = json.loads(line)
    except ValueError as exc:
        raise Unavailable(0, "BadWatchLine", "watch sent a line that is not JSON") from exc
    kind = str(event.get("type", ""))
    obj = event.get("object") or {}
    if kind == "ERROR":
        code = int(obj.get("code", 0) or 0)
        reason = str(obj.get("reason", ""))
        message = str(obj.get("message", ""))
        if code == 410:
            raise Gone(code, reason, message)
        if code == 0 or code == 429 or code >= 500:
            raise Unavailable(code, reason, message)
        raise KubeError(code, reason, message)
    return WatchEvent(type=kind, object=obj)

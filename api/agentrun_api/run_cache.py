"""The run cache: one list+watch of the namespace's AgentRuns per API process (an informer).

It keeps a slim :class:`RunRecord` per run (no prompt, no YAML), current through a watch that
resumes from the last resourceVersion, re-lists on 410 Gone and backs off on errors. It serves
``GET /runs`` (filter, sort, page), ``queue_position`` and the backpressure count.

Read-your-writes: the API upserts what its own writes return, and a miss falls back to a direct
GET (in the routes), so a run just created is visible at once even before its watch event.

Staleness: every list page and every watch read (events, bookmarks, a watch opened or ended by
the server after ``watch_timeout_seconds``) is contact. A watch silent for ``stale_seconds``
(more than the server's watch timeout: a half-open connection) is dropped and the cache
re-lists; every list page and watch opening is bounded by the same time. While no contact is
newer than ``stale_seconds``, :meth:`RunCache.stale_for` says so and ``/health`` answers 503.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Iterable, Iterator
from typing import Any, TypeVar

from agentrun_kube.errors import Gone, KubeError

from agentrun_api.records import RunRecord, record_from_object
from agentrun_api.runs_repository import RunsRepository

log = logging.getLogger("agentrun.api.cache")

LIST_PAGE_SIZE = 500
MAX_BACKOFF_SECONDS = 30.0
T = TypeVar("T")


class WatchStalled(Exception):
    """The run cache's watch (or list) heard nothing for ``stale_seconds``."""


def _rv_newer(candidate: str, current: str) -> bool:
    """Is ``candidate`` at least as new as ``current``? resourceVersions are opaque, but every
    real apiserver (and the emulator) uses increasing integers; fall back to "take it"."""
    try:
        return int(candidate) >= int(current)
    except ValueError:
        return True


class RunCache:
    """Watch-backed cache of one namespace's runs. Start with :meth:`run` in a task."""

    def __init__(
        self,
        repository: RunsRepository,
        *,
        watch_timeout_seconds: int = 60,
        retry_seconds: float = 1.0,
        stale_seconds: float = 90.0,
    ) -> None:
        self._repository = repository
        self._watch_timeout = watch_timeout_seconds
        self._retry = retry_seconds
        self._stale = stale_seconds
        self._started = time.monotonic()
        self._records: dict[str, RunRecord] = {}
        self._order: list[tuple[float, str]] = []
        """Every held run's sort key, oldest first (creation time never changes, so a run's
        place only changes when it is added or removed: bisect keeps this sorted)."""
        self._resource_version = ""
        self._queued: list[tuple[float, str]] = []
        """The queued runs' sort keys, oldest first: a run's ``queue_position`` is a binary
        search and the backpressure count is a length, whatever the number of runs (both are
        read on every submit and poll; recomputing them from all runs after each change cost
        O(runs) per request)."""
        self.synced = asyncio.Event()
        self.last_contact: float | None = None
        """time.monotonic() of the last successful list or watch read."""
        self.relists = 0
        self.stalls = 0
        """Watches (or lists) dropped because they stayed silent for ``stale_seconds``."""

    # ---- staleness --------------------------------------------------------------------------

    def stale_for(self, now: float | None = None) -> float | None:
        """Seconds since the last contact when that is more than ``stale_seconds`` (counting
        from start-up before the first list), else None (current)."""
        now = time.monotonic() if now is None else now
        since = now - (self.last_contact if self.last_contact is not None else self._started)
        return since if since > self._stale else None

    async def _bounded(self, call: Awaitable[T], what: str) -> T:
        try:
            return await asyncio.wait_for(call, self._stale)
        except TimeoutError:
            self.stalls += 1
            raise WatchStalled(f"{what}: nothing heard for {self._stale:g} s") from None

    # ---- reads ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._records)

    def get(self, name: str) -> RunRecord | None:
        return self._records.get(name)

    def records(self) -> Iterable[RunRecord]:
        return self._records.values()

    def newest_first(self) -> Iterator[RunRecord]:
        records = self._records
        return (records[name] for _, name in reversed(self._order))

    def queue_position(self, name: str) -> int | None:
        """1-based place among the queued runs, oldest first (the order the operator admits
        in); None when the run is not queued."""
        record = self._records.get(name)
        if record is None or not record.is_queued:
            return None
        return bisect.bisect_left(self._queued, record.sort_key) + 1

    def queued_count(self) -> int:
        return len(self._queued)

    def _put(self, record: RunRecord) -> None:
        held = self._records.get(record.name)
        if held is not None:
            if held.is_queued:
                _remove_key(self._queued, held.sort_key)
            if held.sort_key != record.sort_key:
                _remove_key(self._order, held.sort_key)
                held = None
        if held is None:
            bisect.insort(self._order, record.sort_key)
        if record.is_queued:
            bisect.insort(self._queued, record.sort_key)
        self._records[record.name] = record

    # ---- writes (the watch, and read-your-writes) -------------------------------------------

    def upsert(self, obj: dict[str, Any]) -> RunRecord:
        """Store what a write or a watch event returned, unless a newer version is held."""
        record = record_from_object(obj)
        held = self._records.get(record.name)
        if (
            held is None
            or held.uid != record.uid
            or _rv_newer(record.resource_version, held.resource_version)
        ):
            self._put(record)
            return record
        return held

    def remove(self, name: str, uid: str | None = None) -> None:
        held = self._records.get(name)
        if held is not None and (uid is None or held.uid == uid):
            del self._records[name]
            _remove_key(self._order, held.sort_key)
            if held.is_queued:
                _remove_key(self._queued, held.sort_key)

    def replace_all(self, objects: Iterable[dict[str, Any]], resource_version: str) -> None:
        records = {}
        for obj in objects:
            record = record_from_object(obj)
            records[record.name] = record
        self._records = records
        self._order = sorted(r.sort_key for r in records.values())
        self._queued = sorted(r.sort_key for r in records.values() if r.is_queued)
        self._resource_version = resource_version

    # ---- the informer loop -------------------------------------------------------------------

    async def list_all(self) -> None:
        """Full re-list (paged); replaces the cache and sets the watch's resourceVersion."""
        objects: list[dict[str, Any]] = []
        cont: str | None = None
        resource_version = ""
        while True:
            page = await self._bounded(
                self._repository.list_page(limit=LIST_PAGE_SIZE, cont=cont), "list"
            )
            objects.extend(page.get("items") or [])
            meta = page.get("metadata") or {}
            resource_version = resource_version or str(meta.get("resourceVersion", ""))
            cont = meta.get("continue") or None
            if not cont:
                resource_version = str(meta.get("resourceVersion", resource_version))
                break
        self.replace_all(objects, resource_version)
        self.last_contact = time.monotonic()
        self.relists += 1
        self.synced.set()
        log.info("run cache listed", extra={"runs": len(self._records)})

    def _apply_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        obj = event.get("object") or {}
        if kind == "ERROR":
            code = obj.get("code")
            if code == 410:
                raise Gone(410, "Expired", str(obj.get("message", "watch expired")))
            raise KubeError(int(code or 0), str(obj.get("reason", "")), str(obj.get("message")))
        rv = str((obj.get("metadata") or {}).get("resourceVersion", ""))
        if kind in ("ADDED", "MODIFIED"):
            self.upsert(obj)
        elif kind == "DELETED":
            meta = obj.get("metadata") or {}
            self.remove(str(meta.get("name", "")), meta.get("uid"))
        if rv:
            self._resource_version = rv

    async def _watch_once(self) -> None:
        response = await self._bounded(
            self._repository.watch_response(self._resource_version, self._watch_timeout),
            "watch opening",
        )
        self.last_contact = time.monotonic()
        try:
            buffer = b""
            while True:
                # A read timeout, not only the server's: a half-open connection never ends.
                chunk = await self._bounded(response.content.readany(), "watch")
                if not chunk:
                    break  # the server ended the watch (its timeout): re-open from here
                self.last_contact = time.monotonic()
                buffer += chunk
                while b"\n" in buffer:
                    line, _, buffer = buffer.partition(b"\n")
                    if line.strip():
                        self._apply_event(json.loads(line))
            if buffer.strip():
                self._apply_event(json.loads(buffer))
        except WatchStalled:
            response.close()  # never hand a half-open connection back to the pool
            raise
        finally:
            response.release()

    async def run(self) -> None:
        """List, then watch forever; re-list on 410 or after errors (with back-off)."""
        backoff = self._retry
        need_list = True
        while True:
            try:
                if need_list:
                    await self.list_all()
                    need_list = False
                await self._watch_once()
                backoff = self._retry
            except asyncio.CancelledError:
                raise
            except Gone:
                log.info("run cache watch expired; re-listing")
                need_list = True
            except WatchStalled as exc:
                # Half-open (or a hung apiserver): the connection is dropped; re-list at once
                # (the silence already lasted stale_seconds).
                log.warning(
                    "run cache watch stalled; re-listing",
                    extra={"error": str(exc), "stale_seconds": self._stale},
                )
                need_list = True
            except Exception as exc:  # any failure: back off, then re-list to be safe
                log.warning("run cache error; retrying", extra={"error": repr(exc)})
                need_list = True
                await asyncio.sleep(backoff)
                backoff = min(MAX_BACKOFF_SECONDS, backoff * 2)

    async def wait_synced(self, seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.synced.wait(), seconds)
        return self.synced.is_set()


def _remove_key(keys: list[tuple[float, str]], key: tuple[float, str]) -> None:
    index = bisect.bisect_left(keys, key)
    if index < len(keys) and keys[index] == key:
        del keys[index]

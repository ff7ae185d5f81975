"""The per-process fan-out hub: one upstream subscription per run, shared by all its clients.

- :class:`StreamHub` maps run names to :class:`RunUpstream` and refuses new streams once the
  process is shutting down.
- :class:`RunUpstream` reads the run's chunks once, then (unless the run's `complete` event is
  already stored) follows a watch on them, re-listing on 410, and checks the AgentRun now and
  then so a deleted run ends its streams. It is released when its last client has been gone
  for ``min(upstream_idle_seconds, heartbeat_seconds)``.
- :class:`StreamClient` is one open stream: the stored events after its cursor (the backlog,
  shared frames), then live events through a bounded buffer. A client whose buffer is full is
  ended after sending what it holds, so its last id stands and a reconnect resumes exactly.

Everything that changes the transcript view and hands events to clients runs without an await
in between, so a client registered at any moment gets every later event exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Final

from agentrun_contract import names
from agentrun_contract.stream import HEARTBEAT, done_frame
from agentrun_kube.errors import Gone, KubeError

from agentrun_api.streaming.metrics import StreamMetrics
from agentrun_api.streaming.settings import StreamSettings
from agentrun_api.streaming.source import TranscriptSource, WatchEvent
from agentrun_api.streaming.transcript import Frame, TranscriptView

log = logging.getLogger("agentrun.api.stream")

BATCH_FRAMES: Final = 64
"""Frames joined into one write: fewer sends for a long backlog, still small writes."""
MAX_BACKOFF_SECONDS: Final = 30.0
_NAME_RE: Final = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


@dataclass(frozen=True, slots=True)
class CachedRun:
    """What the API's run informer knows about a run."""

    uid: str
    terminal: bool


RunLookup = Callable[[str], CachedRun | None]


class RunNotFound(LookupError):
    """No AgentRun answers to this job id (404)."""


class ShuttingDown(RuntimeError):
    """The process is draining; the client should reconnect to another replica (503)."""


class StreamClient:
    """One open stream: iterate it (or :meth:`frames`) exactly once."""

    def __init__(
        self,
        upstream: RunUpstream,
        cursor: int,
        backlog: list[Frame],
        *,
        buffer_events: int,
        heartbeat_seconds: float,
    ) -> None:
        self._upstream = upstream
        self.initial_cursor = cursor
        self.opened_at = time.monotonic()
        self.started = False
        self.cursor = cursor
        """The id of the last event sent (or the resume cursor before any is sent)."""
        self._floor = max([cursor, *(f.id for f in backlog[-1:])])
        self._backlog: deque[Frame] = deque(backlog)
        self._live: deque[Frame] = deque()
        self._limit = buffer_events
        self._heartbeat = heartbeat_seconds
        self._wake = asyncio.Event()
        self.end_reason: str | None = None
        self.done = False
        """True once [DONE] was handed to the server."""
        self.finished = False
        self.aborted = False
        self._gen: AsyncGenerator[str, None] | None = None
        self._abort: Callable[[], None] | None = None
        self._abort_timer: asyncio.TimerHandle | None = None

    def __aiter__(self) -> AsyncGenerator[str, None]:
        gen = self._gen
        if gen is None:
            gen = self._gen = self.frames()
        return gen

    async def aclose(self) -> None:
        """Close the frames (runs their cleanup) whether or not they were iterated."""
        if self._gen is not None:
            await self._gen.aclose()
        elif not self.finished:
            self.finished = True
            self._upstream.unsubscribe(self)

    def bind_abort(self, abort: Callable[[], None]) -> None:
        """How the response drops the connection when the stream cannot end by itself."""
        self._abort = abort

    def push(self, frames: list[Frame]) -> None:
        """Hand new events (ids above everything handed before) to this client."""
        if self.end_reason is not None:
            return
        fresh = [f for f in frames if f.id > self._floor]
        if not fresh:
            return
        if len(self._live) + len(fresh) > self._limit:
            # Keep what is buffered (it continues the client's cursor without a hole), send it,
            # then end: the client resumes from its last id. A client that reads nothing at all
            # keeps the server blocked in send: drop it by the next heartbeat.
            self.end("overflow", abort_after=self._heartbeat)
            return
        self._live.extend(fresh)
        self._floor = fresh[-1].id
        self._wake.set()

    def end(self, reason: str, *, abort_after: float | None = None) -> None:
        """End the stream after what is buffered has been sent (no [DONE]). With
        ``abort_after``, drop the connection if the stream has not ended by then (a client
        that stopped reading)."""
        if self.end_reason is None:
            self.end_reason = reason
        self._wake.set()
        if abort_after is not None and self._abort_timer is None and not self.finished:
            loop = asyncio.get_running_loop()
            self._abort_timer = loop.call_later(abort_after, self._abort_if_open)

    def _abort_if_open(self) -> None:
        if self.finished or self._abort is None:
            return
        log.warning(
            "dropping a stream that stopped reading",
            extra={"run": self._upstream.run_name, "reason": self.end_reason, "id": self.cursor},
        )
        self.aborted = True
        self._abort()

    def _take_batch(self) -> list[Frame]:
        source = self._backlog if self._backlog else self._live
        batch: list[Frame] = []
        while source and len(batch) < BATCH_FRAMES:
            batch.append(source.popleft())
        return batch

    async def frames(self) -> AsyncGenerator[str, None]:
        """The SSE text: events after the cursor, heartbeats when idle, and after `complete`
        the [DONE] sentinel. Releases the client's share of the upstream when it ends, is
        cancelled (the client went away) or is closed."""
        self.started = True
        try:
            while True:
                batch = self._take_batch()
                if batch:
                    self.cursor = batch[-1].id
                    text = "".join(f.text for f in batch)
                    if batch[-1].is_complete:
                        self.done = True
                        yield text + done_frame()
                        return
                    yield text
                    continue
                if self.end_reason is not None:
                    return
                self._wake.clear()
                try:
                    async with asyncio.timeout(self._heartbeat):
                        await self._wake.wait()
                except TimeoutError:
                    yield HEARTBEAT
        finally:
            self.finished = True
            if self._abort_timer is not None:
                self._abort_timer.cancel()
            self._upstream.unsubscribe(self)


class RunUpstream:
    """The one subscription to a run's transcript in this process."""

    def __init__(self, hub: StreamHub, run_name: str) -> None:
        self._hub = hub
        self.run_name = run_name
        self.view = TranscriptView()
        self.clients: set[StreamClient] = set()
        self.started: asyncio.Task[None] | None = None
        self.uid = ""
        self.ended = False
        self._tasks: list[asyncio.Task[None]] = []
        self._release: asyncio.Task[None] | None = None
        self._rv = ""

    @property
    def _settings(self) -> StreamSettings:
        return self._hub.settings

    async def start(self) -> None:
        """Read the run and its chunks; follow them unless `complete` is already stored."""
        snapshot = await self._hub.source.get_run(self.run_name)
        if snapshot is None:
            raise RunNotFound(self.run_name)
        self.uid = snapshot.uid
        await self._relist()
        if not self.view.is_complete:
            self._tasks = [
                asyncio.create_task(self._follow(), name=f"stream-watch-{self.run_name}"),
                asyncio.create_task(self._check_run(), name=f"stream-check-{self.run_name}"),
            ]
            for task in self._tasks:
                task.add_done_callback(self._on_task_done)

    def _on_task_done(self, task: asyncio.Task[None]) -> None:
        """A reader that died of an unexpected error must not leave its clients waiting on a
        stream that no longer moves: end them (they reconnect to a fresh upstream)."""
        if task.cancelled() or task.exception() is None or self.ended:
            return
        log.error(
            "stream upstream failed; ending its streams",
            extra={"run": self.run_name, "error": repr(task.exception())},
        )
        self.ended = True
        for other in self._tasks:
            other.cancel()
        for client in list(self.clients):
            client.end("upstream_failed")
        self._hub.forget(self)

    # -- clients --

    def subscribe(self, cursor: int) -> StreamClient:
        client = StreamClient(
            self,
            cursor,
            self.view.after(cursor),
            buffer_events=self._settings.client_buffer_events,
            heartbeat_seconds=self._settings.heartbeat_seconds,
        )
        if self.ended:
            client.end("run_gone")
        self.clients.add(client)
        self._hub.metrics.clients.inc()
        if self._release is not None:
            self._release.cancel()
            self._release = None
        return client

    def unsubscribe(self, client: StreamClient) -> None:
        if client not in self.clients:
            return
        self.clients.discard(client)
        self._hub.metrics.clients.dec()
        if client.end_reason is not None and not client.done:
            self._hub.metrics.disconnects.labels(client.end_reason).inc()
        self.release_if_idle()
        self._hub.client_left()

    def release_if_idle(self) -> None:
        """Schedule the release of this upstream if no client uses it."""
        if self.clients or self._release is not None or self.ended:
            return
        linger = min(self._settings.upstream_idle_seconds, self._settings.heartbeat_seconds)
        self._release = asyncio.create_task(self._release_later(linger))

    async def _release_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self._release = None
        if not self.clients:
            await self._hub.drop(self)

    def sweep(self, unstarted_after: float) -> None:
        """Forget clients whose stream never started (the response failed before its first
        byte, so the stream's own cleanup never runs), then release if idle."""
        now = time.monotonic()
        for client in list(self.clients):
            if not client.started and now - client.opened_at > unstarted_after:
                client.end("never_started")
                self.unsubscribe(client)
        self.release_if_idle()

    # -- upstream --

    def _announce(self) -> None:
        new = self.view.take_new()
        if new:
            for client in list(self.clients):
                client.push(new)
        complete_id = self.view.complete_id
        if complete_id is not None:
            # A client that resumed beyond the `complete` event gets nothing more: end it so
            # its reconnect is answered 204.
            for client in list(self.clients):
                if client.initial_cursor >= complete_id:
                    client.end("complete")

    async def _relist(self) -> None:
        items, rv = await self._hub.source.list_chunks(self.run_name)
        self.view.replace_all(items)
        self._rv = rv
        self._announce()

    def _apply(self, event: WatchEvent) -> None:
        if event.type in ("ADDED", "MODIFIED"):
            self.view.upsert(event.object)
        elif event.type == "DELETED":
            self.view.remove(event.object)
        self._announce()

    async def _follow(self) -> None:
        """Follow the watch from the list's resourceVersion until `complete` is stored.
        410 -> re-list; other errors -> retry with doubling back-off. A watch that expires or
        ends empty right after it was opened backs off too, so a misbehaving server is not
        hammered."""
        base = self._settings.watch_retry_seconds
        backoff = base
        need_list = False
        just_listed = False
        while not self.view.is_complete:
            opened = time.monotonic()
            received = False
            try:
                if need_list:
                    await self._relist()
                    need_list = False
                    just_listed = True
                    continue
                self._hub.metrics.watches_opened.inc()
                async for event in self._hub.source.watch_chunks(self.run_name, self._rv):
                    received = True
                    if event.type != "BOOKMARK":
                        self._apply(event)
                    self._rv = event.resource_version or self._rv
                    if self.view.is_complete:
                        break
                just_listed = False
                if received or time.monotonic() - opened > 1.0:
                    backoff = base
                    continue
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
            except Gone:
                log.info("transcript watch expired; re-listing", extra={"run": self.run_name})
                need_list = True
                if just_listed and not received:
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
            except KubeError as exc:
                log.warning(
                    "transcript watch failed; retrying",
                    extra={"run": self.run_name, "status": exc.status, "error": exc.message},
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
        self._stop_checking()

    async def _check_run(self) -> None:
        """Safety net beside the watch: a deleted (or re-created) run ends its streams, and a
        `complete` the status reports but the watch has not delivered triggers a re-list."""
        while not self.view.is_complete:
            await asyncio.sleep(self._settings.status_poll_seconds)
            try:
                cached = self._hub.lookup(self.run_name) if self._hub.lookup else None
                if cached is not None and cached.uid == self.uid:
                    # The API's informer vouches for the run: no request. A finished run whose
                    # `complete` the watch has not delivered yet gets a re-list.
                    if cached.terminal and not self.view.is_complete:
                        await self._relist()
                    continue
                snapshot = await self._hub.source.get_run(self.run_name)
                if snapshot is None or snapshot.uid != self.uid:
                    log.info("run gone; ending its streams", extra={"run": self.run_name})
                    await self._hub.drop(self, reason="run_gone")
                    return
                if (
                    snapshot.transcript_complete
                    and snapshot.transcript_last_event_id > self.view.high_water
                ):
                    await self._relist()
            except KubeError as exc:
                log.warning("run check failed", extra={"run": self.run_name, "status": exc.status})
        # `complete` came through a re-list: the watch has nothing more to deliver
        self._stop_checking()

    def _stop_checking(self) -> None:
        """Cancel this upstream's other reader (the watch, or the check) once complete."""
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()

    async def stop(self, reason: str) -> None:
        """End every client (after what they hold) and stop reading."""
        self.ended = True
        for client in list(self.clients):
            client.end(reason)
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        if self._release is not None and self._release is not current:
            tasks.append(self._release)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task


class StreamHub:
    """Per-process: at most one :class:`RunUpstream` per run, shared by its clients."""

    def __init__(
        self,
        source: TranscriptSource,
        settings: StreamSettings,
        metrics: StreamMetrics | None = None,
        lookup: RunLookup | None = None,
    ) -> None:
        self.source = source
        self.settings = settings
        self.lookup = lookup
        """The API's run informer, if any: the periodic run check asks Kubernetes only when the
        informer does not know the run (it may lag behind another replica's create)."""
        self.metrics = metrics or StreamMetrics()
        self._upstreams: dict[str, RunUpstream] = {}
        self.closing = False
        self._drained = asyncio.Event()

    def client_left(self) -> None:
        if self.closing and not self.open_clients():
            self._drained.set()

    @property
    def upstream_count(self) -> int:
        return len(self._upstreams)

    def upstream(self, run_name: str) -> RunUpstream | None:
        return self._upstreams.get(run_name)

    async def open(self, job_id: str, cursor: int) -> StreamClient | None:
        """A stream of ``job_id`` after ``cursor``; None when the cursor is at or past the
        stored `complete` event (answer 204). Raises :class:`RunNotFound`,
        :class:`ShuttingDown`, or :class:`KubeError` when the run cannot be read."""
        if self.closing:
            raise ShuttingDown
        run_name = names.run_name_for_job_id(job_id)
        if not _NAME_RE.match(run_name):
            raise RunNotFound(job_id)
        upstream = await self._started_upstream(run_name)
        if self.closing:
            raise ShuttingDown
        complete_id = upstream.view.complete_id
        if complete_id is not None and cursor >= complete_id:
            upstream.release_if_idle()
            return None
        return upstream.subscribe(cursor)

    async def _started_upstream(self, run_name: str) -> RunUpstream:
        """The run's upstream, started; a fresh one if the one found ended meanwhile."""
        for attempt in range(3):
            found = self._upstreams.get(run_name)
            if found is not None:
                upstream = found
            else:
                upstream = RunUpstream(self, run_name)
                upstream.started = asyncio.create_task(upstream.start())
                self._upstreams[run_name] = upstream
                self.metrics.upstreams.set(len(self._upstreams))
            started = upstream.started
            assert started is not None
            try:
                await asyncio.shield(started)
            except asyncio.CancelledError:
                # This caller went away while the upstream started; others may still use it.
                started.add_done_callback(_release_if_idle(upstream))
                raise
            except BaseException:
                if self._upstreams.get(run_name) is upstream:
                    await self.drop(upstream)
                raise
            if found is not None and not upstream.ended and not await self._still_there(upstream):
                await self.drop(upstream, reason="run_gone")
                continue
            if not upstream.ended or attempt == 2:
                return upstream
        raise AssertionError("unreachable")

    async def _still_there(self, upstream: RunUpstream) -> bool:
        """Is the run an existing upstream serves still the one that exists? Asked when a new
        client joins, so a deleted (or re-created) run is not served from a lingering upstream.
        Free with the API's informer; Kubernetes is asked only when the informer disagrees
        (it may lag behind another replica's write). Without an informer, the upstream's own
        periodic check is trusted."""
        if self.lookup is None:
            return True
        cached = self.lookup(upstream.run_name)
        if cached is not None and cached.uid == upstream.uid:
            return True
        snapshot = await self.source.get_run(upstream.run_name)
        return snapshot is not None and snapshot.uid == upstream.uid

    def forget(self, upstream: RunUpstream) -> None:
        """Stop handing ``upstream`` to new clients (a fresh one will be started)."""
        if self._upstreams.get(upstream.run_name) is upstream:
            del self._upstreams[upstream.run_name]
            self.metrics.upstreams.set(len(self._upstreams))

    async def drop(self, upstream: RunUpstream, reason: str = "released") -> None:
        if self._upstreams.get(upstream.run_name) is upstream:
            del self._upstreams[upstream.run_name]
            self.metrics.upstreams.set(len(self._upstreams))
        await upstream.stop(reason)

    def begin_shutdown(self) -> None:
        """Refuse new streams and end open ones after what each holds: every client's last
        id stands, so it resumes on another replica."""
        self.closing = True
        for upstream in list(self._upstreams.values()):
            for client in list(upstream.clients):
                client.end("shutdown", abort_after=self.settings.drain_seconds)

    async def sweep_forever(self) -> None:
        """Every heartbeat: forget streams that never started and release idle upstreams, so
        nothing outlives its clients by more than a heartbeat or two."""
        while True:
            await asyncio.sleep(self.settings.heartbeat_seconds)
            for upstream in list(self._upstreams.values()):
                if upstream.started is not None and upstream.started.done():
                    upstream.sweep(unstarted_after=self.settings.heartbeat_seconds)

    def open_clients(self) -> int:
        return sum(len(u.clients) for u in self._upstreams.values())

    async def close(self, drain_seconds: float) -> None:
        """Shut down: end streams, give them ``drain_seconds`` to finish, stop every upstream."""
        self.begin_shutdown()
        if self.open_clients():
            self._drained.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(drain_seconds):
                    await self._drained.wait()
        for upstream in list(self._upstreams.values()):
            await self.drop(upstream, reason="shutdown")


def _release_if_idle(upstream: RunUpstream) -> Callable[[object], None]:
    return lambda _: upstream.release_if_idle()


async def watch_shutdown(event: asyncio.Event, on_shutdown: Callable[[], None]) -> None:
    """Call ``on_shutdown`` once ``event`` is set (D's ``app.state.shutting_down``)."""
    await event.wait()
    on_shutdown()

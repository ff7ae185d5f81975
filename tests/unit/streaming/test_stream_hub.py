"""The fan-out hub over an in-memory transcript source (no cluster, no HTTP)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from agentrun_api.streaming.hub import (
    CachedRun,
    RunNotFound,
    ShuttingDown,
    StreamClient,
    StreamHub,
)
from agentrun_api.streaming.settings import StreamSettings
from agentrun_api.streaming.source import RunSnapshot, WatchEvent
from agentrun_contract.stream import StreamEvent, encode_transcript
from agentrun_kube.errors import Gone, Unavailable


class FakeSource:
    """Chunks per run with a global resourceVersion, watch history and live watchers."""

    def __init__(self) -> None:
        self.runs: dict[str, str] = {}
        self.chunks: dict[str, dict[str, dict[str, Any]]] = {}
        self.rv = 0
        self.history: list[tuple[int, str, str, dict[str, Any]]] = []
        self.watchers: list[tuple[str, asyncio.Queue[WatchEvent | BaseException | None]]] = []
        self.watches_opened = 0
        self.lists = 0
        self.gets = 0
        self.deaf = False
        self.expired_before = 0
        self.fail_next_watch: BaseException | None = None

    # -- writes, as the operator would --

    def add_run(self, name: str, uid: str = "uid-1") -> None:
        self.runs[name] = uid
        self.chunks.setdefault(name, {})

    def put(self, run: str, chunk: str, events: list[StreamEvent]) -> None:
        self.rv += 1
        kind = "MODIFIED" if chunk in self.chunks[run] else "ADDED"
        obj = {
            "metadata": {"name": chunk, "resourceVersion": str(self.rv)},
            "spec": {"runName": run, "events": encode_transcript(events)},
        }
        self.chunks[run][chunk] = obj
        self._emit(run, kind, obj)

    def delete(self, run: str, chunk: str) -> None:
        self.rv += 1
        obj = self.chunks[run].pop(chunk)
        obj = {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(self.rv)}}
        self._emit(run, "DELETED", obj)

    def _emit(self, run: str, kind: str, obj: dict[str, Any]) -> None:
        self.history.append((self.rv, run, kind, obj))
        if self.deaf:
            return
        for name, queue in self.watchers:
            if name == run:
                queue.put_nowait(WatchEvent(type=kind, object=obj))

    def end_watches(self, error: BaseException | None = None) -> None:
        for _, queue in self.watchers:
            queue.put_nowait(error)

    # -- TranscriptSource --

    async def get_run(self, run_name: str) -> RunSnapshot | None:
        self.gets += 1
        if run_name not in self.runs:
            return None
        return RunSnapshot(
            uid=self.runs[run_name], transcript_complete=False, transcript_last_event_id=0
        )

    async def list_chunks(self, run_name: str) -> tuple[list[dict[str, Any]], str]:
        self.lists += 1
        return list(self.chunks.get(run_name, {}).values()), str(self.rv)

    async def watch_chunks(self, run_name: str, resource_version: str) -> AsyncIterator[WatchEvent]:
        self.watches_opened += 1
        if self.fail_next_watch is not None:
            error, self.fail_next_watch = self.fail_next_watch, None
            raise error
        if int(resource_version) < self.expired_before:
            raise Gone(410, "Expired", "too old")
        queue: asyncio.Queue[WatchEvent | BaseException | None] = asyncio.Queue()
        entry = (run_name, queue)
        self.watchers.append(entry)
        try:
            for rv, run, kind, obj in self.history:
                if run == run_name and rv > int(resource_version):
                    yield WatchEvent(type=kind, object=obj)
            while True:
                item = await queue.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.watchers.remove(entry)

    async def close(self) -> None:
        return None


def log(i: int, text: str | None = None) -> StreamEvent:
    return StreamEvent(id=i, event="log", data={"message": text or f"m{i}", "stream": "stdout"})


def complete(i: int) -> StreamEvent:
    data = {"status": "succeeded", "job_id": "run_a", "reason": None, "error": None}
    return StreamEvent(id=i, event="complete", data=data)


def settings(**overrides: Any) -> StreamSettings:
    base: dict[str, Any] = {
        "heartbeat_seconds": 0.2,
        "client_buffer_events": 100,
        "upstream_idle_seconds": 0.05,
        "status_poll_seconds": 0.05,
        "watch_retry_seconds": 0.01,
    }
    return StreamSettings(**{**base, **overrides})


def ids_in(text: str) -> list[int]:
    return [int(line[4:]) for line in text.split("\n") if line.startswith("id: ")]


class Reader:
    """Consumes a client's frames in a task, like the HTTP response would."""

    def __init__(self, client: StreamClient, *, delay: float = 0.0) -> None:
        self.client = client
        self.text = ""
        self.delay = delay
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for part in self.client.frames():
            self.text += part
            if self.delay:
                await asyncio.sleep(self.delay)

    @property
    def ids(self) -> list[int]:
        return ids_in(self.text)

    @property
    def done(self) -> bool:
        return self.text.endswith("data: [DONE]\n\n")


async def until(predicate: Any, within: float = 5.0) -> None:
    """Poll ``predicate`` (test helper: the hub has no event for every condition tested)."""
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


@pytest.fixture
def source() -> FakeSource:
    fake = FakeSource()
    fake.add_run("run-a")
    return fake


async def test_unknown_run_is_not_found_and_holds_nothing(source: FakeSource) -> None:
    hub = StreamHub(source, settings())
    with pytest.raises(RunNotFound):
        await hub.open("run_nope", 0)
    with pytest.raises(RunNotFound):
        await hub.open("Not/A/Name", 0)
    assert hub.upstream_count == 0


async def test_many_clients_share_one_watch_and_each_gets_every_event_once(
    source: FakeSource,
) -> None:
    hub = StreamHub(source, settings())
    source.put("run-a", "c0", [log(1), log(2)])
    readers = [
        Reader(c)
        for c in await asyncio.gather(*(hub.open("run_a", 0) for _ in range(20)))
        if c is not None
    ]
    assert len(readers) == 20
    await until(lambda: all(r.ids == [1, 2] for r in readers))
    source.put("run-a", "c0", [log(1), log(2), log(3)])
    source.put("run-a", "c1", [log(4), complete(5)])
    await until(lambda: all(r.done for r in readers))
    assert all(r.ids == [1, 2, 3, 4, 5] for r in readers)
    assert source.watches_opened == 1
    assert hub.metrics.watches_opened._value.get() == 1


async def test_a_client_joining_mid_run_gets_each_later_event_exactly_once(
    source: FakeSource,
) -> None:
    hub = StreamHub(source, settings())
    first = Reader(await hub.open("run_a", 0))  # type: ignore[arg-type]
    for i in range(1, 30):
        source.put("run-a", f"c{i // 10}", [log(j) for j in range((i // 10) * 10 or 1, i + 1)])
        if i == 13:
            await asyncio.sleep(0)
            joined_at_3 = Reader(await hub.open("run_a", 3))  # type: ignore[arg-type]
            joined_at_12 = Reader(await hub.open("run_a", 12))  # type: ignore[arg-type]
    source.put("run-a", "c3", [complete(30)])
    await until(lambda: first.done and joined_at_3.done and joined_at_12.done)
    assert first.ids == list(range(1, 31))
    assert joined_at_3.ids == list(range(4, 31))
    assert joined_at_12.ids == list(range(13, 31))


async def test_cursor_at_or_past_complete_is_answered_with_nothing(source: FakeSource) -> None:
    hub = StreamHub(source, settings())
    source.put("run-a", "c0", [log(1), complete(2)])
    assert await hub.open("run_a", 2) is None
    assert await hub.open("run_a", 99) is None
    replay = Reader(await hub.open("run_a", 0))  # type: ignore[arg-type]
    await until(lambda: replay.done)
    assert replay.ids == [1, 2]
    # a finished run needs no watch at all
    assert source.watches_opened == 0


async def test_last_client_leaving_releases_the_upstream(source: FakeSource) -> None:
    hub = StreamHub(source, settings())
    readers = [Reader(await hub.open("run_a", 0)) for _ in range(3)]  # type: ignore[arg-type]
    await until(lambda: len(source.watchers) == 1 and all(r.client.started for r in readers))
    for reader in readers[:2]:
        reader.task.cancel()
    await asyncio.sleep(0.2)
    assert hub.upstream_count == 1
    assert len(source.watchers) == 1
    readers[2].task.cancel()  # the client went away: the response task is cancelled
    await until(lambda: hub.upstream_count == 0 and not source.watchers)
    assert hub.metrics.clients._value.get() == 0


async def test_a_stream_that_never_starts_is_swept_by_the_next_heartbeat(
    source: FakeSource,
) -> None:
    hub = StreamHub(source, settings(heartbeat_seconds=0.1))
    sweeper = asyncio.create_task(hub.sweep_forever())
    try:
        client = await hub.open("run_a", 0)
        assert client is not None  # ... but its response never iterates it
        await until(lambda: hub.upstream_count == 0 and not source.watchers, within=3)
    finally:
        sweeper.cancel()


async def test_slow_client_is_disconnected_after_its_buffer_and_resumes_exactly(
    source: FakeSource,
) -> None:
    hub = StreamHub(source, settings(client_buffer_events=5))
    slow = Reader(await hub.open("run_a", 0), delay=10)  # type: ignore[arg-type]
    fast = Reader(await hub.open("run_a", 0))  # type: ignore[arg-type]
    source.put("run-a", "c0", [log(1)])
    await until(lambda: slow.ids == [1])  # now stuck in its sleep: sends nothing more
    events = [log(1)]
    for i in range(2, 21):
        events.append(log(i))
        source.put("run-a", "c0", events)
        await asyncio.sleep(0)
    await until(lambda: fast.ids == list(range(1, 21)))  # the fast one is not held back
    assert slow.client.end_reason == "overflow"
    slow.delay = 0  # ... its next write goes out, then it ends with what it held
    slow.task.cancel()
    resumed = Reader(await hub.open("run_a", slow.client.cursor))  # type: ignore[arg-type]
    source.put("run-a", "c1", [complete(21)])
    await until(lambda: resumed.done and fast.done)
    assert slow.ids + resumed.ids == list(range(1, 22))
    assert fast.ids == list(range(1, 22))


async def test_overflowed_client_sends_what_it_holds_then_ends(source: FakeSource) -> None:
    hub = StreamHub(source, settings(client_buffer_events=3))
    client = await hub.open("run_a", 0)
    assert client is not None
    for i in range(1, 8):  # nobody reads: the buffer fills at 3
        source.put("run-a", "c0", [log(j) for j in range(1, i + 1)])
        await asyncio.sleep(0.01)
    assert client.end_reason == "overflow"
    reader = Reader(client)
    await reader.task
    assert reader.ids == [1, 2, 3]
    assert not reader.done
    assert client.cursor == 3


async def test_watch_expiry_relists_without_duplicates_or_loss(source: FakeSource) -> None:
    hub = StreamHub(source, settings())
    reader = Reader(await hub.open("run_a", 0))  # type: ignore[arg-type]
    source.put("run-a", "c0", [log(1), log(2)])
    await until(lambda: reader.ids == [1, 2])
    lists_before = source.lists
    # events happen while the watch is down, and its resourceVersion expires
    source.end_watches()
    source.expired_before = source.rv + 100
    source.put("run-a", "c0", [log(1), log(2), log(3)])
    source.put("run-a", "c1", [log(4)])
    await until(lambda: source.lists > lists_before)
    source.expired_before = 0
    source.put("run-a", "c1", [log(4), complete(5)])
    await until(lambda: reader.done)
    assert reader.ids == [1, 2, 3, 4, 5]


async def test_watch_errors_are_retried(source: FakeSource) -> None:
    hub = StreamHub(source, settings())
    source.fail_next_watch = Unavailable(503, "ServiceUnavailable", "etcd leader change")
    reader = Reader(await hub.open("run_a", 0))  # type: ignore[arg-type]
    await until(lambda: source.watchers)
    source.end_watches(Unavailable(0, "Unreachable", "connection reset"))
    source.put("run-a", "c0", [log(1), complete(2)])
    await until(lambda: reader.done)
    assert reader.ids == [1, 2]
    assert source.watches_opened >= 3


async def test_deleted_run_ends_its_streams(source: FakeSource) -> None:
    hub = StreamHub(source, settings())
    reader = Reader(await hub.open("run_a", 0))  # type: ignore[arg-type]
    source.put("run-a", "c0", [log(1)])
    await until(lambda: reader.ids == [1])
    del source.runs["run-a"]
    await asyncio.wait_for(reader.task, 5)
    assert not reader.done  # ended without [DONE]: a reconnect is answered 404
    with pytest.raises(RunNotFound):
        await hub.open("run_a", 1)


async def test_heartbeat_when_idle(source: FakeSource) -> None:
    hub = StreamHub(source, settings(heartbeat_seconds=0.05))
    reader = Reader(await hub.open("run_a", 0))  # type: ignore[arg-type]
    await until(lambda: reader.text.count(": heartbeat\n\n") >= 3)
    source.put("run-a", "c0", [log(1), complete(2)])
    await until(lambda: reader.done)
    assert reader.text.startswith(": heartbeat\n\n")
    assert reader.ids == [1, 2]


async def test_shutdown_ends_open_streams_and_refuses_new_ones(source: FakeSource) -> None:
    hub = StreamHub(source, settings(heartbeat_seconds=30))
    source.put("run-a", "c0", [log(1)])
    reader = Reader(await hub.open("run_a", 0))  # type: ignore[arg-type]
    await until(lambda: reader.ids == [1])
    closing = asyncio.create_task(hub.close(drain_seconds=5))
    await asyncio.wait_for(reader.task, 2)  # ended well before its 30 s heartbeat
    assert reader.ids == [1]
    assert not reader.done
    assert reader.client.cursor == 1
    with pytest.raises(ShuttingDown):
        await hub.open("run_a", 1)
    await asyncio.wait_for(closing, 5)
    assert hub.upstream_count == 0
    assert not source.watchers


async def test_payloads_stay_one_line_of_json(source: FakeSource) -> None:
    hub = StreamHub(source, settings())
    text = 'multi\nline\r\nwith \u2028 and \x85 and \U0001f680 \u00e9 "quotes" \\ and \x00'
    source.put("run-a", "c0", [log(1, text), complete(2)])
    reader = Reader(await hub.open("run_a", 0))  # type: ignore[arg-type]
    await until(lambda: reader.done)
    data_lines = [ln for ln in reader.text.splitlines() if ln.startswith("data: {")]
    assert len(data_lines) == 2
    assert json.loads(data_lines[0][6:])["data"]["message"] == text


async def test_the_informer_spares_the_periodic_run_reads(source: FakeSource) -> None:
    informer: dict[str, CachedRun] = {"run-a": CachedRun(uid="uid-1", terminal=False)}
    slow_release = settings(
        status_poll_seconds=0.02, heartbeat_seconds=30, upstream_idle_seconds=30
    )
    hub = StreamHub(source, slow_release, lookup=informer.get)
    reader = Reader(await hub.open("run_a", 0))  # type: ignore[arg-type]
    gets_after_open = source.gets
    await asyncio.sleep(0.3)  # ~15 checks
    assert source.gets == gets_after_open
    # the informer says finished, but the watch lost the `complete` write: a re-list finds it
    source.deaf = True  # the watch stops delivering events
    source.put("run-a", "c0", [log(1), complete(2)])
    lists_before = source.lists
    informer["run-a"] = CachedRun(uid="uid-1", terminal=True)
    await until(lambda: reader.done)
    assert source.lists > lists_before
    assert reader.ids == [1, 2]
    # the watch is closed once complete is stored, though the upstream lingers for reconnects
    await until(lambda: not source.watchers)
    assert hub.upstream_count == 1


async def test_a_run_the_informer_lost_is_confirmed_with_kubernetes(source: FakeSource) -> None:
    informer: dict[str, CachedRun] = {}
    hub = StreamHub(source, settings(status_poll_seconds=0.02), lookup=informer.get)
    reader = Reader(await hub.open("run_a", 0))  # type: ignore[arg-type]
    await asyncio.sleep(0.2)
    assert not reader.task.done()  # informer lag alone does not end the stream
    del source.runs["run-a"]
    await asyncio.wait_for(reader.task, 5)
    assert not reader.done


async def test_an_upstream_that_dies_of_a_bug_ends_its_streams_and_is_replaced(
    source: FakeSource,
) -> None:
    hub = StreamHub(source, settings())
    source.put("run-a", "c0", [log(1)])
    reader = Reader(await hub.open("run_a", 0))  # type: ignore[arg-type]
    await until(lambda: reader.ids == [1] and source.watchers)
    source.end_watches(RuntimeError("a bug, not a Kubernetes error"))
    await asyncio.wait_for(reader.task, 5)
    assert reader.ids == [1]
    assert reader.client.end_reason == "upstream_failed"
    fresh = Reader(await hub.open("run_a", 1))  # type: ignore[arg-type]
    source.put("run-a", "c0", [log(1), complete(2)])
    await until(lambda: fresh.done)
    assert fresh.ids == [2]


async def test_a_lingering_upstream_is_not_served_once_the_run_is_gone(source: FakeSource) -> None:
    informer: dict[str, CachedRun] = {"run-a": CachedRun(uid="uid-1", terminal=True)}
    lingering = settings(upstream_idle_seconds=30, heartbeat_seconds=30)
    hub = StreamHub(source, lingering, lookup=informer.get)
    source.put("run-a", "c0", [log(1), complete(2)])
    replay = Reader(await hub.open("run_a", 0))  # type: ignore[arg-type]
    await until(lambda: replay.done)
    gets = source.gets
    again = Reader(await hub.open("run_a", 0))  # type: ignore[arg-type]
    await until(lambda: again.done)
    assert source.gets == gets  # the informer vouched: no request per client
    assert hub.upstream_count == 1  # lingering
    del informer["run-a"]
    del source.runs["run-a"]
    with pytest.raises(RunNotFound):
        await hub.open("run_a", 0)
    assert hub.upstream_count == 0

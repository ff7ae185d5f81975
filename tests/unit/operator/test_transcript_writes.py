"""etcd write amplification: transcript writes by time and size within a per-run byte budget,
nothing rewritten for the dropped middle past the cap, and a restart resumes after the gap."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from agentrun_contract import runner
from agentrun_contract.resource import AgentRunTranscriptSpec
from agentrun_contract.stream import StreamEvent, decode_transcript
from agentrun_operator.transcript import FlushBudget, LogFolder, TranscriptWriter

RUN_ID = "run_abc"
NONCE = "n0nce"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


class MemoryStore:
    def __init__(self) -> None:
        self.chunks: dict[tuple[bool, int], AgentRunTranscriptSpec] = {}

    async def list_chunks(self) -> list[AgentRunTranscriptSpec]:
        return list(self.chunks.values())

    async def put_chunk(self, chunk: AgentRunTranscriptSpec, *, create: bool) -> None:
        key = (chunk.gap, 0 if chunk.gap else chunk.index)
        assert (key in self.chunks) != create, f"create={create} but exists={key in self.chunks}"
        self.chunks[key] = chunk.model_copy()

    async def delete_chunk(self, index: int) -> None:
        del self.chunks[(False, index)]

    def events(self) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        for chunk in self.chunks.values():
            out.extend(decode_transcript(chunk.events))
        return sorted(out, key=lambda e: e.id)


def ev_line(i: int, kind: str, seq: int, data: dict[str, object]) -> str:
    """A pod-log line (kubelet timestamp, then a runner event of this run)."""
    stamp = (T0 + timedelta(milliseconds=100 * i)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    event = runner.make_event(kind, run_id=RUN_ID, nonce=NONCE, seq=seq, data=data)
    return f"{stamp} {runner.encode_event(event)}"


KIB = 1024


class CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.bytes_put = 0
        self.deletes = 0

    async def put_chunk(self, chunk: AgentRunTranscriptSpec, *, create: bool) -> None:
        self.bytes_put += len(chunk.events.encode())
        await super().put_chunk(chunk, create=create)

    async def delete_chunk(self, index: int) -> None:
        self.deletes += 1
        await super().delete_chunk(index)


def budget(**overrides: float) -> FlushBudget:
    settings: dict[str, float] = {
        "interval_seconds": 0.5,
        "size_bytes": 8 * KIB,
        "bytes_per_second": 8 * KIB,
        "burst_bytes": 64 * KIB,
    }
    settings.update(overrides)
    return FlushBudget(
        interval_seconds=settings["interval_seconds"],
        size_bytes=int(settings["size_bytes"]),
        bytes_per_second=settings["bytes_per_second"],
        burst_bytes=int(settings["burst_bytes"]),
    )


def test_a_write_is_due_by_age_or_size() -> None:
    b = budget()
    b.spent(100, now=10.0)
    assert not b.due(unwritten_bytes=100, cost_bytes=200, now=10.2)  # young and small
    assert b.due(unwritten_bytes=100, cost_bytes=200, now=10.6)  # old enough
    assert b.due(unwritten_bytes=9 * KIB, cost_bytes=10 * KIB, now=10.1)  # big enough
    assert not b.due(unwritten_bytes=0, cost_bytes=0, now=20.0)  # nothing to write


def test_the_budget_bounds_the_bytes_written_whatever_the_output() -> None:
    """A run logging 2 KiB/s into a 32 KiB open chunk, offered a write every 0.1 s for 60 s:
    every write replaces the whole open chunk. Without a budget that is ~30 KiB per write
    (~300 KiB/s); with it, the long-run rate is the budget's."""
    b = budget()
    chunk, written, now = 0, 0, 0.0
    unwritten = 0
    while now < 60.0:
        now += 0.1
        chunk += 205  # 2 KiB/s of lines
        unwritten += 205
        if chunk > 32 * KIB:
            chunk = 205  # sealed: a new open chunk
        if b.due(unwritten_bytes=unwritten, cost_bytes=chunk, now=now):
            b.spent(chunk, now)
            written += chunk
            unwritten = 0
    assert written <= 8 * KIB * 60 + 64 * KIB
    assert written >= 2 * KIB * 60  # every byte still goes out


async def test_past_the_cap_the_dropped_middle_is_never_written() -> None:
    store = CountingStore()
    writer = TranscriptWriter("r", store, chunk_bytes=4 * KIB, cap_bytes=16 * KIB)
    folder = LogFolder(writer, run_id=RUN_ID, nonce=NONCE)
    line = "x" * 200
    for i in range(1000):  # ~300 KiB of output, about 19 times the cap
        folder.feed(ev_line(i, "log", i, {"message": line, "stream": "stdout"}))
        if not writer.capped:
            await writer.flush()  # written as it comes, until the cap drops something
            put_until_capped = store.bytes_put
        else:
            writer.fold()  # past the cap: folded in memory only
    assert writer.capped
    deletes_until_capped = store.deletes
    await writer.flush()  # the end (forced)

    # What is stored: the head, the tail and the gap; a bounded number of writes for it.
    stored = sum(len(c.events.encode()) for c in store.chunks.values())
    assert stored <= 16 * KIB + 4 * KIB + 512
    # After the cap: one write of the tail and the gap, one delete at most; nothing for the
    # ~280 KiB dropped in between (before this change they were written, then deleted).
    assert store.bytes_put - put_until_capped <= 16 * KIB + 4 * KIB + 512
    assert store.deletes - deletes_until_capped <= 1
    events = store.events()
    assert [e.id for e in events] == sorted({e.id for e in events})  # strictly increasing
    assert events[-1].id == 1000
    assert any("dropped" in str(e.data.get("message")) for e in events)


async def test_a_restart_resumes_after_the_dropped_middle() -> None:
    store = MemoryStore()
    writer = TranscriptWriter("r", store, chunk_bytes=4 * KIB, cap_bytes=16 * KIB)
    folder = LogFolder(writer, run_id=RUN_ID, nonce=NONCE)
    for i in range(300):
        folder.feed(ev_line(i, "log", i, {"message": "y" * 200, "stream": "stdout"}))
        writer.fold()
    await writer.flush()
    gap = next(c for c in store.chunks.values() if c.gap)
    # A crash after the head and the gap were stored, before any tail chunk was: the stored
    # chunks alone must say that the dropped lines were folded in already.
    head_last = max(c.index for c in store.chunks.values() if not c.gap and c.index <= gap.index)
    for key in [k for k, c in store.chunks.items() if not c.gap and c.index > head_last]:
        del store.chunks[key]
    reloaded = TranscriptWriter("r", store, chunk_bytes=4 * KIB, cap_bytes=16 * KIB)
    await reloaded.load()
    assert gap.runner_seq > max(c.runner_seq for c in store.chunks.values() if not c.gap)
    assert reloaded.runner_seq == gap.runner_seq
    assert reloaded.log_timestamp == gap.log_timestamp
    assert reloaded.last_id == gap.last_event_id


@pytest.mark.parametrize("pending", [False, True])
async def test_has_pending_until_everything_is_written(pending: bool) -> None:
    writer = TranscriptWriter("r", MemoryStore(), chunk_bytes=4 * KIB, cap_bytes=16 * KIB)
    writer.add("log", {"message": "a", "stream": "stdout"})
    if not pending:
        writer.fold()  # folded, not written: still pending
    assert writer.has_pending
    await writer.flush()
    assert not writer.has_pending


class StatusRecorder:
    """The two Kube calls a transcript flush may make."""

    def __init__(self) -> None:
        self.patches: list[dict[str, object]] = []

    def size_log_pool(self, connections: int) -> None:
        pass

    async def patch_run_status(
        self, namespace: str, name: str, status: dict[str, object], **_: object
    ) -> dict[str, object]:
        self.patches.append(status)
        return {"metadata": {"name": name, "namespace": namespace, "resourceVersion": "1"}}


async def test_status_is_patched_only_when_a_reader_visible_field_changes() -> None:
    from agentrun_operator.reconciler import RunContext, RunReconciler
    from agentrun_operator.settings import OperatorSettings

    kube = StatusRecorder()
    settings = OperatorSettings(transcript_flush_seconds=0.01)
    ctx = RunContext(settings, kube)  # type: ignore[arg-type]
    reconciler = RunReconciler(ctx, ("default", "r"))
    store = MemoryStore()
    reconciler.writer = TranscriptWriter("r", store)
    reconciler.folder = LogFolder(reconciler.writer, run_id=RUN_ID, nonce=NONCE)
    for i in range(20):
        reconciler.folder.feed(ev_line(i, "log", i, {"message": "m", "stream": "stdout"}))
        reconciler.last_flush = 0.0  # due by time
        await reconciler.flush_transcript()
    assert store.events()  # the lines were written
    assert kube.patches == []  # the transcript's position alone is nobody's business

    reconciler.folder.feed(ev_line(20, "progress", 20, {"percentage": 50, "current_step": "s"}))
    reconciler.last_flush = 0.0
    await reconciler.flush_transcript()
    assert kube.patches == [{"progress": {"percentage": 50, "currentStep": "s"}}]

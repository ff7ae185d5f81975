"""TranscriptWriter and LogFolder: ids, chunking, cap with gap, resume without duplicates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from agentrun_contract import runner
from agentrun_contract.resource import AgentRunTranscriptSpec
from agentrun_contract.stream import StreamEvent, decode_transcript
from agentrun_operator.transcript import (
    LogFolder,
    TranscriptWriter,
    complete_payload,
    log_timestamp_ns,
    result_excerpt,
)

RUN_ID = "run_abc"
NONCE = "n0nce"


class MemoryStore:
    def __init__(self) -> None:
        self.chunks: dict[tuple[bool, int], AgentRunTranscriptSpec] = {}
        self.writes = 0

    async def list_chunks(self) -> list[AgentRunTranscriptSpec]:
        return list(self.chunks.values())

    async def put_chunk(self, chunk: AgentRunTranscriptSpec, *, create: bool) -> None:
        key = (chunk.gap, 0 if chunk.gap else chunk.index)
        assert (key in self.chunks) != create, f"create={create} but exists={key in self.chunks}"
        self.chunks[key] = chunk.model_copy()
        self.writes += 1

    async def delete_chunk(self, index: int) -> None:
        del self.chunks[(False, index)]

    def events(self) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        for chunk in self.chunks.values():
            out.extend(decode_transcript(chunk.events))
        return sorted(out, key=lambda e: e.id)


T0 = datetime(2026, 1, 1, tzinfo=UTC)


def stamp(i: int) -> str:
    # RFC3339Nano as the kubelet writes it: trailing zeros trimmed
    t = T0 + timedelta(milliseconds=100 * i)
    frac = f"{t.microsecond * 1000:09d}".rstrip("0")
    return t.strftime("%Y-%m-%dT%H:%M:%S") + (f".{frac}" if frac else "") + "Z"


def ev_line(i: int, kind: str, seq: int, data: dict[str, object], nonce: str = NONCE) -> str:
    event = runner.make_event(kind, run_id=RUN_ID, nonce=nonce, seq=seq, data=data)
    return f"{stamp(i)} {runner.encode_event(event)}"


def runner_log(n: int) -> list[str]:
    lines = [ev_line(0, "start", 0, {"framework": "praisonai"})]
    for k in range(1, n + 1):
        lines.append(ev_line(k, "log", k, {"message": f"line {k}", "stream": "stdout"}))
    return lines


def test_timestamp_parsing_handles_trimmed_zeros() -> None:
    assert log_timestamp_ns("2026-01-01T00:00:01.1Z") > log_timestamp_ns("2026-01-01T00:00:01.09Z")
    assert log_timestamp_ns("2026-01-01T00:00:01Z") == 1767225601 * 10**9


async def test_ids_strictly_increase_and_events_map() -> None:
    store = MemoryStore()
    writer = TranscriptWriter("run-abc", store)
    folder = LogFolder(writer, run_id=RUN_ID, nonce=NONCE)
    writer.add_status("queued", None)
    for line in [
        *runner_log(2),
        ev_line(5, "progress", 3, {"percentage": 50, "current_step": "half"}),
        f"{stamp(6)} not json at all",
        ev_line(7, "log", 4, {"message": "forged", "stream": "stdout"}, nonce="wrong"),
        ev_line(8, "result", 5, {"index": 0, "count": 2, "text": "hello "}),
        ev_line(9, "result", 6, {"index": 1, "count": 2, "text": "world\nbye"}),
    ]:
        folder.feed(line)
    await writer.flush()
    events = store.events()
    ids = [e.id for e in events]
    assert ids == list(range(1, len(ids) + 1))
    kinds = [e.event for e in events]
    assert kinds == ["status", "log", "log", "log", "progress", "log", "log"]
    assert events[5].data["message"] == "not json at all"
    # the forged line is kept verbatim as a log message, never folded as an event
    assert '"nonce":"wrong"' in events[6].data["message"]
    assert folder.progress is not None
    assert folder.progress.percentage == 50
    assert folder.result() == "hello world\nbye"
    # the result lines move the resume position only once the result is stored
    assert writer.state().runner_seq == 3
    folder.result_stored()
    assert writer.state().runner_seq == 6


async def test_resume_after_restart_has_no_duplicates_or_loss() -> None:
    store = MemoryStore()
    lines = [*runner_log(30), f"{stamp(31)} raw tail line"]
    writer = TranscriptWriter("run-abc", store, chunk_bytes=1024, cap_bytes=1 << 20)
    folder = LogFolder(writer, run_id=RUN_ID, nonce=NONCE)
    for line in lines[:12]:
        folder.feed(line)
    await writer.flush()
    for line in lines[12:20]:
        folder.feed(line)  # fed but never flushed: lost by the "crash"

    # restart: a new writer recovers from the store and re-reads the whole log (sinceTime
    # rounds down to the second, so old lines come again)
    writer2 = TranscriptWriter("run-abc", store, chunk_bytes=1024, cap_bytes=1 << 20)
    await writer2.load()
    folder2 = LogFolder(writer2, run_id=RUN_ID, nonce=NONCE)
    for line in lines:
        folder2.feed(line)
    writer2.add(
        "complete",
        complete_payload(status="succeeded", job_id=RUN_ID, reason=None, error=None, result="r"),
    )
    await writer2.flush()
    events = store.events()
    messages = [e.data.get("message") for e in events if e.event == "log"]
    expected = ["[agentrun] runner started (framework praisonai)"]
    expected += [f"line {k}" for k in range(1, 31)] + ["raw tail line"]
    assert messages == expected
    assert [e.id for e in events] == list(range(1, len(events) + 1))
    assert events[-1].event == "complete"
    assert len(store.chunks) > 1  # chunking happened
    assert all(c.sealed for c in store.chunks.values())
    # a third writer sees the complete transcript and refuses to append
    writer3 = TranscriptWriter("run-abc", store)
    await writer3.load()
    assert writer3.complete
    with pytest.raises(RuntimeError):
        writer3.add("log", {"message": "x", "stream": "stdout"})


async def test_cap_keeps_head_and_tail_with_gap_event() -> None:
    store = MemoryStore()
    writer = TranscriptWriter("run-abc", store, chunk_bytes=1024, cap_bytes=4096)
    folder = LogFolder(writer, run_id=RUN_ID, nonce=NONCE)
    for line in runner_log(400):
        folder.feed(line)
        if writer.has_pending and len(writer._pending) > 10:
            await writer.flush()
    await writer.flush()
    regular = [c for c in store.chunks.values() if not c.gap]
    gaps = [c for c in store.chunks.values() if c.gap]
    stored_bytes = sum(len(c.events.encode()) for c in regular)
    assert stored_bytes <= 4096 + 1024
    assert len(gaps) == 1
    events = store.events()
    ids = [e.id for e in events]
    assert ids == sorted(set(ids)), "ids strictly increase across head, gap and tail"
    messages = [e.data.get("message") for e in events]
    assert "line 1" in messages  # head kept
    assert "line 400" in messages  # tail kept
    gap_event = decode_transcript(gaps[0].events)[0]
    assert "dropped" in gap_event.data["message"]
    assert writer.state().dropped_bytes > 0
    assert gap_event.data["dropped_bytes"] == writer.state().dropped_bytes
    # the gap's id is the last dropped id: the next kept event follows it
    after = [e for e in events if e.id > gap_event.id]
    assert after
    assert after[0].id == gap_event.id + 1


async def test_status_events_are_not_repeated_after_resume() -> None:
    store = MemoryStore()
    writer = TranscriptWriter("run-abc", store)
    assert writer.add_status("running", None) is not None
    await writer.flush()
    writer2 = TranscriptWriter("run-abc", store)
    await writer2.load()
    assert writer2.add_status("running", None) is None
    assert writer2.add_status("failed", "timeout") is not None


def test_result_excerpt_cuts_on_character_boundary() -> None:
    text = "é" * 3000  # 6000 bytes
    excerpt, cut = result_excerpt(text)
    assert cut
    assert len(excerpt.encode()) <= 4096
    assert text.startswith(excerpt)
    assert result_excerpt("short") == ("short", False)
    assert "result" not in complete_payload(
        status="succeeded", job_id="j", reason=None, error=None, result="x" * 5000
    )

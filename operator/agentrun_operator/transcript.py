"""The run's transcript: the one ordered, capped record of everything a client may stream.

Two pure-logic pieces and a storage protocol:

- :class:`TranscriptWriter` assigns strictly increasing ids, batches events into
  AgentRunTranscript chunks (append to the newest chunk until ``chunk_bytes``, then seal it and
  start the next), enforces the per-run cap (the head and the tail are kept; the dropped middle is
  reported by one ``log`` event in the gap chunk, whose id is that of the last dropped event), and
  recovers its position from the stored chunks after a restart or a leader change.
- :class:`LogFolder` turns pod-log lines (``<RFC3339Nano> <text>``, as ``timestamps=true`` gives
  them) into transcript events: a line is a runner event only if it parses, carries this run's id
  and nonce, and its ``seq`` is new; anything else is kept as a ``log`` message. Lines already
  folded in (same or older kubelet timestamp; ``sinceTime`` has one-second resolution, so a
  resumed tail repeats lines) are skipped.

Every chunk stores the runner ``seq`` and the pod-log timestamp reached at its last event (the gap
chunk: those of the last dropped event), so the stored chunks alone say where to resume: nothing
is written twice, nothing is lost.

What it costs etcd: a write replaces the open chunk whole, so writes are batched
(:class:`FlushBudget`: by age and size, within a per-run byte budget), and :meth:`fold` applies
the cap in memory, so past the cap the dropped middle is never written at all: the caller writes
a capped transcript only when it must (a status change, the end), and then only its tail.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any, Protocol

from agentrun_contract import limits, runner
from agentrun_contract.resource import AgentRunTranscriptSpec, Progress, TranscriptState
from agentrun_contract.stream import StreamEvent, decode_transcript


class ChunkStore(Protocol):
    """Where chunks live (Kubernetes in production, a dict in unit tests)."""

    async def list_chunks(self) -> list[AgentRunTranscriptSpec]:
        """Every stored chunk of the run, the gap chunk included."""
        ...

    async def put_chunk(self, chunk: AgentRunTranscriptSpec, *, create: bool) -> None:
        """Create (``create``) or replace a chunk; the gap chunk has ``gap=True``."""
        ...

    async def delete_chunk(self, index: int) -> None:
        """Delete a (sealed, tail) chunk dropped by the cap."""
        ...


def log_timestamp_ns(stamp: str) -> int:
    """Nanoseconds since the epoch of an RFC 3339 timestamp with up to 9 fractional digits.

    RFC3339Nano trims trailing zeros, so the strings do not compare lexically.
    """
    text = stamp.strip()
    if text.endswith("Z"):
        text = text[:-1]
        offset = "+00:00"
    else:
        offset = text[-6:]
        text = text[:-6]
    frac = 0
    if "." in text:
        text, digits = text.split(".", 1)
        frac = int((digits + "000000000")[:9])
    base = datetime.fromisoformat(text + offset)
    return int(base.timestamp()) * 1_000_000_000 + frac


def split_log_line(line: str) -> tuple[str | None, str]:
    """``"<timestamp> <text>"`` -> (timestamp, text); a line without one -> (None, line)."""
    stamp, sep, rest = line.partition(" ")
    if sep and len(stamp) >= 20 and stamp[4:5] == "-" and "T" in stamp:
        try:
            log_timestamp_ns(stamp)
        except ValueError:
            return None, line
        return stamp, rest
    return None, line


@dataclasses.dataclass
class _Chunk:
    index: int
    lines: list[str] = dataclasses.field(default_factory=list)
    first_id: int = 0
    last_id: int = 0
    bytes: int = 0
    sealed: bool = False
    head: bool = False
    runner_seq: int = -1
    log_timestamp: str | None = None
    stored: bool = False
    dirty: bool = False


class TranscriptWriter:
    """Assigns ids and writes a run's transcript chunks; see the module docstring."""

    def __init__(
        self,
        run_name: str,
        store: ChunkStore,
        *,
        chunk_bytes: int = 32 * limits.KIB,
        cap_bytes: int = limits.TRANSCRIPT_CAP_DEFAULT_BYTES,
    ) -> None:
        self.run_name = run_name
        self.store = store
        self.cap_bytes = cap_bytes
        # A chunk at most a quarter of the cap, so head and tail each span whole chunks.
        self.chunk_bytes = max(256, min(chunk_bytes, cap_bytes // 4))
        self.head_limit = cap_bytes // 2
        self.last_id = 0
        self.runner_seq = -1
        self.log_timestamp: str | None = None
        self.dropped_bytes = 0
        self.dropped_events = 0
        self.gap_last_id: int | None = None
        self.gap_stored = False
        self.gap_dirty = False
        self.gap_runner_seq = -1
        self.gap_log_timestamp: str | None = None
        self.last_status: tuple[str, str | None] | None = None
        self.complete_event: StreamEvent | None = None
        self.bytes_written = 0
        self.bytes_sent = 0
        """Bytes of chunk content sent to the store (every rewrite of an open chunk counted)."""
        self._chunks: list[_Chunk] = []
        self._pending: list[tuple[StreamEvent, int, str | None, str]] = []
        """(event, runner seq, log timestamp, its line) of events not folded into a chunk."""
        self._pending_bytes = 0
        self._unwritten_bytes = 0
        self._deletions: list[int] = []

    # -- recovery
    async def load(self) -> None:
        """Resume from the stored chunks (no-op for a new run)."""
        stored = await self.store.list_chunks()
        regular = sorted((c for c in stored if not c.gap), key=lambda c: c.index)
        gaps = [c for c in stored if c.gap]
        head_bytes = 0
        previous_index = -1
        for spec in regular:
            events = decode_transcript(spec.events)
            chunk = _Chunk(
                index=spec.index,
                lines=[e.to_json_line() + "\n" for e in events],
                first_id=spec.first_event_id,
                last_id=spec.last_event_id,
                sealed=spec.sealed,
                runner_seq=spec.runner_seq,
                log_timestamp=spec.log_timestamp,
                stored=True,
            )
            chunk.bytes = sum(len(line.encode()) for line in chunk.lines)
            # The head is the contiguous prefix from chunk 0 up to half the cap.
            if spec.index == previous_index + 1 and head_bytes < self.head_limit:
                chunk.head = True
                head_bytes += chunk.bytes
            previous_index = spec.index
            self._chunks.append(chunk)
            for event in events:
                self.last_id = max(self.last_id, event.id)
                if event.event == "status":
                    self.last_status = (str(event.data.get("status")), event.data.get("reason"))
                if event.event == "complete":
                    self.complete_event = event
            self.runner_seq = max(self.runner_seq, spec.runner_seq)
            if spec.log_timestamp and (
                self.log_timestamp is None
                or log_timestamp_ns(spec.log_timestamp) > log_timestamp_ns(self.log_timestamp)
            ):
                self.log_timestamp = spec.log_timestamp
        for gap in gaps:
            self.gap_stored = True
            self.gap_last_id = gap.last_event_id
            self.last_id = max(self.last_id, gap.last_event_id)
            self.dropped_bytes = _gap_dropped_bytes(gap)
            # The dropped events were folded in: resume after them too.
            self.gap_runner_seq, self.gap_log_timestamp = gap.runner_seq, gap.log_timestamp
            self.runner_seq = max(self.runner_seq, gap.runner_seq)
            if gap.log_timestamp and (
                self.log_timestamp is None
                or log_timestamp_ns(gap.log_timestamp) > log_timestamp_ns(self.log_timestamp)
            ):
                self.log_timestamp = gap.log_timestamp

    # -- appending
    @property
    def complete(self) -> bool:
        return self.complete_event is not None

    def add(
        self,
        event: str,
        data: dict[str, Any],
        *,
        runner_seq: int | None = None,
        log_timestamp: str | None = None,
    ) -> StreamEvent:
        """Append one event (buffered until :meth:`flush`) and return it with its id."""
        if self.complete_event is not None:
            raise RuntimeError("the transcript is complete; nothing may follow `complete`")
        self.last_id += 1
        stream_event = StreamEvent(id=self.last_id, event=event, data=data)
        if runner_seq is not None:
            self.runner_seq = max(self.runner_seq, runner_seq)
        if log_timestamp is not None:
            self.log_timestamp = log_timestamp
        if event == "status":
            self.last_status = (str(data.get("status")), data.get("reason"))
        if event == "complete":
            self.complete_event = stream_event
        line = stream_event.to_json_line() + "\n"
        self._pending.append((stream_event, self.runner_seq, self.log_timestamp, line))
        self._pending_bytes += len(line.encode())
        return stream_event

    def add_status(self, status: str, reason: str | None) -> StreamEvent | None:
        """A ``status`` event, unless the last one stored already says the same."""
        if self.last_status == (status, reason):
            return None
        return self.add("status", {"status": status, "reason": reason})

    def note_position(self, *, runner_seq: int | None, log_timestamp: str | None) -> None:
        """Advance the resume position for lines consumed without an event (e.g. result
        chunks); stored with the next event."""
        if runner_seq is not None:
            self.runner_seq = max(self.runner_seq, runner_seq)
        if log_timestamp is not None:
            self.log_timestamp = log_timestamp

    @property
    def has_pending(self) -> bool:
        """Is anything not yet written: events, a changed chunk, a dropped chunk, the gap?"""
        return bool(
            self._pending or self._deletions or self.gap_dirty or any(c.dirty for c in self._chunks)
        )

    @property
    def capped(self) -> bool:
        """Has the cap dropped anything? From then on only the tail changes: it is written on
        forced flushes only (see :meth:`flush`)."""
        return self.gap_last_id is not None

    @property
    def unwritten_bytes(self) -> int:
        """Bytes of events added since the last write."""
        return self._unwritten_bytes + self._pending_bytes

    def write_cost(self) -> int:
        """Bytes the next write sends once :meth:`fold` ran: every changed chunk whole (a chunk
        is replaced, not appended to), and the gap chunk if it changed."""
        cost = sum(c.bytes for c in self._chunks if c.dirty)
        if self.gap_dirty and self.gap_last_id is not None:
            cost += len(self._gap_spec().events)
        return cost

    # -- writing
    def _open_chunk(self) -> _Chunk:
        if self._chunks and not self._chunks[-1].sealed:
            return self._chunks[-1]
        index = self._chunks[-1].index + 1 if self._chunks else 0
        head_bytes = sum(c.bytes for c in self._chunks if c.head)
        all_head = all(c.head for c in self._chunks)
        chunk = _Chunk(index=index, head=all_head and head_bytes < self.head_limit)
        self._chunks.append(chunk)
        return chunk

    def fold(self) -> int:
        """Move buffered events into chunks in memory and apply the cap there (nothing is
        written); returns the bytes appended. Memory stays bounded by the cap however long
        writes are deferred."""
        appended = 0
        for event, seq, stamp, line in self._pending:
            chunk = self._open_chunk()
            size = len(line.encode())
            if not chunk.lines:
                chunk.first_id = event.id
            chunk.lines.append(line)
            chunk.last_id = event.id
            chunk.bytes += size
            chunk.runner_seq = seq
            chunk.log_timestamp = stamp
            chunk.dirty = True
            appended += size
            if chunk.bytes >= self.chunk_bytes:
                chunk.sealed = True
        self._pending.clear()
        self._pending_bytes = 0
        if self.complete_event is not None and self._chunks and not self._chunks[-1].sealed:
            self._chunks[-1].sealed = True
            self._chunks[-1].dirty = True
        self._drop_over_cap()
        self._unwritten_bytes += appended
        self.bytes_written += appended
        return appended

    async def flush(self) -> int:
        """Write buffered events; returns the bytes appended (0 if nothing was pending)."""
        appended = self.fold()
        for chunk in self._chunks:
            if chunk.dirty:
                spec = self._spec(chunk)
                await self.store.put_chunk(spec, create=not chunk.stored)
                self.bytes_sent += chunk.bytes
                chunk.stored = True
                chunk.dirty = False
        while self._deletions:
            await self.store.delete_chunk(self._deletions[0])
            self._deletions.pop(0)
        if self.gap_dirty and self.gap_last_id is not None:
            await self.store.put_chunk(self._gap_spec(), create=not self.gap_stored)
            self.gap_stored = True
            self.gap_dirty = False
        self._unwritten_bytes = 0
        return appended

    def _drop_over_cap(self) -> None:
        """Drop the oldest sealed non-head chunks while over the cap: a stored one is deleted
        on the next write, one never written is simply forgotten (no write for it ever)."""
        while self._stored_bytes() > self.cap_bytes:
            victims = [c for c in self._chunks if c.sealed and not c.head]
            if not victims or victims[0] is self._chunks[-1]:
                break
            victim = victims[0]
            if victim.stored:
                self._deletions.append(victim.index)
            self._chunks.remove(victim)
            self.dropped_bytes += victim.bytes
            self.dropped_events += len(victim.lines)
            self.gap_last_id = victim.last_id
            self.gap_runner_seq = victim.runner_seq
            self.gap_log_timestamp = victim.log_timestamp
            self.gap_dirty = True

    def _stored_bytes(self) -> int:
        return sum(c.bytes for c in self._chunks)

    def _spec(self, chunk: _Chunk) -> AgentRunTranscriptSpec:
        return AgentRunTranscriptSpec(
            run_name=self.run_name,
            index=chunk.index,
            first_event_id=chunk.first_id,
            last_event_id=chunk.last_id,
            events="".join(chunk.lines),
            sealed=chunk.sealed,
            runner_seq=chunk.runner_seq,
            log_timestamp=chunk.log_timestamp,
        )

    def _gap_spec(self) -> AgentRunTranscriptSpec:
        assert self.gap_last_id is not None
        message = (
            f"[agentrun] {self.dropped_bytes} bytes of transcript were dropped here: the "
            f"transcript is capped at {self.cap_bytes} bytes per run (its head and tail are kept)"
        )
        event = StreamEvent(
            id=self.gap_last_id,
            event="log",
            data={"message": message, "stream": "stderr", "dropped_bytes": self.dropped_bytes},
        )
        head_last = max((c.index for c in self._chunks if c.head), default=0)
        return AgentRunTranscriptSpec(
            run_name=self.run_name,
            index=head_last,
            first_event_id=self.gap_last_id,
            last_event_id=self.gap_last_id,
            events=event.to_json_line() + "\n",
            sealed=True,
            gap=True,
            runner_seq=self.gap_runner_seq,
            log_timestamp=self.gap_log_timestamp,
        )

    def state(self) -> TranscriptState:
        return TranscriptState(
            last_event_id=self.last_id,
            runner_seq=self.runner_seq,
            chunks=(self._chunks[-1].index + 1) if self._chunks else 0,
            bytes=self._stored_bytes(),
            dropped_bytes=self.dropped_bytes,
            complete=self.complete_event is not None and not self.has_pending,
        )


class FlushBudget:
    """When a run's buffered transcript is written: by time, by size, within a byte budget.

    Each write replaces the open chunk whole, so writing every few lines costs etcd the chunk
    again and again (up to 32 KiB per write). A write is due when the events waiting are
    ``interval_seconds`` old or reach ``size_bytes``, and is then made only if the run's
    budget allows it: a token bucket of ``bytes_per_second`` (refilled continuously, holding
    at most ``burst_bytes``) pays for every byte sent. A write larger than the bucket waits
    for a full bucket and leaves it in debt, so the long-run rate never exceeds the budget;
    events keep accumulating meanwhile and go out in one larger, cheaper write. Writes the
    caller forces (status changes, the end) are paid for but never refused.
    """

    def __init__(
        self,
        *,
        interval_seconds: float,
        size_bytes: int,
        bytes_per_second: float,
        burst_bytes: int,
    ) -> None:
        self.interval_seconds = interval_seconds
        self.size_bytes = size_bytes
        self.bytes_per_second = bytes_per_second
        self.burst_bytes = burst_bytes
        self.tokens = float(burst_bytes)
        self.last_write = float("-inf")
        self._refilled: float | None = None

    def _refill(self, now: float) -> None:
        if self._refilled is not None:
            gained = (now - self._refilled) * self.bytes_per_second
            self.tokens = min(float(self.burst_bytes), self.tokens + gained)
        self._refilled = now

    def due(self, *, unwritten_bytes: int, cost_bytes: int, now: float) -> bool:
        """May a write of ``cost_bytes`` go now, with ``unwritten_bytes`` of new events?"""
        if cost_bytes <= 0:
            return False
        if unwritten_bytes < self.size_bytes and now - self.last_write < self.interval_seconds:
            return False
        self._refill(now)
        return self.tokens >= min(cost_bytes, self.burst_bytes)

    def spent(self, cost_bytes: int, now: float) -> None:
        """A write of ``cost_bytes`` was made (forced or due)."""
        self._refill(now)
        self.tokens -= cost_bytes
        self.last_write = now


def _gap_dropped_bytes(gap: AgentRunTranscriptSpec) -> int:
    for event in decode_transcript(gap.events):
        value = event.data.get("dropped_bytes")
        if isinstance(value, int):
            return value
    return 0


@dataclasses.dataclass
class RunnerError:
    reason: str
    message: str


class LogFolder:
    """Folds pod-log lines into the transcript and remembers the result, error and progress."""

    def __init__(self, writer: TranscriptWriter, *, run_id: str, nonce: str) -> None:
        self.writer = writer
        self.run_id = run_id
        self.nonce = nonce
        self.result_parts: dict[int, str] = {}
        self.result_count: int | None = None
        self.error: RunnerError | None = None
        self.progress: Progress | None = None
        self.interrupted = False
        self.result_position: tuple[int, str | None] | None = None
        """Where the result lines end; the writer's position moves past them only once the
        result is stored (:meth:`result_stored`), so a restart before that re-reads them."""
        self.result_is_stored = False

    def feed(self, raw_line: str) -> StreamEvent | None:
        """Fold one pod-log line; returns the transcript event it produced, if any."""
        line = raw_line.rstrip("\r\n")
        stamp, text = split_log_line(line)
        if (
            stamp is not None
            and self.writer.log_timestamp is not None
            and log_timestamp_ns(stamp) <= log_timestamp_ns(self.writer.log_timestamp)
        ):
            return None  # already folded in before a resume
        event = runner.parse_event_line(text, run_id=self.run_id, nonce=self.nonce)
        if event is None:
            if not text.strip():
                self.writer.note_position(runner_seq=None, log_timestamp=stamp)
                return None
            return self.writer.add(
                "log", {"message": text, "stream": "stdout"}, log_timestamp=stamp
            )
        if event.seq <= self.writer.runner_seq:
            self.writer.note_position(runner_seq=None, log_timestamp=stamp)
            return None
        seq = event.seq
        if isinstance(event, runner.ProgressEvent):
            self.progress = Progress(
                percentage=event.data.percentage, current_step=event.data.current_step
            )
            return self.writer.add(
                "progress",
                {"percentage": event.data.percentage, "current_step": event.data.current_step},
                runner_seq=seq,
                log_timestamp=stamp,
            )
        if isinstance(event, runner.LogEvent):
            return self.writer.add(
                "log",
                {"message": event.data.message, "stream": event.data.stream},
                runner_seq=seq,
                log_timestamp=stamp,
            )
        if isinstance(event, runner.StartEvent):
            return self.writer.add(
                "log",
                {
                    "message": f"[agentrun] runner started (framework {event.data.framework})",
                    "stream": "stdout",
                },
                runner_seq=seq,
                log_timestamp=stamp,
            )
        if isinstance(event, runner.ResultEvent):
            self.result_parts[event.data.index] = event.data.text
            self.result_count = event.data.count
            if self.result_is_stored:
                self.writer.note_position(runner_seq=seq, log_timestamp=stamp)
            else:
                self.result_position = (seq, stamp)
            return None
        if isinstance(event, runner.ErrorEvent):
            self.error = RunnerError(event.data.reason, event.data.message)
            return self.writer.add(
                "log",
                {"message": f"[agentrun] error: {event.data.message}", "stream": "stderr"},
                runner_seq=seq,
                log_timestamp=stamp,
            )
        # interrupted
        self.interrupted = True
        return self.writer.add(
            "log",
            {"message": "[agentrun] runner interrupted (SIGTERM)", "stream": "stderr"},
            runner_seq=seq,
            log_timestamp=stamp,
        )

    @property
    def result_needs_storing(self) -> bool:
        """Is the result complete but not yet stored? The caller stores it (AgentRunResult)
        before it feeds another line, then calls :meth:`result_stored`."""
        return not self.result_is_stored and self.result() is not None

    def result_stored(self) -> None:
        """The result is stored: the resume position may now move past its lines."""
        self.result_is_stored = True
        if self.result_position is not None:
            seq, stamp = self.result_position
            self.writer.note_position(runner_seq=seq, log_timestamp=stamp)

    @property
    def saw_end(self) -> bool:
        """Did the runner write its last word (the whole result, an error, or interrupted)?
        Nothing that matters follows it in the log."""
        return self.result() is not None or self.error is not None or self.interrupted

    def result(self) -> str | None:
        """The assembled result, or None unless every chunk arrived."""
        if self.result_count is None:
            return None
        if any(i not in self.result_parts for i in range(self.result_count)):
            return None
        return "".join(self.result_parts[i] for i in range(self.result_count))


def result_excerpt(result: str) -> tuple[str, bool]:
    """At most 4 KiB of UTF-8 of ``result``, cut on a character boundary; and whether it was cut."""
    encoded = result.encode()
    if len(encoded) <= limits.RESULT_EXCERPT_MAX_BYTES:
        return result, False
    return encoded[: limits.RESULT_EXCERPT_MAX_BYTES].decode("utf-8", errors="ignore"), True


def complete_payload(
    *, status: str, job_id: str, reason: str | None, error: str | None, result: str | None
) -> dict[str, Any]:
    """The ``complete`` event's data; ``result`` only when at most 4 KiB."""
    data: dict[str, Any] = {"status": status, "job_id": job_id, "reason": reason, "error": error}
    if result is not None and len(result.encode()) <= limits.RESULT_EXCERPT_MAX_BYTES:
        data["result"] = result
    return data

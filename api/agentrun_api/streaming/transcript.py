"""A run's transcript as the API holds it: the union of its AgentRunTranscript chunks, rendered
once into SSE frames shared by every client. Pure: no I/O, no Litestar, no Kubernetes client.

The operator (the only writer) rewrites a chunk's whole ``spec.events`` on every flush, appends
to the newest chunk, seals it and starts the next, and under the cap deletes middle chunks and
writes a gap chunk whose single `log` event carries the id of the last dropped event
(:class:`agentrun_contract.resource.AgentRunTranscriptSpec`). This module turns any sequence of
chunk versions into events ordered and deduplicated by id.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agentrun_contract.stream import StreamEvent
from pydantic import ValidationError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Frame:
    """One event, rendered once. ``text`` is the full SSE frame, blank line included."""

    id: int
    event: str
    text: str

    @property
    def is_complete(self) -> bool:
        return self.event == "complete"


def frame_for(event: StreamEvent) -> Frame:
    return Frame(id=event.id, event=event.event, text=event.to_sse())


def parse_events(text: str, *, chunk: str = "") -> list[Frame]:
    """Frames for the JSON Lines of a chunk. A line that is not a valid event is skipped and
    logged (the operator is the only writer, so this means a bug there, not bad user input):
    one bad line must not take the run's whole stream down."""
    frames: list[Frame] = []
    for line in text.split("\n"):
        if not line.strip():
            continue
        try:
            frames.append(frame_for(StreamEvent.model_validate_json(line)))
        except ValidationError:
            log.warning(
                "transcript line skipped: not a stream event",
                extra={"chunk": chunk, "line_bytes": len(line)},
            )
    return frames


@dataclass(slots=True)
class _Chunk:
    text: str
    frames: list[Frame]


def chunk_name(obj: Mapping[str, Any]) -> str:
    return str(obj.get("metadata", {}).get("name", ""))


def chunk_events_text(obj: Mapping[str, Any]) -> str:
    spec = obj.get("spec") or {}
    events = spec.get("events") if isinstance(spec, Mapping) else None
    return events if isinstance(events, str) else ""


@dataclass
class TranscriptView:
    """The current union of a run's chunks.

    ``high_water`` is the highest id announced as new (see :meth:`take_new`): live clients get
    events strictly above it, in id order, so a rewrite, a watch restart or a re-list never
    repeats or reorders an event. Events that appear below it later (the gap event, a chunk
    re-written after an operator restart) are served to resuming clients from :meth:`after`.
    """

    _chunks: dict[str, _Chunk] = field(default_factory=dict)
    _sorted: list[Frame] | None = None
    _ids: list[int] = field(default_factory=list)
    high_water: int = 0
    complete_id: int | None = None

    # -- writes (each is atomic with respect to the event loop: no awaits) --

    def upsert(self, obj: Mapping[str, Any]) -> None:
        """Apply an added or modified chunk object."""
        name = chunk_name(obj)
        text = chunk_events_text(obj)
        old = self._chunks.get(name)
        if old is not None and old.text == text:
            return
        if old is not None and text.startswith(old.text) and old.text.endswith("\n"):
            # The common case: the operator appended lines. Parse only the new ones.
            frames = old.frames + parse_events(text[len(old.text) :], chunk=name)
        else:
            frames = parse_events(text, chunk=name)
        self._chunks[name] = _Chunk(text=text, frames=frames)
        self._sorted = None

    def remove(self, obj: Mapping[str, Any]) -> None:
        """Apply a deleted chunk (the cap dropped it, or the run is being deleted)."""
        if self._chunks.pop(chunk_name(obj), None) is not None:
            self._sorted = None

    def replace_all(self, objs: Iterable[Mapping[str, Any]]) -> None:
        """Apply a fresh list: chunks not in it are gone."""
        listed = {chunk_name(o): o for o in objs}
        for name in list(self._chunks):
            if name not in listed:
                del self._chunks[name]
                self._sorted = None
        for obj in listed.values():
            self.upsert(obj)

    # -- reads --

    def frames(self) -> list[Frame]:
        """Every stored event, ordered by id, one frame per id."""
        if self._sorted is None:
            by_id: dict[int, Frame] = {}
            for chunk in self._chunks.values():
                for frame in chunk.frames:
                    by_id.setdefault(frame.id, frame)
            self._sorted = sorted(by_id.values(), key=lambda f: f.id)
            self._ids = [f.id for f in self._sorted]
            completes = [f.id for f in self._sorted if f.is_complete]
            if completes:
                self.complete_id = completes[0]
        return self._sorted

    def after(self, cursor: int) -> list[Frame]:
        """Every stored event with an id above ``cursor``, in order, ending at ``complete``."""
        frames = self.frames()
        start = bisect.bisect_right(self._ids, cursor)
        out = frames[start:]
        if self.complete_id is not None:
            end = bisect.bisect_right(self._ids, self.complete_id)
            out = frames[start:end] if end > start else []
        return out

    def take_new(self) -> list[Frame]:
        """Events above ``high_water`` (in order), and raise ``high_water`` past them. Nothing
        after the `complete` event is ever announced."""
        if self.complete_id is not None and self.high_water >= self.complete_id:
            return []
        new = self.after(self.high_water)
        if new:
            self.high_water = new[-1].id
        return new

    @property
    def stored_last_id(self) -> int:
        frames = self.frames()
        return frames[-1].id if frames else 0

    @property
    def is_complete(self) -> bool:
        """True once the `complete` event is stored."""
        self.frames()
        return self.complete_id is not None

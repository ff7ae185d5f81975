"""The stream event schema: what the operator stores in a run's transcript and the API serves as
SSE (shared/CONTRACT.md, "Stream").

Wire format, per event::

    id: 7
    event: progress
    data: {"event": "progress", "data": {"percentage": 50, "current_step": "Running agent"}}

and finally ``data: [DONE]``. ``data:`` is always one line of JSON: ``json.dumps`` escapes
newlines and other control characters inside strings, so no payload can break a line.
"""

from __future__ import annotations

import json
from typing import Any, Final, Literal

from pydantic import BaseModel, Field

EventType = Literal["status", "progress", "log", "complete"]
DONE_SENTINEL: Final = "[DONE]"
HEARTBEAT: Final = ": heartbeat\n\n"
LAST_EVENT_ID_QUERY: Final = "last_event_id"
"""Query parameter equivalent to the Last-Event-ID header, for browsers' EventSource."""


_LINE_BREAKS_JSON_KEEPS: Final = {"\u0085": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}
"""Characters ``json.dumps(ensure_ascii=False)`` leaves raw but ``str.splitlines`` (and so httpx's
``iter_lines``, which PraisonAI's stream client uses) treats as line breaks. Escaping them keeps
one event on one line for every reader; the JSON decodes to the same string."""


def _one_line_json(value: object, separators: tuple[str, str] = (",", ":")) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=separators)
    for raw, escaped in _LINE_BREAKS_JSON_KEEPS.items():
        text = text.replace(raw, escaped)
    return text


class StreamEvent(BaseModel):
    """One transcript entry. ``id`` is assigned by the operator and increases strictly per run.

    ``data`` by type:

    - ``status``: ``{status, reason}`` (status lowercase, as in the API)
    - ``progress``: ``{percentage, current_step}``
    - ``log``: ``{message, stream}``, stream ``stdout`` or ``stderr``
    - ``complete``: ``{status, job_id, reason, error, result}``; ``result`` only when at most
      4 KiB, else absent (fetch ``/result``)
    """

    id: int = Field(ge=1)
    event: EventType
    data: dict[str, Any]

    def to_json_line(self) -> str:
        """The transcript storage form: one JSON line."""
        return _one_line_json({"id": self.id, "event": self.event, "data": self.data})

    def to_sse(self) -> str:
        """The SSE frame, ending with the blank line."""
        # The spacing of PraisonAI's documented examples: `{"event": "progress", "data": ...}`.
        envelope = _one_line_json({"event": self.event, "data": self.data}, (", ", ": "))
        return f"id: {self.id}\nevent: {self.event}\ndata: {envelope}\n\n"


def done_frame() -> str:
    return f"data: {DONE_SENTINEL}\n\n"


def encode_transcript(events: list[StreamEvent]) -> str:
    """JSON Lines for an AgentRunTranscript chunk's ``spec.events``."""
    return "".join(e.to_json_line() + "\n" for e in events)


def decode_transcript(text: str) -> list[StreamEvent]:
    """Inverse of :func:`encode_transcript`. Splits on ``\\n`` only: ``str.splitlines`` would also
    split inside a payload holding U+2028 or U+0085 written by an older encoder."""
    return [StreamEvent.model_validate_json(line) for line in text.split("\n") if line.strip()]

"""Payload characters that some readers treat as line breaks never split an event."""

from __future__ import annotations

import json

import httpx
from agentrun_contract import stream

AWKWARD = "a\nb\r\nc\rd \u2028 e \u2029 f \x85 g \x0b\x0c\x1c\x1d\x1e \x00 \U0001f600 é"


def _event() -> stream.StreamEvent:
    return stream.StreamEvent(id=3, event="log", data={"message": AWKWARD, "stream": "stdout"})


def test_transcript_line_survives_every_line_break_character() -> None:
    text = stream.encode_transcript([_event(), _event().model_copy(update={"id": 4})])
    assert len(text.splitlines()) == 2  # str.splitlines is the strictest splitter in Python
    assert [e.id for e in stream.decode_transcript(text)] == [3, 4]
    assert stream.decode_transcript(text)[0].data["message"] == AWKWARD


def test_sse_frame_is_three_lines_for_httpx_iter_lines() -> None:
    frame = _event().to_sse()
    # httpx's LineDecoder (PraisonAI's stream client reads with iter_lines) splits like splitlines
    lines = [ln for ln in httpx._decoders.LineDecoder().decode(frame) if ln]
    assert lines[:2] == ["id: 3", "event: log"]
    assert len(lines) == 3
    envelope = json.loads(lines[2].removeprefix("data: "))
    assert envelope == {"event": "log", "data": {"message": AWKWARD, "stream": "stdout"}}


def test_sse_envelope_keeps_the_documented_spacing() -> None:
    frame = stream.StreamEvent(id=7, event="progress", data={"percentage": 50}).to_sse()
    assert 'data: {"event": "progress", "data": {"percentage": 50}}' in frame

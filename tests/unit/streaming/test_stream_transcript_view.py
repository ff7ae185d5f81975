"""The transcript view: chunks in any version order -> events ordered and deduplicated by id."""

from __future__ import annotations

import json
from typing import Any

from agentrun_api.streaming.transcript import TranscriptView, parse_events
from agentrun_contract.stream import StreamEvent, encode_transcript


def _log(i: int, text: str | None = None) -> StreamEvent:
    return StreamEvent(id=i, event="log", data={"message": text or f"m{i}", "stream": "stdout"})


def _complete(i: int) -> StreamEvent:
    return StreamEvent(
        id=i,
        event="complete",
        data={"status": "succeeded", "job_id": "run_x", "reason": None, "error": None},
    )


def _chunk(name: str, events: list[StreamEvent], *, gap: bool = False) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {"runName": "run-x", "index": 0, "events": encode_transcript(events), "gap": gap},
    }


def test_events_are_ordered_by_id_across_chunks_listed_in_any_order() -> None:
    view = TranscriptView()
    view.replace_all([_chunk("c1", [_log(4), _log(5)]), _chunk("c0", [_log(1), _log(2), _log(3)])])
    assert [f.id for f in view.frames()] == [1, 2, 3, 4, 5]
    assert [f.id for f in view.after(2)] == [3, 4, 5]
    assert view.after(5) == []


def test_take_new_never_repeats_an_event_across_rewrites() -> None:
    view = TranscriptView()
    view.upsert(_chunk("c0", [_log(1)]))
    assert [f.id for f in view.take_new()] == [1]
    view.upsert(_chunk("c0", [_log(1), _log(2)]))  # the operator rewrites the whole chunk
    view.upsert(_chunk("c0", [_log(1), _log(2)]))  # the same version again (watch restart)
    assert [f.id for f in view.take_new()] == [2]
    view.replace_all([_chunk("c0", [_log(1), _log(2), _log(3)])])  # a re-list after 410
    assert [f.id for f in view.take_new()] == [3]
    assert view.take_new() == []


def test_an_event_in_two_chunks_is_served_once() -> None:
    view = TranscriptView()
    view.upsert(_chunk("c0", [_log(1), _log(2)]))
    view.upsert(_chunk("c1", [_log(2), _log(3)]))
    assert [f.id for f in view.frames()] == [1, 2, 3]


def test_appended_lines_parse_incrementally_and_a_rewrite_parses_whole() -> None:
    view = TranscriptView()
    view.upsert(_chunk("c0", [_log(1), _log(2)]))
    view.upsert(_chunk("c0", [_log(1), _log(2), _log(3)]))
    assert [f.id for f in view.frames()] == [1, 2, 3]
    # not an append (the operator re-wrote the chunk after a restart): parsed whole again
    view.upsert(_chunk("c0", [_log(1, "other"), _log(2), _log(3)]))
    assert [f.id for f in view.frames()] == [1, 2, 3]
    assert "other" in view.frames()[0].text


def test_gap_chunk_reports_the_dropped_middle_to_a_resuming_client() -> None:
    view = TranscriptView()
    head = _chunk("c0", [_log(1), _log(2)])
    middle = _chunk("c1", [_log(3), _log(4), _log(5)])
    tail = _chunk("c2", [_log(6), _log(7)])
    view.replace_all([head, middle, tail])
    assert [f.id for f in view.take_new()] == [1, 2, 3, 4, 5, 6, 7]
    # the cap drops the middle; the gap event carries the id of the last dropped event
    view.remove(middle)
    view.upsert(_chunk("tgap", [_log(5, "[agentrun] 300 bytes dropped")], gap=True))
    assert view.take_new() == []  # live clients already had 3..5
    assert [f.id for f in view.after(0)] == [1, 2, 5, 6, 7]
    assert [f.id for f in view.after(3)] == [5, 6, 7]  # resumed inside the gap: the notice
    assert [f.id for f in view.after(5)] == [6, 7]


def test_nothing_after_complete_is_served_and_complete_is_known() -> None:
    view = TranscriptView()
    view.upsert(_chunk("c0", [_log(1), _complete(2), _log(3)]))
    assert view.is_complete
    assert view.complete_id == 2
    assert [f.id for f in view.take_new()] == [1, 2]
    assert view.take_new() == []
    assert [f.id for f in view.after(0)] == [1, 2]
    assert view.after(2) == []


def test_a_bad_line_is_skipped_not_fatal() -> None:
    text = encode_transcript([_log(1)]) + "not json\n" + '{"id": 0, "event": "log"}\n'
    text += encode_transcript([_log(2)])
    assert [f.id for f in parse_events(text)] == [1, 2]


def test_frame_text_is_the_contract_wire_format() -> None:
    (frame,) = parse_events(encode_transcript([_log(9, "a\nb \u2028 c")]))
    lines = frame.text.split("\n")
    assert lines[0] == "id: 9"
    assert lines[1] == "event: log"
    assert json.loads(lines[2].removeprefix("data: ")) == {
        "event": "log",
        "data": {"message": "a\nb \u2028 c", "stream": "stdout"},
    }
    assert frame.text.endswith("\n\n")
    assert len([ln for ln in frame.text.splitlines() if ln]) == 3

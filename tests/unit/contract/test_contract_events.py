from __future__ import annotations

import json

from agentrun_contract import runner, stream


def _event(kind: str, data: dict, seq: int = 0) -> runner.RunnerEvent:  # type: ignore[type-arg]
    return runner.make_event(kind, run_id="run_a", nonce="n0nce", seq=seq, data=data)


def test_event_round_trip() -> None:
    event = _event("progress", {"percentage": 50, "current_step": "Running agent"})
    line = runner.encode_event(event)
    assert "\n" not in line
    parsed = runner.parse_event_line(line, run_id="run_a", nonce="n0nce")
    assert parsed == event


def test_forged_events_are_not_events() -> None:
    line = runner.encode_event(_event("result", {"index": 0, "count": 1, "text": "x"}))
    assert runner.parse_event_line(line, run_id="run_a", nonce="guess") is None
    assert runner.parse_event_line(line, run_id="run_b", nonce="n0nce") is None
    assert runner.parse_event_line("not json", run_id="run_a", nonce="n0nce") is None
    assert runner.parse_event_line('{"type": "log"}', run_id="run_a", nonce="n0nce") is None


def test_result_chunks_read_back_exactly() -> None:
    text = "line one\nline two\r\n\ttabbed ünïcode 🚀\n" * 500 + "no newline at end"
    events = runner.split_result(text, run_id="run_a", nonce="n", first_seq=7)
    assert len(events) > 1
    assert [e.seq for e in events] == list(range(7, 7 + len(events)))
    lines = [runner.encode_event(e) for e in events]
    assert all("\n" not in line and len(line.encode()) < 16 * 1024 for line in lines)
    back = [runner.parse_event_line(line, run_id="run_a", nonce="n") for line in lines]
    assert "".join(e.data.text for e in back if isinstance(e, runner.ResultEvent)) == text


def test_empty_result_is_one_chunk() -> None:
    events = runner.split_result("", run_id="r", nonce="n", first_seq=0)
    assert len(events) == 1
    assert events[0].data.count == 1
    assert events[0].data.text == ""


def test_sse_frame_keeps_data_on_one_line() -> None:
    event = stream.StreamEvent(
        id=12, event="log", data={"message": "a\nb\r\nc \u2028 d", "stream": "stdout"}
    )
    frame = event.to_sse()
    lines = frame.split("\n")
    assert lines[0] == "id: 12"
    assert lines[1] == "event: log"
    assert lines[2].startswith("data: ")
    assert frame.endswith("\n\n")
    assert json.loads(lines[2][len("data: ") :]) == {"event": "log", "data": event.data}
    assert len([ln for ln in lines if ln]) == 3


def test_transcript_jsonl_round_trip() -> None:
    events = [
        stream.StreamEvent(id=i, event="log", data={"message": f"m{i}\n", "stream": "stdout"})
        for i in range(1, 5)
    ]
    assert stream.decode_transcript(stream.encode_transcript(events)) == events


def test_exit_codes_are_distinct() -> None:
    codes = [c.value for c in runner.ExitCode]
    assert len(codes) == len(set(codes))
    assert runner.ExitCode.INTERRUPTED == 128 + 15

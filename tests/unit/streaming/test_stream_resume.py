"""The resume cursor: Last-Event-ID header or last_event_id query, header first."""

from __future__ import annotations

import pytest
from agentrun_api.streaming.resume import MAX_EVENT_ID, InvalidLastEventId, resume_cursor


def test_no_cursor_starts_at_the_beginning() -> None:
    assert resume_cursor(None, None) == 0
    assert resume_cursor("", "") == 0
    assert resume_cursor("  ", None) == 0


def test_header_or_query() -> None:
    assert resume_cursor("7", None) == 7
    assert resume_cursor(None, "8") == 8
    assert resume_cursor(" 9 ", None) == 9


def test_header_wins_over_a_stale_query() -> None:
    # EventSource keeps the URL it was opened with but sends the id it last saw as a header
    assert resume_cursor("12", "3") == 12


@pytest.mark.parametrize(
    "bad", ["-1", "1.5", "abc", "1e3", "\u0661", "0x10", str(MAX_EVENT_ID + 1), "1 2"]
)
def test_anything_but_a_whole_number_is_refused_with_the_fix(bad: str) -> None:
    with pytest.raises(InvalidLastEventId, match="whole number"):
        resume_cursor(bad, None)
    with pytest.raises(InvalidLastEventId, match="last_event_id=7"):
        resume_cursor(None, bad)

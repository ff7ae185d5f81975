"""Where a stream resumes: the ``Last-Event-ID`` header or the ``last_event_id`` query parameter."""

from __future__ import annotations

from typing import Final

from agentrun_contract.stream import LAST_EVENT_ID_QUERY

LAST_EVENT_ID_HEADER: Final = "last-event-id"
MAX_EVENT_ID: Final = 2**53 - 1
"""Ids stay exact in every JSON reader (JavaScript numbers included)."""


class InvalidLastEventId(ValueError):
    """The resume cursor is not a non-negative integer; answered 400."""


def _parse(value: str, source: str) -> int:
    text = value.strip()
    if not text.isascii() or not text.isdigit() or int(text) > MAX_EVENT_ID:
        raise InvalidLastEventId(
            f"{source} must be the id of the last event you received: a whole number from 0 to "
            f"{MAX_EVENT_ID}, e.g. `{source}: 7`; omit it to start from the beginning"
            if source == "Last-Event-ID"
            else f"{source} must be the id of the last event you received: a whole number from 0 "
            f"to {MAX_EVENT_ID}, e.g. `?{source}=7`; omit it to start from the beginning"
        )
    return int(text)


def resume_cursor(header: str | None, query: str | None) -> int:
    """The id after which the stream starts (0 = from the beginning).

    The header wins over the query parameter: a browser's EventSource keeps the URL it was
    opened with (so its ``last_event_id`` is stale after a reconnect) but sends the id it last
    saw in the header. An empty value means "no cursor", as EventSource sends no header before
    its first event.
    """
    if header is not None and header.strip():
        return _parse(header, "Last-Event-ID")
    if query is not None and query.strip():
        return _parse(query, LAST_EVENT_ID_QUERY)
    return 0

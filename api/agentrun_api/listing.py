"""Filter, sort and page runs for ``GET /runs`` (pure).

Kubernetes lists are ordered by name, so ordering by age and paging happen here, over the run
cache: newest first, ties broken by name so pages never overlap or skip.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from agentrun_contract.resource import Phase

from agentrun_api.records import RunRecord
from agentrun_api.submission import SubmissionError

PAGE_SIZE_DEFAULT = 20
PAGE_SIZE_MAX = 100


@dataclass(frozen=True)
class ListQuery:
    status: Phase | None
    session_id: str | None
    page: int
    page_size: int


def _as_int(name: str, raw: int | str | None, default: int) -> int:
    if raw is None or raw == "":
        return default
    if isinstance(raw, int):
        return raw
    try:
        return int(raw)
    except ValueError as exc:
        raise SubmissionError(400, f"`{name}` must be an integer, not {raw!r}.") from exc


def parse_list_query(
    status: str | None,
    session_id: str | None,
    page: int | str | None,
    page_size: int | str | None,
) -> ListQuery:
    """Validate the query string; every fault is a 400 that names the fix."""
    phase: Phase | None = None
    if status is not None and status != "":
        try:
            phase = Phase.from_api_status(status)
        except ValueError as exc:
            allowed = ", ".join(p.api_status for p in Phase)
            raise SubmissionError(
                400, f"Unknown status {status!r}; use one of: {allowed}."
            ) from exc
    page_number = _as_int("page", page, 1)
    if page_number < 1:
        raise SubmissionError(400, f"`page` starts at 1; got {page_number}.")
    size = _as_int("page_size", page_size, PAGE_SIZE_DEFAULT)
    if not 1 <= size <= PAGE_SIZE_MAX:
        raise SubmissionError(400, f"`page_size` must be from 1 to {PAGE_SIZE_MAX}; got {size}.")
    return ListQuery(status=phase, session_id=session_id or None, page=page_number, page_size=size)


@dataclass(frozen=True)
class Page:
    records: Sequence[RunRecord]
    total: int


def select_page(
    records: Iterable[RunRecord],
    query: ListQuery,
    *,
    newest_first: bool = False,
    visible: Callable[[RunRecord], bool] | None = None,
) -> Page:
    """The runs matching the filters (effective status: a cancel-requested run is cancelled),
    newest first, cut to the page. Runs being deleted, and runs ``visible`` refuses (outside
    the caller's scope), are left out of the page and of ``total``.

    ``newest_first=True`` says ``records`` already come in that order (the run cache keeps
    them sorted), which saves the sort: one pass, no copy of the non-matching runs.
    """
    if not newest_first:
        records = sorted(records, key=lambda r: r.sort_key, reverse=True)
    start = (query.page - 1) * query.page_size
    end = start + query.page_size
    status, session = query.status, query.session_id
    page: list[RunRecord] = []
    total = 0
    for r in records:
        if r.deleting:
            continue
        if status is not None and r.effective_phase is not status:
            continue
        if session is not None and r.session_id != session:
            continue
        if visible is not None and not visible(r):
            continue
        if start <= total < end:
            page.append(r)
        total += 1
    return Page(records=page, total=total)


def queue_positions(records: Iterable[RunRecord], *, oldest_first: bool = False) -> dict[str, int]:
    """Run name -> 1-based position among queued runs, oldest first (``oldest_first=True``:
    ``records`` already come in that order)."""
    queued = (r for r in records if r.is_queued)
    ordered = queued if oldest_first else sorted(queued, key=lambda r: r.sort_key)
    return {r.name: i for i, r in enumerate(ordered, start=1)}

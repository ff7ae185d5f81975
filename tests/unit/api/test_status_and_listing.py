"""The status object, the result view, listing and queue positions (pure)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from agentrun_api.listing import ListQuery, parse_list_query, queue_positions, select_page
from agentrun_api.records import RunRecord, record_from_object
from agentrun_api.status_view import iso_z, result_view, run_links, status_view
from agentrun_api.submission import SubmissionError
from agentrun_contract.resource import Phase

LINKS = run_links("http://h:8005/", "run_abc", None)


def run_obj(
    name: str = "run-abc",
    created: str = "2026-01-01T00:00:00Z",
    status: dict[str, Any] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "uid": f"uid-{name}",
            "resourceVersion": "5",
            "creationTimestamp": created,
        },
        "spec": {"prompt": "p", **spec},
        "status": status or {},
    }


def view(obj: dict[str, Any], position: int | None = None) -> dict[str, Any]:
    return status_view(record_from_object(obj), LINKS, position).model_dump()


def test_links_are_absolute_and_carry_the_read_token() -> None:
    assert LINKS.poll_url == "http://h:8005/api/v1/runs/run_abc"
    assert LINKS.stream_url == "http://h:8005/api/v1/runs/run_abc/stream"
    signed = run_links("https://x.example", "run_abc", "v1.9.a+b/=")
    assert signed.poll_url == "https://x.example/api/v1/runs/run_abc?token=v1.9.a%2Bb%2F%3D"
    assert signed.stream_url.endswith("/stream?token=v1.9.a%2Bb%2F%3D")


def test_empty_status_reads_queued() -> None:
    body = view(run_obj(), position=3)
    assert body["job_id"] == "run_abc"
    assert body["status"] == "queued"
    assert body["progress"] == {"percentage": 0.0, "current_step": None}
    assert body["retry_after"] == 2
    assert body["queue_position"] == 3
    assert body["created_at"] == "2026-01-01T00:00:00Z"
    assert body["reason"] is None
    assert body["error"] is None


def test_queued_with_a_pending_reason() -> None:
    body = view(
        run_obj(status={"phase": "Queued", "reason": "unschedulable", "message": "no node fits"}),
        position=1,
    )
    assert body["status"] == "queued"
    assert body["reason"] == "unschedulable"
    assert body["error"] == "no node fits"


def test_running() -> None:
    body = view(
        run_obj(
            status={
                "phase": "Running",
                "startedAt": "2026-01-01T00:00:01.250000Z",
                "progress": {"percentage": 40, "currentStep": "step 2"},
                "message": "Job created",
            }
        ),
        position=None,
    )
    assert body["status"] == "running"
    assert body["retry_after"] == 5
    assert body["queue_position"] is None
    assert body["started_at"] == "2026-01-01T00:00:01.250Z"
    assert body["progress"] == {"percentage": 40.0, "current_step": "step 2"}
    assert body["error"] is None  # a message without a reason is not an error


@pytest.mark.parametrize(
    ("phase", "reason"),
    [("Succeeded", None), ("Failed", "oom_killed"), ("Cancelled", "cancelled")],
)
def test_finished(phase: str, reason: str | None) -> None:
    status = {
        "phase": phase,
        "startedAt": "2026-01-01T00:00:00Z",
        "completedAt": "2026-01-01T00:01:00Z",
    }
    if reason:
        status |= {"reason": reason, "message": "why"}
    body = view(run_obj(status=status), position=7)
    assert body["status"] == phase.lower()
    assert body["retry_after"] is None
    assert body["queue_position"] is None
    assert body["duration_seconds"] == 60.0
    assert body["reason"] == reason
    if phase == "Succeeded":
        assert body["progress"]["percentage"] == 100.0


def test_cancel_requested_reads_cancelled_at_once_unless_already_terminal() -> None:
    body = view(run_obj(status={"phase": "Running"}, cancelRequested=True))
    assert body["status"] == "cancelled"
    assert body["reason"] == "cancelled"
    assert body["retry_after"] is None
    assert body["error"]
    body = view(run_obj(status={"phase": "Succeeded"}, cancelRequested=True))
    assert body["status"] == "succeeded"
    assert body["reason"] is None


def test_odd_kubectl_status_is_read_leniently() -> None:
    body = view(
        run_obj(name="my-run", status={"phase": "Weird", "reason": "martian", "progress": 5})
    )
    assert body["job_id"] == "my-run"
    assert body["status"] == "queued"
    assert body["progress"] == {"percentage": 0.0, "current_step": None}


def test_result_view() -> None:
    record = record_from_object(
        run_obj(status={"phase": "Failed", "reason": "timeout", "message": "too slow"})
    )
    body = result_view(record, None).model_dump()
    assert body == {
        "job_id": "run_abc",
        "status": "failed",
        "result": None,
        "error": "too slow",
        "reason": "timeout",
        "created_at": "2026-01-01T00:00:00Z",
        "started_at": None,
        "completed_at": None,
        "duration_seconds": None,
    }


def test_iso_z() -> None:
    assert iso_z(None) is None
    assert iso_z(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02T03:04:05Z"
    assert iso_z(datetime(2026, 1, 2, 3, 4, 5, 123456)) == "2026-01-02T03:04:05.123Z"


def records(n: int) -> list[RunRecord]:
    out = []
    for i in range(n):
        status = {"phase": "Succeeded"} if i % 3 == 0 else {}
        out.append(
            record_from_object(
                run_obj(
                    name=f"run-{i:03d}",
                    created=f"2026-01-01T00:{i // 60:02d}:{i % 60:02d}Z",
                    status=status,
                    sessionId="even" if i % 2 == 0 else "odd",
                )
            )
        )
    return out


def test_select_page_newest_first_with_filters() -> None:
    all_runs = records(10)
    page = select_page(all_runs, ListQuery(None, None, 1, 4))
    assert [r.name for r in page.records] == ["run-009", "run-008", "run-007", "run-006"]
    assert page.total == 10
    page = select_page(all_runs, ListQuery(None, None, 3, 4))
    assert [r.name for r in page.records] == ["run-001", "run-000"]
    page = select_page(all_runs, ListQuery(None, None, 4, 4))
    assert page.records == []
    assert page.total == 10
    page = select_page(all_runs, ListQuery(Phase.SUCCEEDED, "even", 1, 20))
    assert [r.name for r in page.records] == ["run-006", "run-000"]


def test_same_second_ties_are_broken_by_name() -> None:
    same = [record_from_object(run_obj(name=n)) for n in ("run-b", "run-a", "run-c")]
    assert [r.name for r in select_page(same, ListQuery(None, None, 1, 10)).records] == [
        "run-c",
        "run-b",
        "run-a",
    ]


def test_queue_positions_oldest_first_and_cancel_requested_leave_the_queue() -> None:
    runs = records(6)
    runs.append(record_from_object(run_obj(name="run-zzz", cancelRequested=True)))
    positions = queue_positions(runs)
    assert positions == {"run-001": 1, "run-002": 2, "run-004": 3, "run-005": 4}


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("nope", None, None, None), "unknown status"),
        ((None, None, 0, None), "page"),
        ((None, None, "x", None), "page"),
        ((None, None, None, 101), "page_size"),
        ((None, None, None, 0), "page_size"),
    ],
)
def test_list_query_refusals(args: tuple[Any, ...], fragment: str) -> None:
    with pytest.raises(SubmissionError) as info:
        parse_list_query(*args)
    assert info.value.status_code == 400
    assert fragment in info.value.detail.lower()


def test_list_query_defaults() -> None:
    assert parse_list_query(None, "", None, None) == ListQuery(None, None, 1, 20)
    assert parse_list_query("cancelled", "s", 2, 100) == ListQuery(Phase.CANCELLED, "s", 2, 100)

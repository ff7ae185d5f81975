"""The stream through the whole dev stack: API + operator processes, fake Job controller and
kubelet, the tiny runner. Submit through the API, follow stream_url, resume, and read a run
whose pod its deadline deleted."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from agentrun_devcluster.system import DevSystem

from .test_stream_api import Received, eventually, read_stream

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


async def _submit(api_url: str, body: dict[str, Any]) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(f"{api_url}/api/v1/runs", json=body)
    assert response.status_code == 202, response.text
    return dict(response.json())


async def _read_url(url: str, *, headers: dict[str, str] | None = None) -> Received:
    base, _, rest = url.partition("/api/v1/runs/")
    job_id = rest.split("/", 1)[0]
    params = dict(httpx.URL(url).params)
    return await read_stream(base, job_id, headers=headers, params=params or None)


async def test_submit_stream_resume_through_the_dev_stack(system_module: DevSystem) -> None:
    accepted = await _submit(
        system_module.api_url, {"prompt": "steps=3 lines=4 sleep=1", "timeout": 60}
    )
    got = await asyncio.wait_for(_read_url(accepted["stream_url"]), 90)
    assert got.done
    last = got.ids[-1]
    assert got.ids == list(range(1, last + 1))  # one cursor, no gap, no repeat
    assert {"status", "progress", "log", "complete"} <= set(got.kinds)
    assert got.kinds[-1] == "complete"
    assert got.events[-1]["data"]["status"] == "succeeded"
    assert got.events[-1]["data"]["job_id"] == accepted["job_id"]
    # resume after every event: exactly the rest; after the last: 204
    for cursor in range(last):
        rest = await _read_url(accepted["stream_url"], headers={"Last-Event-ID": str(cursor)})
        assert rest.ids == list(range(cursor + 1, last + 1)), cursor
    after = await _read_url(accepted["stream_url"], headers={"Last-Event-ID": str(last)})
    assert after.status == 204


async def test_live_resume_on_another_replica(system_module: DevSystem) -> None:
    other_api = system_module.start_api()
    accepted = await _submit(
        system_module.api_url, {"prompt": "steps=4 lines=6 sleep=3", "timeout": 60}
    )
    first = Received()
    reader = asyncio.create_task(_read_url_into(accepted["stream_url"], first))
    await eventually(lambda: len(first.ids) >= 3, within=60)
    reader.cancel()  # the connection drops mid-run
    with pytest.raises(asyncio.CancelledError):
        await reader
    seen = list(first.ids)
    assert seen == list(range(1, len(seen) + 1))
    job_id = accepted["job_id"]
    rest = await asyncio.wait_for(
        read_stream(other_api, job_id, headers={"Last-Event-ID": str(seen[-1])}), 90
    )
    assert rest.done
    assert rest.ids == list(range(seen[-1] + 1, rest.ids[-1] + 1))


async def _read_url_into(url: str, into: Received) -> None:
    base, _, rest = url.partition("/api/v1/runs/")
    await read_stream(base, rest.split("/", 1)[0], into=into)


async def test_run_killed_by_its_deadline_is_served_after_the_pod_is_gone(
    system_module: DevSystem,
) -> None:
    accepted = await _submit(
        system_module.api_url, {"prompt": "lines=2 sleep=60 steps=1", "timeout": 2}
    )
    job_id = accepted["job_id"]
    async with httpx.AsyncClient(timeout=10) as http:
        deadline = time.monotonic() + 90
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = (await http.get(accepted["poll_url"])).json()
            if status["status"] in ("failed", "succeeded", "cancelled"):
                break
            await asyncio.sleep(0.2)
    assert status["status"] == "failed"
    got = await _read_url(accepted["stream_url"])
    assert got.done
    assert got.ids == list(range(1, got.ids[-1] + 1))
    assert got.events[-1]["event"] == "complete"
    assert got.events[-1]["data"]["reason"] == "timeout"
    assert any(e["event"] == "log" for e in got.events)
    assert job_id == got.events[-1]["data"]["job_id"]


async def test_cancel_ends_the_stream_and_a_deleted_run_is_404(system_module: DevSystem) -> None:
    accepted = await _submit(system_module.api_url, {"prompt": "sleep=60 lines=1", "timeout": 120})
    got = Received()
    reader = asyncio.create_task(_read_url_into(accepted["stream_url"], got))
    await eventually(lambda: "running" in [e["data"].get("status") for e in got.events], 60)
    async with httpx.AsyncClient(timeout=30) as http:
        cancelled = await http.post(f"{accepted['poll_url']}/cancel")
        assert cancelled.status_code == 200
        await asyncio.wait_for(reader, 60)
        assert got.done
        assert got.events[-1]["event"] == "complete"
        assert got.events[-1]["data"]["status"] == "cancelled"
        assert got.ids == list(range(1, got.ids[-1] + 1))
        deleted = await http.delete(accepted["poll_url"])
        assert deleted.status_code == 204
        # the finished run's upstream may still linger: it is not served once the run is gone
        statuses: list[int] = []
        async with asyncio.timeout(10):
            while not statuses or statuses[-1] != 404:
                statuses.append((await http.get(accepted["stream_url"])).status_code)
        assert set(statuses) <= {200, 404}
        assert len(statuses) <= 3  # at most the informer's lag

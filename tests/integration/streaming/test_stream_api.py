"""GET /api/v1/runs/{job_id}/stream over real HTTP against the emulated cluster, with transcripts
written by the operator's own TranscriptWriter."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from agentrun_api.auth import sign_read_token
from agentrun_devcluster.testing import ClusterThread
from httpx_sse import aconnect_sse
from pydantic import SecretStr

from .conftest import APIProcess, APIThread, Seeder, api_settings

pytestmark = pytest.mark.timeout(120)


@dataclass
class Received:
    status: int = 0
    ids: list[int] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    """The parsed ``data:`` envelopes, in order."""
    kinds: list[str] = field(default_factory=list)
    heartbeats: int = 0
    done: bool = False


def stream_url(base: str, job_id: str) -> str:
    return f"{base}/api/v1/runs/{job_id}/stream"


async def read_stream(
    base: str,
    job_id: str,
    *,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
    into: Received | None = None,
    stop_at_id: int | None = None,
) -> Received:
    """Read one stream to its end (or to ``stop_at_id``), parsing the SSE wire format strictly:
    every event is exactly ``id:``, ``event:``, ``data:`` then a blank line."""
    got = into or Received()
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(30)) as http,
        http.stream("GET", stream_url(base, job_id), headers=headers, params=params) as response,
    ):
        got.status = response.status_code
        if response.status_code != 200:
            await response.aread()
            return got
        assert response.headers["content-type"].startswith("text/event-stream")
        frame: list[str] = []
        async for line in response.aiter_lines():
            if line:
                frame.append(line)
                continue
            if not frame:
                continue
            if frame == [": heartbeat"]:
                got.heartbeats += 1
            elif frame == ["data: [DONE]"]:
                got.done = True
            else:
                assert len(frame) == 3, frame
                assert frame[0].startswith("id: ")
                assert frame[1].startswith("event: ")
                assert frame[2].startswith("data: ")
                envelope = json.loads(frame[2][len("data: ") :])
                assert envelope["event"] == frame[1][len("event: ") :]
                got.ids.append(int(frame[0][len("id: ") :]))
                got.kinds.append(envelope["event"])
                got.events.append(envelope)
                if stop_at_id is not None and got.ids[-1] >= stop_at_id:
                    return got
            frame = []
    return got


async def eventually(predicate: Any, within: float = 10.0) -> None:
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 - polling another thread's state
            await asyncio.sleep(0.02)


# ------------------------------------------------------------------------------------------


async def test_unknown_run_is_404_and_bad_cursor_400_before_any_sse_byte(api: APIThread) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        missing = await http.get(stream_url(api.base_url, "run_doesnotexist"))
        assert missing.status_code == 404
        assert missing.headers["content-type"].startswith("application/json")
        assert "run_doesnotexist" in missing.json()["detail"]
        bad = await http.get(
            stream_url(api.base_url, "run_doesnotexist"), headers={"Last-Event-ID": "seven"}
        )
        assert bad.status_code == 400
        assert "whole number" in bad.json()["detail"]


async def test_live_run_then_resume_at_every_point(api: APIThread, seeder: Seeder) -> None:
    run = await seeder.run()
    # a client connected before the run started (no transcript at all yet)
    early = asyncio.create_task(read_stream(api.base_url, run.job_id))
    await asyncio.sleep(0.3)
    await run.emit("status", {"status": "running", "reason": None})
    await run.emit("progress", {"percentage": 10, "current_step": "Running agent"})
    for i in range(5):
        await run.log(f"line {i}")
    # a client that joins mid-run, resuming after id 3 while events keep coming
    mid = asyncio.create_task(read_stream(api.base_url, run.job_id, headers={"Last-Event-ID": "3"}))
    await asyncio.sleep(0.3)
    for i in range(5, 8):
        await run.log(f"line {i}", flush=False)
    await run.flush()  # several events in one chunk write
    await run.emit("progress", {"percentage": 100, "current_step": "Done"})
    last = await run.finish()
    got_early = await asyncio.wait_for(early, 30)
    got_mid = await asyncio.wait_for(mid, 30)
    assert got_early.ids == list(range(1, last + 1))
    assert got_early.done
    assert got_early.kinds[0] == "status"
    assert got_early.kinds[-1] == "complete"
    assert got_early.events[-1]["data"]["status"] == "succeeded"
    assert got_mid.ids == list(range(4, last + 1))
    assert got_mid.done
    # after the result: every cursor resumes exactly after itself, header or query
    for cursor in range(last):
        by_header = await read_stream(
            api.base_url, run.job_id, headers={"Last-Event-ID": str(cursor)}
        )
        assert by_header.ids == list(range(cursor + 1, last + 1)), cursor
        assert by_header.done
    by_query = await read_stream(api.base_url, run.job_id, params={"last_event_id": "6"})
    assert by_query.ids == list(range(7, last + 1))
    # at (or past) the complete event: 204, so EventSource stops
    for cursor in (last, last + 5):
        after = await read_stream(api.base_url, run.job_id, headers={"Last-Event-ID": str(cursor)})
        assert after.status == 204
        assert after.ids == []


async def test_run_whose_pod_was_deleted_by_its_deadline_is_still_served(
    api: APIThread, seeder: Seeder, cluster: ClusterThread
) -> None:
    run = await seeder.run()
    pods = "/api/v1/namespaces/default/pods"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"{run.name}-pod", "labels": {"agentrun.dev/run": run.name}},
        "spec": {"containers": [{"name": "runner", "image": "runner:test"}]},
    }
    created = await seeder.http.post(pods, json=pod)
    assert created.status_code == 201
    await run.emit("status", {"status": "running", "reason": None})
    for i in range(3):
        await run.log(f"working {i}")
    # the deadline kills the Job: the operator flushes the transcript as the pod terminates
    last = await run.finish("failed", "timeout")
    gone = await seeder.http.delete(f"{pods}/{run.name}-pod")
    assert gone.status_code == 200
    assert (await seeder.http.get(f"{pods}/{run.name}-pod")).status_code == 404
    got = await read_stream(api.base_url, run.job_id)
    assert got.ids == list(range(1, last + 1))
    assert got.events[-1]["data"]["status"] == "failed"
    assert got.events[-1]["data"]["reason"] == "timeout"
    assert got.done


AWKWARD = [
    "multi\nline\noutput",
    "windows\r\nline",
    "separators \u2028 \u2029 \x85 and controls \x0b\x0c\x1c\x1e\x00",
    'quotes " and \\ backslashes \\n (not a newline)',
    "unicode: \u00e9\u00e8 \u4f60\u597d \U0001f680 \u0627\u0644\u0639\u0631\u0628\u064a\u0629",
    "x" * 8000 + "\n" + "y" * 100,
    "data: [DONE]\n\nid: 999\nevent: complete",
]


async def test_multiline_and_unicode_payloads_stay_one_line_of_json(
    api: APIThread, seeder: Seeder
) -> None:
    run = await seeder.run()
    for message in AWKWARD:
        await run.log(message)
    last = await run.finish()
    got = await read_stream(api.base_url, run.job_id)  # asserts 3 lines per event
    assert got.ids == list(range(1, last + 1))
    assert [e["data"]["message"] for e in got.events[:-1]] == AWKWARD
    assert got.done


async def test_httpx_sse_client(api: APIThread, seeder: Seeder) -> None:
    run = await seeder.run()
    for message in AWKWARD[:3]:
        await run.log(message)
    last = await run.finish()
    seen: list[tuple[str, str, Any]] = []
    async with (
        httpx.AsyncClient(timeout=30) as http,
        aconnect_sse(http, "GET", stream_url(api.base_url, run.job_id)) as source,
    ):
        async for sse in source.aiter_sse():
            if sse.data == "[DONE]":
                break
            seen.append((sse.id, sse.event, json.loads(sse.data)))
    assert [int(s[0]) for s in seen] == list(range(1, last + 1))
    assert [s[2]["data"]["message"] for s in seen[:-1]] == AWKWARD[:3]
    assert seen[-1][1] == "complete"
    # EventSource's reconnect: Last-Event-ID from the last event seen -> 204
    async with httpx.AsyncClient(timeout=30) as http:
        again = await http.get(
            stream_url(api.base_url, run.job_id), headers={"Last-Event-ID": seen[-1][0]}
        )
    assert again.status_code == 204


async def test_praisonai_stream_client_works_unchanged(
    api: APIThread, seeder: Seeder, capsys: pytest.CaptureFixture[str]
) -> None:
    from praisonai_code.cli.features.jobs import JobsHandler  # type: ignore[import-untyped]

    run = await seeder.run()
    await run.emit("status", {"status": "running", "reason": None})
    await run.emit("progress", {"percentage": 50, "current_step": "Running agent"})
    for message in AWKWARD:
        await run.log(message)
    last = await run.finish()
    capsys.readouterr()
    # `praisonai run stream <job_id> --json --api-url ...`: prints one JSON envelope per event
    handler = JobsHandler(api_url=api.base_url)
    await asyncio.to_thread(handler.stream, run.job_id, True)
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    assert len(printed) == last
    assert printed[0] == {"event": "status", "data": {"status": "running", "reason": None}}
    assert printed[1]["data"] == {"percentage": 50, "current_step": "Running agent"}
    assert [p["data"]["message"] for p in printed[2:-1]] == AWKWARD
    assert printed[-1]["event"] == "complete"


async def test_heartbeat_while_nothing_happens(api: APIThread, seeder: Seeder) -> None:
    run = await seeder.run()
    got = Received()
    reader = asyncio.create_task(read_stream(api.base_url, run.job_id, into=got))
    await eventually(lambda: got.heartbeats >= 2, within=10)  # heartbeat_seconds=0.5
    assert got.ids == []
    await run.finish()
    await asyncio.wait_for(reader, 10)
    assert got.done


async def test_disconnect_releases_the_upstream_watch(api: APIThread, seeder: Seeder) -> None:
    run = await seeder.run()
    await run.log("hello")

    def upstream_open() -> bool:
        return bool(api.call(lambda: api.hub.upstream(run.name) is not None))

    readers = [
        asyncio.create_task(read_stream(api.base_url, run.job_id, stop_at_id=99)) for _ in range(3)
    ]
    await eventually(lambda: api.call(lambda: api.hub.open_clients()) >= 3)
    assert upstream_open()
    for reader in readers:
        reader.cancel()
    for reader in readers:
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    started = time.monotonic()
    # released by the next heartbeat (0.5 s) plus the linger (0.2 s), with a generous margin
    await eventually(lambda: not upstream_open(), within=10)
    assert time.monotonic() - started < 10
    assert api.call(lambda: api.hub.open_clients()) == 0


async def test_gap_chunk_from_the_cap(api: APIThread, seeder: Seeder) -> None:
    run = await seeder.run(chunk_bytes=512, cap_bytes=4096)
    live = Received()
    live_task = asyncio.create_task(read_stream(api.base_url, run.job_id, into=live))
    await asyncio.sleep(0.3)
    for i in range(80):
        await run.log(f"line {i:03d} " + "z" * 60)
    last = await run.finish()
    await asyncio.wait_for(live_task, 30)
    # live: every event exactly once, in order, even as the cap dropped chunks behind it
    assert live.ids == list(range(1, last + 1))
    # afterwards: head, the gap notice (id of the last dropped event), tail; strictly increasing
    after = await read_stream(api.base_url, run.job_id)
    assert after.done
    assert after.ids == sorted(set(after.ids))
    assert len(after.ids) < last
    notices = [e for e in after.events if "dropped" in e["data"].get("message", "")]
    assert len(notices) == 1
    gap_id = after.ids[after.events.index(notices[0])]
    head = [i for i in after.ids if i < gap_id]
    assert head == list(range(1, len(head) + 1))
    # resumed inside the dropped range: the notice, then the tail
    inside = await read_stream(
        api.base_url, run.job_id, headers={"Last-Event-ID": str(head[-1] + 1)}
    )
    assert inside.ids[0] == gap_id
    assert inside.ids == [i for i in after.ids if i >= gap_id]


def _decode_chunked(raw: bytes) -> str:
    """The body of a chunked HTTP response, up to the last whole chunk received."""
    _, _, rest = raw.partition(b"\r\n\r\n")
    body = b""
    while True:
        size_line, sep, tail = rest.partition(b"\r\n")
        if not sep:
            break
        size = int(size_line, 16)
        if size == 0 or len(tail) < size + 2:
            break
        body += tail[:size]
        rest = tail[size + 2 :]
    return body.decode()


async def test_slow_client_is_disconnected_and_resumes_exactly(
    cluster: ClusterThread, seeder: Seeder
) -> None:
    server = APIThread(api_settings(cluster, client_buffer_events=5), send_buffer=8192).start()
    try:
        run = await seeder.run(cap_bytes=8 * 1024 * 1024)
        await run.log("first")
        # a client that stops reading: tiny receive window, never reads
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.connect(("127.0.0.1", int(server.base_url.rsplit(":", 1)[1])))
        slow.sendall(f"GET /api/v1/runs/{run.job_id}/stream HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        fast = asyncio.create_task(read_stream(server.base_url, run.job_id))
        await eventually(lambda: server.call(lambda: server.hub.open_clients()) == 2)
        payload = "p" * 2000
        for i in range(60):  # ~240 KB: far beyond the slow client's socket buffers
            for _ in range(2):
                await run.log(f"{i} {payload}", flush=False)
            await run.flush()
        last = await run.finish()
        got_fast = await asyncio.wait_for(fast, 30)  # not held back by the slow one
        assert got_fast.ids == list(range(1, last + 1))
        # the slow client was dropped (by the next heartbeat after its buffer overflowed)
        await eventually(lambda: server.call(lambda: server.hub.open_clients()) == 0, within=15)
        slow.settimeout(10)
        raw = b""
        while chunk := await asyncio.to_thread(slow.recv, 65536):
            raw += chunk
        slow.close()
        text = _decode_chunked(raw)
        received = [int(line[4:]) for line in text.split("\n") if line.startswith("id: ")]
        complete_frames = text.count("\n\n")
        assert "[DONE]" not in text
        assert received == list(range(1, len(received) + 1))
        assert len(received) < last
        # resume from the last whole event it received: the rest, exactly once
        resume_from = received[-1] if complete_frames >= len(received) else received[-2]
        rest = await read_stream(
            server.base_url, run.job_id, headers={"Last-Event-ID": str(resume_from)}
        )
        assert rest.ids == list(range(resume_from + 1, last + 1))
        assert rest.done
        overflowed = server.call(
            lambda: server.hub.metrics.disconnects.labels("overflow")._value.get()
        )
        assert overflowed >= 1
    finally:
        server.stop()


async def test_auth_accepts_api_token_or_the_runs_read_token(
    cluster: ClusterThread, seeder: Seeder
) -> None:
    key = "read-token-signing-key-for-tests-0123456789"
    settings = api_settings(cluster).model_copy(
        update={
            "auth_enabled": True,
            "tokens": {"ci": SecretStr("s3cret-token")},
            "read_token_key": SecretStr(key),
            "admin_tokens": ["ci"],  # the seeded runs carry no submitter label
        }
    )
    server = APIThread(settings).start()
    try:
        run = await seeder.run()
        last = await run.finish()
        other = await seeder.run()
        now = time.time()
        good = sign_read_token(run.job_id, run.uid, key.encode(), 900, now)
        async with httpx.AsyncClient(timeout=10) as http:
            url = stream_url(server.base_url, run.job_id)
            denied = await http.get(url)
            assert denied.status_code == 401
            assert "WWW-Authenticate" in denied.headers
            wrong_run = sign_read_token(other.job_id, other.uid, key.encode(), 900, now)
            assert (await http.get(url, params={"token": wrong_run})).status_code == 401
            expired = sign_read_token(run.job_id, run.uid, key.encode(), 1, now - 60)
            assert (await http.get(url, params={"token": expired})).status_code == 401
        by_token = await read_stream(server.base_url, run.job_id, params={"token": good})
        assert by_token.ids == list(range(1, last + 1))
        bearer = await read_stream(
            server.base_url, run.job_id, headers={"Authorization": "Bearer s3cret-token"}
        )
        assert bearer.done
    finally:
        server.stop()


@pytest.mark.slow
async def test_two_api_processes_resume_on_the_other(
    cluster: ClusterThread, seeder: Seeder
) -> None:
    first = APIProcess(cluster.kubeconfig)
    second = APIProcess(cluster.kubeconfig)
    try:
        await asyncio.to_thread(first.wait_ready)
        await asyncio.to_thread(second.wait_ready)
        run = await seeder.run()
        for i in range(4):
            await run.log(f"before {i}")
        part = await read_stream(first.base_url, run.job_id, stop_at_id=3)
        assert part.ids == [1, 2, 3]
        resumed = asyncio.create_task(
            read_stream(second.base_url, run.job_id, headers={"Last-Event-ID": "3"})
        )
        for i in range(4):
            await run.log(f"after {i}")
        last = await run.finish()
        rest = await asyncio.wait_for(resumed, 30)
        assert rest.ids == list(range(4, last + 1))
        assert rest.done
        # after [DONE], either replica answers 204
        for api in (first, second):
            after = await read_stream(
                api.base_url, run.job_id, headers={"Last-Event-ID": str(last)}
            )
            assert after.status == 204
        assert second.metric("agentrun_api_stream_watches_opened_total") >= 1
    finally:
        first.terminate()
        second.terminate()


@pytest.mark.slow
async def test_sigterm_ends_open_streams_cleanly_and_exits(
    cluster: ClusterThread, seeder: Seeder, api: APIThread
) -> None:
    draining = APIProcess(cluster.kubeconfig, AGENTRUN_API_STREAM__HEARTBEAT_SECONDS="30")
    try:
        await asyncio.to_thread(draining.wait_ready)
        run = await seeder.run()
        for i in range(3):
            await run.log(f"line {i}")
        got = Received()
        reader = asyncio.create_task(read_stream(draining.base_url, run.job_id, into=got))
        await eventually(lambda: got.ids == [1, 2, 3])
        started = time.monotonic()
        code = await asyncio.to_thread(draining.terminate)
        await asyncio.wait_for(reader, 10)
        assert code == 0
        assert time.monotonic() - started < 10  # well before a 30 s heartbeat or a grace period
        assert got.ids == [1, 2, 3]
        assert not got.done
        # the client reconnects elsewhere with its last id and loses nothing
        await run.log("after the rollout")
        last = await run.finish()
        rest = await read_stream(api.base_url, run.job_id, headers={"Last-Event-ID": "3"})
        assert rest.ids == list(range(4, last + 1))
    finally:
        draining.terminate()


def _documented_httpx_example(api_url: str, job_id: str) -> tuple[list[str], str | None]:
    """PraisonAI's "Stream Run API" page example, as written there (httpx's default 5 s
    timeout included): returns the printed lines and the final status."""
    printed: list[str] = []
    final_status = None
    with httpx.stream("GET", f"{api_url}/api/v1/runs/{job_id}/stream") as response:
        for line in response.iter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            event = json.loads(data)
            if event["event"] == "progress":
                pct = event["data"]["percentage"]
                step = event["data"].get("current_step", "")
                printed.append(f"Progress: {pct}% - {step}")
            elif event["event"] == "log":
                printed.append(f"Log: {event['data']['message']}")
            elif event["event"] == "complete":
                final_status = event["data"]["status"]
    return printed, final_status


@pytest.mark.slow
async def test_praisonai_documented_example_survives_a_silent_stretch(
    api: APIThread, seeder: Seeder
) -> None:
    """httpx's default read timeout is 5 s: heartbeats (0.5 s here) keep the documented
    example alive through a stretch with no events longer than that."""
    run = await seeder.run()
    example = asyncio.create_task(
        asyncio.to_thread(_documented_httpx_example, api.base_url, run.job_id)
    )
    await run.emit("progress", {"percentage": 10, "current_step": "Analyzing input"})
    await asyncio.sleep(6)  # the agent thinks quietly
    await run.log("Data analysis complete")
    await run.finish()
    printed, final_status = await asyncio.wait_for(example, 30)
    assert printed == ["Progress: 10% - Analyzing input", "Log: Data analysis complete"]
    assert final_status == "succeeded"


async def test_new_streams_are_refused_while_draining(
    cluster: ClusterThread, seeder: Seeder
) -> None:
    server = APIThread(api_settings(cluster)).start()
    try:
        run = await seeder.run()
        await run.log("one")
        open_stream = Received()
        reader = asyncio.create_task(read_stream(server.base_url, run.job_id, into=open_stream))
        await eventually(lambda: open_stream.ids == [1])
        # what the API's SIGTERM handler does first
        server.call(lambda: server.app.state.shutting_down.set())
        await asyncio.wait_for(reader, 10)
        assert open_stream.ids == [1]
        assert not open_stream.done
        async with httpx.AsyncClient(timeout=10) as http:
            refused = await http.get(stream_url(server.base_url, run.job_id))
        assert refused.status_code == 503
        assert refused.headers["Retry-After"] == "1"
        assert "reconnect" in refused.json()["detail"]
    finally:
        server.stop()

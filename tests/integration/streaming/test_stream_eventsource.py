"""A browser's EventSource (the WhatWG algorithm, as the `eventsource` npm package implements it
for Node) against the stream: the `last_event_id` query parameter, the automatic reconnect with
Last-Event-ID after the stream closes, and the 204 that makes it stop for good.

tools/test installs the package into .tools/eventsource (npm ci from the lockfile next to this
file)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from .conftest import APIThread, Seeder

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[2]
CLIENT = HERE / "eventsource" / "client.cjs"
NODE_MODULES = REPO_ROOT / ".tools" / "eventsource" / "node_modules"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


async def run_eventsource(url: str) -> list[dict[str, Any]]:
    node = shutil.which("node")
    if node is None or not (NODE_MODULES / "eventsource").is_dir():
        pytest.fail(
            "node and the eventsource package are needed: run tools/test, or "
            "`mkdir -p .tools/eventsource && cp tests/integration/streaming/eventsource/"
            "package*.json .tools/eventsource && npm ci --prefix .tools/eventsource`"
        )
    proc = await asyncio.create_subprocess_exec(
        node,
        str(CLIENT),
        url,
        env={**os.environ, "NODE_PATH": str(NODE_MODULES)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode == 0, (out + err).decode()
    return [json.loads(line) for line in out.decode().splitlines() if line]


async def test_browser_eventsource_resumes_by_query_and_stops_on_204(
    api: APIThread, seeder: Seeder
) -> None:
    run = await seeder.run()
    await run.emit("status", {"status": "running", "reason": None})
    for i in range(4):
        await run.log(f"line {i} \u2028 \U0001f680")
    last = await run.finish()
    url = f"{api.base_url}/api/v1/runs/{run.job_id}/stream?last_event_id=2"
    seen = await run_eventsource(url)
    events = [s for s in seen if s["kind"] == "event"]
    # from the query's cursor: every later event once, then the [DONE] sentinel (type message)
    assert [int(e["id"]) for e in events if e["type"] != "message"] == list(range(3, last + 1))
    assert [e["type"] for e in events][-2:] == ["complete", "message"]
    assert events[-1]["data"] == "[DONE]"
    assert json.loads(events[0]["data"])["data"]["message"] == "line 1 \u2028 \U0001f680"
    # the server closed the stream; EventSource reconnected with Last-Event-ID = the complete
    # event's id (the header wins over the stale query), got 204, and stopped for good
    assert seen[-2:] == [{"kind": "error", "code": 204}, {"kind": "closed", "readyState": 2}]
    assert sum(1 for s in seen if s["kind"] == "event" and s["type"] == "complete") == 1

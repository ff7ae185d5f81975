"""Extra routes (the dev cluster's /_emulator/... endpoints) and the standalone entry point."""

from __future__ import annotations

import asyncio
import sys

import httpx
import pytest
from agentrun_devcluster.apiserver import EmulatedAPIServer
from agentrun_devcluster.testing import CRD_FILE
from aiohttp import web


async def test_add_route_before_start_and_not_after() -> None:
    server = EmulatedAPIServer()

    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"hello": request.match_info.get("who", "")})

    server.add_route("GET", "/_emulator/hello/{who}", hello)
    url = await server.start()
    try:
        async with httpx.AsyncClient(base_url=url) as http:
            assert (await http.get("/_emulator/hello/b")).json() == {"hello": "b"}
            assert (await http.get("/api/v1/namespaces")).status_code == 200
            assert (await http.get("/_emulator/nothing")).status_code == 404
        with pytest.raises(RuntimeError):
            server.add_route("GET", "/_emulator/late", hello)
    finally:
        await server.stop()


async def test_standalone_entry_point_serves_and_stops() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agentrun_devcluster.apiserver",
        "--crds",
        str(CRD_FILE),
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode().strip()
        assert line.startswith("EMULATED_APISERVER_URL=http://127.0.0.1:")
        url = line.split("=", 1)[1]
        async with httpx.AsyncClient(base_url=url) as http:
            listed = await http.get("/apis/agentrun.dev/v1alpha1/agentruns")
        assert listed.json()["kind"] == "AgentRunList"
    finally:
        proc.terminate()
        code = await asyncio.wait_for(proc.wait(), 30)
    assert code == 0

"""Every Kubernetes call has a client-side timeout (issue 11, defect 4): a half-open apiserver
(accepts, never answers) fails a plain call after its total timeout and a silent watch or log
follow after its read timeout, instead of hanging forever."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from agentrun_kube.client import ClientTimeouts, default_timeout, load_api_client
from agentrun_kube.errors import Unavailable
from agentrun_operator.kube_io import Kube
from kubernetes_asyncio import client


@pytest.fixture
async def half_open_server() -> AsyncIterator[str]:
    """A TCP server that accepts connections and never answers."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        for writer in held:
            writer.close()
        server.close()


def kubeconfig(tmp_path: Path, server: str) -> str:
    path = tmp_path / "kubeconfig"
    path.write_text(
        f"""apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "{server}"}}}}]
users: [{{name: u, user: {{token: t}}}}]
contexts: [{{name: x, context: {{cluster: c, user: u}}}}]
current-context: x
"""
    )
    return str(path)


def test_plain_calls_get_a_total_timeout_and_streams_a_read_timeout() -> None:
    timeouts = ClientTimeouts(request_seconds=7, connect_seconds=3, stream_read_seconds=99)
    plain = default_timeout(timeouts, [("labelSelector", "a=b")])
    assert (plain.total, plain.sock_connect, plain.sock_read) == (7, 3, None)
    for flag in ("watch", "follow"):
        stream = default_timeout(timeouts, [(flag, True)])
        assert (stream.total, stream.sock_connect, stream.sock_read) == (None, 3, 99)
    assert default_timeout(timeouts, [("watch", False)]).total == 7


async def test_a_plain_call_to_a_half_open_apiserver_fails_after_its_timeout(
    tmp_path: Path, half_open_server: str
) -> None:
    api = await load_api_client(
        kubeconfig(tmp_path, half_open_server),
        timeouts=ClientTimeouts(request_seconds=0.5, connect_seconds=0.5),
    )
    kube = Kube(api)
    started = time.monotonic()
    try:
        with pytest.raises(Unavailable):
            # The guard only keeps a regression from hanging the suite.
            await asyncio.wait_for(kube.get_run("default", "r"), 10)
    finally:
        await api.close()
    assert time.monotonic() - started < 5


async def test_a_silent_watch_fails_after_its_read_timeout(
    tmp_path: Path, half_open_server: str
) -> None:
    api = await load_api_client(
        kubeconfig(tmp_path, half_open_server),
        timeouts=ClientTimeouts(request_seconds=60, stream_read_seconds=0.5),
    )
    started = time.monotonic()
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(
                client.CoreV1Api(api).list_namespaced_pod(
                    "default", watch=True, _preload_content=False
                ),
                10,
            )
    finally:
        await api.close()
    assert time.monotonic() - started < 5

"""Stopping the emulator ends open watches and log streams promptly."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator
from datetime import datetime

import httpx
from agentrun_devcluster.testing import ClusterThread


class EndlessLogs:
    async def read_log(
        self,
        namespace: str,
        pod: str,
        container: str | None,
        *,
        follow: bool,
        since_time: datetime | None,
        tail_lines: int | None,
        timestamps: bool,
    ) -> AsyncIterator[bytes]:
        import asyncio

        while True:
            yield b"tick\n"
            await asyncio.sleep(0.05)


def _read_until_closed(url: str, params: dict[str, str], out: list[str]) -> None:
    try:
        with httpx.stream("GET", url, params=params, timeout=60) as r:
            for line in r.iter_lines():
                out.append(line)
    except httpx.HTTPError as exc:
        out.append(f"error: {type(exc).__name__}")
    out.append("closed")


def test_stop_ends_open_streams_quickly() -> None:
    cluster = ClusterThread(install_crds=False).start()
    try:
        cluster.server.set_pod_log_provider(EndlessLogs())
        http = httpx.Client(base_url=cluster.base_url)
        http.post(
            "/api/v1/namespaces/default/pods",
            json={
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "p"},
                "spec": {"nodeName": "n", "containers": [{"name": "c", "image": "i"}]},
            },
        )
        http.patch(
            "/api/v1/namespaces/default/pods/p/status",
            json={
                "status": {
                    "phase": "Running",
                    "containerStatuses": [{"name": "c", "state": {"running": {}}}],
                }
            },
            headers={"Content-Type": "application/merge-patch+json"},
        )
        http.close()
        watch_lines: list[str] = []
        log_lines: list[str] = []
        readers = [
            threading.Thread(
                target=_read_until_closed,
                args=(
                    f"{cluster.base_url}/api/v1/namespaces/default/configmaps",
                    {"watch": "1"},
                    watch_lines,
                ),
            ),
            threading.Thread(
                target=_read_until_closed,
                args=(
                    f"{cluster.base_url}/api/v1/namespaces/default/pods/p/log",
                    {"follow": "true"},
                    log_lines,
                ),
            ),
        ]
        for reader in readers:
            reader.start()
        deadline = time.monotonic() + 10
        while "tick" not in log_lines and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "tick" in log_lines
    finally:
        started = time.monotonic()
        cluster.stop()
        stop_seconds = time.monotonic() - started
    for reader in readers:
        reader.join(timeout=15)
        assert not reader.is_alive()
    assert stop_seconds < 10
    assert watch_lines[-1] == "closed"
    assert log_lines[-1] == "closed"

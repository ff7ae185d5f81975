"""Fixtures for the stream's integration tests: the emulated cluster, the API over real HTTP, and
a seeder that writes transcripts exactly as the operator does (its own TranscriptWriter, over a
chunk store talking to the emulated apiserver).

The API runs under uvicorn in a thread with its own loop (:class:`APIThread`), or as a real
``python -m agentrun_api.main`` process (:class:`APIProcess`) for the multi-process and SIGTERM
cases. Litestar's in-process TestClient cannot read endless streams (litestar issue 3654).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from agentrun_api.settings import APISettings
from agentrun_api.streaming.settings import StreamSettings
from agentrun_contract import names, resource
from agentrun_contract.resource import AgentRunTranscriptSpec
from agentrun_devcluster.testing import APIServerThread, ClusterThread
from agentrun_operator.transcript import TranscriptWriter

REPO_ROOT = Path(__file__).resolve().parents[3]
NAMESPACE = "default"
RUNS = f"/apis/{resource.GROUP}/{resource.VERSION}/namespaces/{NAMESPACE}/{resource.PLURAL}"
CHUNKS = (
    f"/apis/{resource.GROUP}/{resource.VERSION}/namespaces/{NAMESPACE}/{resource.TRANSCRIPT_PLURAL}"
)
MERGE = {"Content-Type": "application/merge-patch+json"}

FAST_STREAM = StreamSettings(
    heartbeat_seconds=0.5,
    upstream_idle_seconds=0.2,
    status_poll_seconds=0.3,
    watch_retry_seconds=0.1,
    drain_seconds=2,
)


class HttpChunkStore:
    """The operator's ChunkStore protocol over the emulated apiserver's REST API."""

    def __init__(self, http: httpx.AsyncClient, run_name: str, run_uid: str) -> None:
        self._http = http
        self._run = run_name
        self._uid = run_uid

    def _name(self, spec: AgentRunTranscriptSpec) -> str:
        if spec.gap:
            return names.transcript_gap_name(self._run)
        return names.transcript_chunk_name(self._run, spec.index)

    async def list_chunks(self) -> list[AgentRunTranscriptSpec]:
        r = await self._http.get(CHUNKS, params={"labelSelector": f"{names.LABEL_RUN}={self._run}"})
        r.raise_for_status()
        return [AgentRunTranscriptSpec.model_validate(i["spec"]) for i in r.json()["items"]]

    async def put_chunk(self, chunk: AgentRunTranscriptSpec, *, create: bool) -> None:
        name = self._name(chunk)
        if create:
            body = {
                "apiVersion": resource.API_VERSION,
                "kind": resource.TRANSCRIPT_KIND,
                "metadata": {
                    "name": name,
                    "labels": {names.LABEL_RUN: self._run},
                    "ownerReferences": [
                        {
                            "apiVersion": resource.API_VERSION,
                            "kind": resource.KIND,
                            "name": self._run,
                            "uid": self._uid,
                            "controller": True,
                            "blockOwnerDeletion": True,
                        }
                    ],
                },
                "spec": chunk.to_k8s(),
            }
            r = await self._http.post(CHUNKS, json=body)
        else:
            r = await self._http.patch(
                f"{CHUNKS}/{name}", json={"spec": chunk.to_k8s()}, headers=MERGE
            )
        r.raise_for_status()

    async def delete_chunk(self, index: int) -> None:
        r = await self._http.delete(f"{CHUNKS}/{names.transcript_chunk_name(self._run, index)}")
        r.raise_for_status()


class SeededRun:
    """One run whose transcript the test writes as the operator would."""

    def __init__(self, http: httpx.AsyncClient, name: str, uid: str, **writer: Any) -> None:
        self.http = http
        self.name = name
        self.job_id = names.job_id_for_run_name(name)
        self.uid = uid
        self.writer = TranscriptWriter(name, HttpChunkStore(http, name, uid), **writer)

    async def emit(self, event: str, data: dict[str, Any]) -> int:
        """Add one event and flush (one chunk write), like the operator's flush timer."""
        stream_event = self.writer.add(event, data)
        await self.flush()
        return stream_event.id

    async def log(self, message: str, *, flush: bool = True) -> int:
        stream_event = self.writer.add("log", {"message": message, "stream": "stdout"})
        if flush:
            await self.flush()
        return stream_event.id

    async def flush(self) -> None:
        await self.writer.flush()
        await self.patch_status({"transcript": self.writer.state().to_k8s()})

    async def finish(self, status: str = "succeeded", reason: str | None = None) -> int:
        last = self.writer.add(
            "complete",
            {"status": status, "job_id": self.job_id, "reason": reason, "error": None},
        )
        await self.flush()
        await self.patch_status({"phase": status.capitalize(), "reason": reason})
        return last.id

    async def patch_status(self, status: dict[str, Any]) -> None:
        r = await self.http.patch(
            f"{RUNS}/{self.name}/status", json={"status": status}, headers=MERGE
        )
        r.raise_for_status()


class Seeder:
    def __init__(self, base_url: str) -> None:
        self.http = httpx.AsyncClient(base_url=base_url, timeout=30)
        self._count = 0

    async def run(self, name: str | None = None, **writer: Any) -> SeededRun:
        self._count += 1
        name = name or f"run-{os.getpid()}x{self._count}x{int(time.time() * 1000) % 10**8}"
        body = {
            "apiVersion": resource.API_VERSION,
            "kind": resource.KIND,
            "metadata": {"name": name},
            "spec": {"prompt": "stream test"},
        }
        r = await self.http.post(RUNS, json=body)
        r.raise_for_status()
        return SeededRun(self.http, name, r.json()["metadata"]["uid"], **writer)

    async def delete_run(self, name: str) -> None:
        r = await self.http.delete(f"{RUNS}/{name}")
        r.raise_for_status()

    async def aclose(self) -> None:
        await self.http.aclose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class APIThread(APIServerThread):
    """The API over real HTTP in a thread, with access to its stream hub."""

    def __init__(self, settings: APISettings, *, send_buffer: int | None = None) -> None:
        super().__init__(settings, send_buffer=send_buffer)

    def call(self, fn: Any) -> Any:
        """Run ``fn()`` on the API's loop (to read the hub's state safely)."""

        async def _call() -> Any:
            return fn()

        return self.run(_call(), 10)

    @property
    def hub(self) -> Any:
        return self.app.state.stream_hub


class APIProcess:
    """A real ``python -m agentrun_api.main`` process."""

    def __init__(self, kubeconfig: Path, **env: str) -> None:
        self.port = free_port()
        self.metrics_port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        full_env = {
            **os.environ,
            "AGENTRUN_API_HOST": "127.0.0.1",
            "AGENTRUN_API_PORT": str(self.port),
            "AGENTRUN_API_METRICS_PORT": str(self.metrics_port),
            "AGENTRUN_API_KUBECONFIG": str(kubeconfig),
            "AGENTRUN_API_AUTH_ENABLED": "false",
            "AGENTRUN_API_LOG_LEVEL": "WARNING",
            "AGENTRUN_API_STREAM__HEARTBEAT_SECONDS": str(FAST_STREAM.heartbeat_seconds),
            "AGENTRUN_API_STREAM__STATUS_POLL_SECONDS": str(FAST_STREAM.status_poll_seconds),
            "AGENTRUN_API_STREAM__WATCH_RETRY_SECONDS": str(FAST_STREAM.watch_retry_seconds),
            **env,
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agentrun_api.main"],
            env=full_env,
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def wait_ready(self, timeout: float = 60) -> APIProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"API process exited: {err[-2000:]}")
            try:
                if httpx.get(self.base_url + "/livez", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("API process not ready")

    def metric(self, name: str) -> float:
        text = httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        raise KeyError(name)

    def terminate(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterThread]:
    with ClusterThread() as running:
        yield running


@pytest.fixture
async def seeder(cluster: ClusterThread) -> AsyncIterator[Seeder]:
    seeding = Seeder(cluster.base_url)
    yield seeding
    await seeding.aclose()


def api_settings(cluster: ClusterThread, **stream: Any) -> APISettings:
    return APISettings(
        auth_enabled=False,
        kubeconfig=str(cluster.kubeconfig),
        metrics_port=0,
        stream=FAST_STREAM.model_copy(update=stream),
    )


@pytest.fixture(scope="module")
def api(cluster: ClusterThread) -> Iterator[APIThread]:
    server = APIThread(api_settings(cluster)).start()
    yield server
    server.stop()

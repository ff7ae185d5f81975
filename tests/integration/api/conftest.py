"""Fixtures for the API's integration tests: an emulated cluster and the API over real HTTP.

The API runs under uvicorn in a thread with its own event loop (:class:`APIThread`), or as a
real ``agentrun api`` subprocess (:class:`APIProcess`) where two processes are needed.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from agentrun_api.settings import APISettings
from agentrun_devcluster.testing import APIServerThread, ClusterThread
from agentrun_webhooks.policy import Resolver, StaticResolver

REPO_ROOT = Path(__file__).resolve().parents[3]

#: Webhook hosts the tests use; no real DNS is ever asked.
TEST_RESOLVER = StaticResolver(
    {
        "example.com": ["93.184.215.14"],
        "hooks.example.com": ["93.184.215.14"],
        "internal.example.com": ["10.0.0.7"],
    }
)


class APIThread(APIServerThread):
    """The API over real HTTP in a thread, resolving webhook hosts with :data:`TEST_RESOLVER`."""

    def __init__(self, settings: APISettings, resolver: Resolver | None = TEST_RESOLVER) -> None:
        super().__init__(settings, webhook_resolver=resolver)

    def call(self, coro: Any, timeout: float = 30) -> Any:
        return self.run(coro, timeout)


class APIProcess:
    """A real ``python -m agentrun_api.main`` process, configured through its environment."""

    def __init__(self, env: dict[str, str]) -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        sock.close()
        self.base_url = f"http://127.0.0.1:{self.port}"
        full_env = {
            **os.environ,
            "AGENTRUN_API_HOST": "127.0.0.1",
            "AGENTRUN_API_PORT": str(self.port),
            "AGENTRUN_API_METRICS_PORT": "0",
            "AGENTRUN_API_LOG_LEVEL": "WARNING",
            **env,
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agentrun_api.main"],
            env=full_env,
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"API process exited: {err[-2000:]}")
            try:
                if httpx.get(self.base_url + "/livez", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("API process did not become ready")

    def stop(self) -> int:
        self.proc.terminate()
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterThread]:
    with ClusterThread() as running:
        yield running


_namespace_counter = iter(range(1, 1_000_000))


@pytest.fixture
def namespace(cluster: ClusterThread) -> str:
    """A fresh namespace per test, so runs of one test never show up in another's list."""
    name = f"api-test-{os.getpid()}-{next(_namespace_counter)}"
    response = httpx.post(
        f"{cluster.base_url}/api/v1/namespaces",
        json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return name


ApiFactory = Callable[..., APIThread]


@pytest.fixture
def make_api(cluster: ClusterThread, namespace: str) -> Iterator[ApiFactory]:
    """Start an API (auth off unless told) against the emulator in the test's namespace."""
    started: list[APIThread] = []

    def factory(resolver: Resolver | None = TEST_RESOLVER, **overrides: Any) -> APIThread:
        values: dict[str, Any] = {
            "namespace": namespace,
            "kubeconfig": str(cluster.kubeconfig),
            "auth_enabled": False,
            "metrics_port": 0,
            "cache_sync_timeout_seconds": 10,
        }
        values.update(overrides)
        api = APIThread(APISettings(**values), resolver).start()
        started.append(api)
        return api

    yield factory
    for api in started:
        api.stop()


@pytest.fixture
def api(make_api: ApiFactory) -> APIThread:
    return make_api()


@pytest.fixture
def http(api: APIThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api.base_url, timeout=30) as client:
        yield client

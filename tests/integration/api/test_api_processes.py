"""Real ``agentrun_api.main`` processes against the emulator: the two-replica idempotency race,
metrics on their own port, and a clean SIGTERM."""

from __future__ import annotations

import asyncio
import collections
import socket
from collections.abc import Iterator

import httpx
import pytest
from agentrun_devcluster.testing import ClusterThread

from .conftest import APIProcess

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def two_apis(cluster: ClusterThread, namespace: str) -> Iterator[list[APIProcess]]:
    env = {
        "AGENTRUN_API_KUBECONFIG": str(cluster.kubeconfig),
        "AGENTRUN_API_NAMESPACE": namespace,
        "AGENTRUN_API_AUTH_ENABLED": "false",
    }
    apis = [APIProcess(env), APIProcess(env)]
    try:
        for api in apis:
            api.wait_ready()
        yield apis
    finally:
        for api in apis:
            api.stop()


def test_200_concurrent_posts_with_one_key_over_two_processes_make_one_run(
    two_apis: list[APIProcess], cluster: ClusterThread, namespace: str
) -> None:
    async def race() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        two_apis[i % 2].base_url + "/api/v1/runs",
                        json={"prompt": "one run only", "session_id": "race"},
                        headers={"Idempotency-Key": "the-one-key"},
                    )
                    for i in range(200)
                )
            )

    responses = asyncio.run(race())
    codes = collections.Counter(r.status_code for r in responses)
    assert codes == {202: 1, 200: 199}, codes
    assert len({r.json()["job_id"] for r in responses}) == 1
    items = httpx.get(
        f"{cluster.base_url}/apis/agentrun.dev/v1alpha1/namespaces/{namespace}/agentruns",
        timeout=10,
    ).json()["items"]
    assert len(items) == 1


def test_metrics_port_and_clean_sigterm(cluster: ClusterThread, namespace: str) -> None:
    metrics_port = _free_port()
    api = APIProcess(
        {
            "AGENTRUN_API_KUBECONFIG": str(cluster.kubeconfig),
            "AGENTRUN_API_NAMESPACE": namespace,
            "AGENTRUN_API_AUTH_ENABLED": "false",
            "AGENTRUN_API_METRICS_PORT": str(metrics_port),
        }
    )
    try:
        api.wait_ready()
        assert httpx.post(api.base_url + "/api/v1/runs", json={"prompt": "x"}).status_code == 202
        text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
        assert 'route="/api/v1/runs",status="202"' in text
        assert "agentrun_api_runs_created_total 1.0" in text
        assert "agentrun_api_queued_runs 1.0" in text
        # /metrics is not served on the API port
        assert httpx.get(api.base_url + "/metrics").status_code == 404
    finally:
        code = api.stop()
    assert code == 0

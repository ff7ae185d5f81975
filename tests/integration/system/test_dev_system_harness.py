"""The DevSystem harness (the `system` fixture): full stack, second API replica, operator chaos."""

from __future__ import annotations

import signal
from typing import Any

import httpx
import pytest
from agentrun_devcluster.system import DevSystem, SyncKube

pytestmark = pytest.mark.slow


def wait_terminal(kube: SyncKube, poll_url: str, timeout: float = 60) -> Any:
    def probe() -> Any:
        body = httpx.get(poll_url, timeout=5).json()
        return body if body["status"] in ("succeeded", "failed", "cancelled") else None

    return kube.wait_for(f"{poll_url} to finish", probe, timeout=timeout, interval=0.2)


def test_system_runs_survive_operator_kill_and_second_api(system: DevSystem) -> None:
    kube = SyncKube(system.cluster.base_url)
    r = httpx.post(f"{system.api_url}/api/v1/runs", json={"prompt": "sleep=2"}, timeout=10)
    assert r.status_code == 202, r.text
    poll = r.json()["poll_url"]
    kube.wait_for(
        "a runner pod",
        lambda: kube.items(f"/api/v1/namespaces/{system.namespace}/pods"),
        timeout=30,
    )
    # the operator dies hard mid-run and comes back; the run still finishes, with one Job
    system.kill_operator(signal.SIGKILL)
    assert system.operator is None
    system.restart_operator()
    final = wait_terminal(kube, poll)
    assert final["status"] == "succeeded", system.logs()
    jobs = kube.items(f"/apis/batch/v1/namespaces/{system.namespace}/jobs")
    assert len(jobs) == 1

    # a second API replica sees the same run
    second = system.start_api()
    assert second != system.api_url
    job_id = final["job_id"]
    other = httpx.get(f"{second}/api/v1/runs/{job_id}", timeout=5)
    assert other.status_code == 200
    assert other.json()["status"] == "succeeded"

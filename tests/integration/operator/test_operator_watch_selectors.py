"""The operator lists and watches only agentrun's Pods and Jobs: the selector is applied by the
apiserver (counted at the emulator), not by kopf after receiving every object in the namespace."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from agentrun_devcluster.apiserver.traffic import TrafficCounter
from agentrun_devcluster.system import (
    free_port,
    operator_env,
    start_process,
    stop_process,
    wait_http_ok,
)
from agentrun_devcluster.testing import ClusterThread

NS = "default"
PODS = f"/api/v1/namespaces/{NS}/pods"
JOBS = f"/apis/batch/v1/namespaces/{NS}/jobs"
FOREIGN = 40
PADDING = "x" * 4096  # each foreign object carries 4 KiB the operator must never receive


def pod(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels, "annotations": {"pad": PADDING}},
        "spec": {"containers": [{"name": "c", "image": "x"}]},
    }


def job(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": labels, "annotations": {"pad": PADDING}},
        "spec": {
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "c", "image": "x", "command": ["true"]}],
                }
            }
        },
    }


@pytest.fixture
def traffic_cluster() -> Iterator[tuple[ClusterThread, TrafficCounter]]:
    # No Job controller or kubelet: the foreign objects must stay inert.
    cluster = ClusterThread()
    traffic = TrafficCounter()
    cluster.server.add_middleware(traffic.middleware)
    with cluster:
        yield cluster, traffic


def test_pods_and_jobs_are_selected_server_side(
    traffic_cluster: tuple[ClusterThread, TrafficCounter], tmp_path: Path
) -> None:
    cluster, traffic = traffic_cluster
    with httpx.Client(base_url=cluster.base_url, timeout=30) as http:
        for i in range(FOREIGN):
            http.post(PODS, json=pod(f"foreign-{i}", {"app": "other"})).raise_for_status()
            http.post(JOBS, json=job(f"foreign-{i}", {"app": "other"})).raise_for_status()
        ours = {"agentrun.dev/run": "run-x"}
        http.post(PODS, json=pod("run-x-pod", ours)).raise_for_status()
        http.post(JOBS, json=job("run-x", ours)).raise_for_status()

        env = operator_env(
            kubeconfig=cluster.kubeconfig,
            namespace=NS,
            public_base_url="http://127.0.0.1:9",
            runner_command=["true"],
            health_port=(health := free_port()),
            metrics_port=free_port(),
        )
        env.update(
            {
                "AGENTRUN_OPERATOR_LEADER_ELECTION__ENABLED": "false",
                # Short watch requests: each is counted (bytes included) when it ends.
                "AGENTRUN_OPERATOR_WATCH_SERVER_TIMEOUT_SECONDS": "1",
            }
        )
        log_path = tmp_path / "operator.log"
        proc = start_process([sys.executable, "-m", "agentrun_cli.main", "operator"], env, log_path)
        try:
            wait_http_ok(f"http://127.0.0.1:{health}/livez", 60, proc, log_path)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                watched = {
                    resource
                    for resource in ("pods", "jobs")
                    if traffic.total(
                        client="kopf", verbs=frozenset({"watch"}), resource=resource
                    ).requests
                    >= 2
                }
                if watched == {"pods", "jobs"}:
                    break
                time.sleep(0.2)
            else:
                pytest.fail("kopf never watched pods and jobs:\n" + log_path.read_text()[-3000:])
            # Watch events too: more foreign objects while the operator watches.
            for i in range(FOREIGN, 2 * FOREIGN):
                http.post(PODS, json=pod(f"foreign-{i}", {"app": "other"})).raise_for_status()
            time.sleep(2.5)  # two watch timeouts: the streams that saw them have ended
        finally:
            stop_process(proc)

    for resource in ("pods", "jobs"):
        seen = traffic.total(client="kopf", verbs=frozenset({"list", "watch"}), resource=resource)
        assert seen.queries, resource
        for query in seen.queries:
            assert parse_qs(query).get("labelSelector") == ["agentrun.dev/run"], (resource, query)
        # Our one object (a few KiB at most, sent in the list or on a watch) and nothing of
        # the 40 to 80 foreign ones (at least 160 KiB).
        assert 0 < seen.response_bytes < 3 * len(PADDING) * 4, (resource, seen.response_bytes)

"""The chart's rendered env starts the real API and operator processes.

Renders the chart, takes each Deployment's container env exactly as Kubernetes would give it
(fieldRefs resolved), points the processes at the emulated cluster instead of the in-cluster
account, and runs ``agentrun api`` / ``agentrun operator``: their probes answer, auth is on with
the mounted token, metrics serve, and the operator reconciles the namespace the chart told it
to (it creates the run's Job).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from agentrun_devcluster.testing import ClusterThread

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "tests" / "unit" / "chart"))

from chart_manifests import FULLNAME, container_env, find_helm, helm_template, named  # noqa: E402

NAMESPACE = "default"
# The `agentrun` console script, independent of PATH.
AGENTRUN = [sys.executable, "-c", "from agentrun_cli.main import main; raise SystemExit(main())"]
TOKEN = "chart-env-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def rendered_env(docs: list[dict[str, Any]], deployment: str, pod_name: str) -> dict[str, str]:
    refs = {"metadata.namespace": NAMESPACE, "metadata.name": pod_name}
    env = {}
    for name, entry in container_env(named(docs, "Deployment", deployment)).items():
        env[name] = (
            entry["value"]
            if "value" in entry
            else refs[entry["valueFrom"]["fieldRef"]["fieldPath"]]
        )
    return env


def wait_ok(url: str, timeout: float = 60) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        try:
            response = httpx.get(url, timeout=2)
            if response.status_code == 200:
                return response
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"{url} never answered 200"
        time.sleep(0.3)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[dict[str, Any]]:
    ports = {name: free_port() for name in ("api", "api_metrics", "op_health", "op_metrics")}
    docs = helm_template(
        find_helm(),
        namespace=NAMESPACE,
        sets=(
            "auth.existingSecret=tokens",
            f"api.settings.metricsPort={ports['api_metrics']}",
            f"operator.settings.metricsPort={ports['op_metrics']}",
            f"operator.settings.healthPort={ports['op_health']}",
            "operator.settings.leaderElection.leaseDurationSeconds=3",
            "operator.settings.leaderElection.renewSeconds=1",
            "operator.settings.leaderElection.retrySeconds=1",
        ),
    )
    tokens = tmp_path / "tokens"
    tokens.mkdir()
    (tokens / "ci").write_text(TOKEN)
    base = {k: v for k, v in os.environ.items() if not k.startswith("AGENTRUN_")}
    with ClusterThread() as cluster:
        api_env = {
            **base,
            **rendered_env(docs, f"{FULLNAME}-api", "api-0"),
            # What differs outside a pod: the cluster, the Secret mount and the bind address.
            "AGENTRUN_API_KUBECONFIG": str(cluster.kubeconfig),
            "AGENTRUN_API_TOKENS_DIR": str(tokens),
            "AGENTRUN_API_HOST": "127.0.0.1",
            "AGENTRUN_API_PORT": str(ports["api"]),
        }
        op_env = {
            **base,
            **rendered_env(docs, f"{FULLNAME}-operator", "operator-0"),
            "AGENTRUN_OPERATOR_KUBECONFIG": str(cluster.kubeconfig),
            "AGENTRUN_OPERATOR_HEALTH_HOST": "127.0.0.1",
        }
        logs = {name: (tmp_path / f"{name}.log").open("w") for name in ("api", "operator")}
        procs = [
            subprocess.Popen(
                [*AGENTRUN, name], env=env, stdout=logs[name], stderr=subprocess.STDOUT
            )
            for name, env in (("api", api_env), ("operator", op_env))
        ]
        try:
            yield {**ports, "cluster": cluster.base_url, "logs": tmp_path}
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            for handle in logs.values():
                handle.close()


def test_processes_start_from_the_rendered_env(processes: dict[str, Any]) -> None:
    api = f"http://127.0.0.1:{processes['api']}"
    assert wait_ok(f"{api}/livez").status_code == 200
    assert wait_ok(f"{api}/health").json()["status"] == "healthy"
    health = wait_ok(f"http://127.0.0.1:{processes['op_health']}/health").json()
    assert health["status"] == "healthy"
    wait_ok(f"http://127.0.0.1:{processes['op_health']}/livez")
    assert "# HELP" in wait_ok(f"http://127.0.0.1:{processes['api_metrics']}/metrics").text
    assert "# HELP" in wait_ok(f"http://127.0.0.1:{processes['op_metrics']}/metrics").text

    body = {
        "prompt": "Analyze the quarterly sales data",
        "timeout": 3600,
        "session_id": "project-alpha",
    }
    assert httpx.post(f"{api}/api/v1/runs", json=body, timeout=10).status_code == 401
    created = httpx.post(
        f"{api}/api/v1/runs", json=body, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
    )
    assert created.status_code == 202, created.text
    run_name = created.json()["job_id"].replace("run_", "run-", 1)

    # The operator reconciles the namespace the chart gave it: the run's Job appears, with the
    # runner settings the chart passed (ServiceAccount, image, no token).
    job_url = f"{processes['cluster']}/apis/batch/v1/namespaces/{NAMESPACE}/jobs/{run_name}"
    deadline = time.monotonic() + 60
    while True:
        response = httpx.get(job_url, timeout=5)
        if response.status_code == 200:
            break
        assert time.monotonic() < deadline, (
            "the operator never created the Job; its log:\n"
            + (processes["logs"] / "operator.log").read_text()[-3000:]
        )
        time.sleep(0.5)
    pod = response.json()["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "agentrun-runner"
    assert pod["automountServiceAccountToken"] is False
    assert pod["containers"][0]["image"] == "ghcr.io/agentrun/runner:0.1.0"
    assert pod["containers"][0]["envFrom"] == [{"secretRef": {"name": "agentrun-llm-credentials"}}]

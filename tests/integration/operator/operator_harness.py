"""Harness for operator integration tests: the emulated cluster with its controllers, and the
operator as a subprocess (kopf must not share pytest's loop), with test-sized settings."""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from agentrun_contract import names
from agentrun_contract.stream import StreamEvent, decode_transcript
from agentrun_devcluster.system import (
    TEST_OPERATOR_ENV,
    TINY_RUNNER_COMMAND,
    ControlledCluster,
    SyncKube,
    free_port,
    operator_env,
    start_process,
    stop_process,
    wait_http_ok,
)

NS = "default"
RUNS = f"/apis/agentrun.dev/v1alpha1/namespaces/{NS}/agentruns"
CHUNKS = f"/apis/agentrun.dev/v1alpha1/namespaces/{NS}/agentruntranscripts"
RESULTS = f"/apis/agentrun.dev/v1alpha1/namespaces/{NS}/agentrunresults"
JOBS = f"/apis/batch/v1/namespaces/{NS}/jobs"
PODS = f"/api/v1/namespaces/{NS}/pods"
SECRETS = f"/api/v1/namespaces/{NS}/secrets"
CREDENTIALS = "agentrun-llm-credentials"

FAST_ENV = {
    **TEST_OPERATOR_ENV,
    "AGENTRUN_OPERATOR_RESYNC_SECONDS": "0.5",
    "AGENTRUN_OPERATOR_LOG_RECONNECT_SECONDS": "0.2",
    "AGENTRUN_OPERATOR_TRANSCRIPT_FLUSH_SECONDS": "0.2",
    "AGENTRUN_OPERATOR_TERMINATION_GRACE_PERIOD_SECONDS": "2",
    "AGENTRUN_OPERATOR_LOG_LEVEL": "INFO",
}


class OperatorProcess:
    """One `agentrun operator` process against ``cluster``."""

    def __init__(
        self, cluster: ControlledCluster, workdir: Path, env: Mapping[str, str], tag: str = "0"
    ) -> None:
        self.cluster = cluster
        self.log_path = workdir / f"operator-{tag}.log"
        self.health_port = free_port()
        full = operator_env(
            kubeconfig=cluster.kubeconfig,
            namespace=NS,
            public_base_url="http://127.0.0.1:9",
            runner_command=list(TINY_RUNNER_COMMAND),
            health_port=self.health_port,
            metrics_port=free_port(),
        )
        full.update(FAST_ENV)
        full.update(env)
        self.proc: subprocess.Popen[bytes] = start_process(
            [sys.executable, "-m", "agentrun_cli.main", "operator"], full, self.log_path
        )
        wait_http_ok(f"http://127.0.0.1:{self.health_port}/livez", 60, self.proc, self.log_path)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        stop_process(self.proc, sig, timeout=15)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def make_run(kube: SyncKube, name: str, prompt: str = "hello", **spec: Any) -> dict[str, Any]:
    body = {
        "apiVersion": "agentrun.dev/v1alpha1",
        "kind": "AgentRun",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"prompt": prompt, **spec},
    }
    result: dict[str, Any] = kube.create(RUNS, body)
    return result


def create_credentials(kube: SyncKube) -> None:
    kube.create(
        SECRETS,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": CREDENTIALS, "namespace": NS},
            "stringData": {"OPENAI_API_KEY": "stub"},
        },
    )


def get_run(kube: SyncKube, name: str) -> dict[str, Any]:
    result: dict[str, Any] = kube.get(f"{RUNS}/{name}")
    return result


def wait_phase(
    kube: SyncKube,
    name: str,
    phases: set[str],
    timeout: float = 60,
    logs: Callable[[], str] | None = None,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    run: dict[str, Any] = {}
    while time.monotonic() < deadline:
        run = get_run(kube, name)
        if (run.get("status") or {}).get("phase") in phases:
            return run
        time.sleep(0.1)
    detail = logs()[-6000:] if logs else ""
    raise AssertionError(f"{name} not in {phases} after {timeout}s: {run.get('status')}\n{detail}")


def wait_transcript_complete(kube: SyncKube, name: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    run: dict[str, Any] = {}
    while time.monotonic() < deadline:
        run = get_run(kube, name)
        if ((run.get("status") or {}).get("transcript") or {}).get("complete"):
            return run
        time.sleep(0.1)
    raise AssertionError(f"{name}: transcript never complete: {run.get('status')}")


def transcript(kube: SyncKube, name: str) -> list[StreamEvent]:
    items = kube.items(CHUNKS, labelSelector=f"{names.LABEL_RUN}={name}")
    events: list[StreamEvent] = []
    for item in items:
        events.extend(decode_transcript(item["spec"].get("events") or ""))
    return sorted(events, key=lambda e: e.id)


def jobs_of(kube: SyncKube, name: str) -> list[dict[str, Any]]:
    return kube.items(JOBS, labelSelector=f"{names.LABEL_RUN}={name}")


def new_workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="agentrun-operator-it-"))

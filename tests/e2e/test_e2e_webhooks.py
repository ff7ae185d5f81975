"""End-to-end webhooks on a real cluster (opt in: ``pytest --e2e``).

Needs KUBECONFIG (a cluster where you may create namespaces and CRDs) and AGENTRUN_E2E_IMAGE
(the runner image). No LLM is needed: the runs end by timeout, by cancel and by a missing
agent file before any model call.

As in test_e2e_operator.py, the operator runs as a local process against the cluster, in a
fresh namespace, so the receiver can listen on 127.0.0.1 (the policy's loopback switch, as in
``agentrun dev``). Every webhook must arrive signed (verified with standardwebhooks), once
per delivery, and the WEBHOOK printer column must show ``delivered``.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from agentrun_webhooks.receiver import WebhookReceiver, payload_of

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO / "deploy" / "crds" / "agentrun.dev.yaml"


def kubectl(*args: str, input_: str | None = None, check: bool = True) -> str:
    result = subprocess.run(
        ["kubectl", *args], input=input_, capture_output=True, text=True, timeout=120
    )
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)}: {result.stderr}")
    return result.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Setup:
    def __init__(self, namespace: str, workdir: Path, receiver: WebhookReceiver) -> None:
        self.ns = namespace
        self.workdir = workdir
        self.receiver = receiver
        self.operator: subprocess.Popen[bytes] | None = None

    def start_operator(self) -> None:
        health = free_port()
        env = {
            **os.environ,
            "AGENTRUN_OPERATOR_NAMESPACES": json.dumps([self.ns]),
            "AGENTRUN_OPERATOR_RUNNER_IMAGE": os.environ["AGENTRUN_E2E_IMAGE"],
            "AGENTRUN_OPERATOR_LEADER_ELECTION__ENABLED": "false",
            "AGENTRUN_OPERATOR_HEALTH_HOST": "127.0.0.1",
            "AGENTRUN_OPERATOR_HEALTH_PORT": str(health),
            "AGENTRUN_OPERATOR_METRICS_PORT": str(free_port()),
            "AGENTRUN_OPERATOR_RESYNC_SECONDS": "2",
            "AGENTRUN_OPERATOR_PUBLIC_BASE_URL": "https://agents.example.com",
            "AGENTRUN_OPERATOR_WEBHOOK_POLICY__ALLOW_LOOPBACK": "true",
            "AGENTRUN_OPERATOR_WEBHOOK__SIGNING_SECRETS": json.dumps([self.receiver.secret]),
            "AGENTRUN_OPERATOR_WEBHOOK__RETRY_SCHEDULE_SECONDS": "[0, 1, 2]",
        }
        log = (self.workdir / "operator.log").open("ab")
        self.operator = subprocess.Popen(
            [sys.executable, "-m", "agentrun_cli.main", "operator"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{health}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert self.operator.poll() is None, self.logs()
            time.sleep(0.3)
        raise AssertionError(f"operator not healthy: {self.logs()}")

    def logs(self) -> str:
        path = self.workdir / "operator.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def create_run(self, name: str, **spec: Any) -> None:
        body = {
            "apiVersion": "agentrun.dev/v1alpha1",
            "kind": "AgentRun",
            "metadata": {"name": name, "namespace": self.ns},
            "spec": {
                "prompt": "Say hello.",
                "webhookUrl": self.receiver.url_for(name),
                **spec,
            },
        }
        kubectl("apply", "-f", "-", input_=json.dumps(body))

    def webhook_state(self, name: str) -> dict[str, Any]:
        run = json.loads(kubectl("get", "agentrun", name, "-n", self.ns, "-o", "json"))
        return dict((run.get("status") or {}).get("webhook") or {})


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    kubectl("apply", "-f", str(CRDS))
    kubectl("wait", "--for=condition=Established", "crd/agentruns.agentrun.dev", "--timeout=60s")
    ns = f"agentrun-e2e-wh-{secrets.token_hex(3)}"
    kubectl("create", "namespace", ns)
    kubectl("create", "serviceaccount", "agentrun-runner", "-n", ns)
    # A placeholder key: these runs end before any model call.
    kubectl(
        "create",
        "secret",
        "generic",
        "agentrun-llm-credentials",
        "-n",
        ns,
        "--from-literal=OPENAI_API_KEY=sk-e2e-placeholder",
    )
    receiver = WebhookReceiver().start()
    env = Setup(ns, tmp_path, receiver)
    try:
        yield env
    finally:
        if env.operator is not None:
            env.operator.terminate()
            try:
                env.operator.wait(20)
            except subprocess.TimeoutExpired:
                env.operator.kill()
        receiver.stop()
        kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_e2e_webhooks_signed_for_timeout_cancel_and_failure(setup: Setup) -> None:
    setup.start_operator()
    # timeoutSeconds counts from the Job's start, image pull included: 1 s always runs out
    setup.create_run("wh-timeout", timeoutSeconds=1)
    setup.create_run("wh-bad-input", agentFile="no-such-file.yaml", timeoutSeconds=600)
    setup.create_run("wh-cancel", timeoutSeconds=600)
    kubectl(
        "patch",
        "agentrun",
        "wh-cancel",
        "-n",
        setup.ns,
        "--type=merge",
        "-p",
        '{"spec": {"cancelRequested": true}}',
    )
    expected = {
        "wh-timeout": ("failed", "timeout"),
        "wh-bad-input": ("failed", "bad_input"),
        "wh-cancel": ("cancelled", "cancelled"),
    }
    for name, (status, reason) in expected.items():
        try:
            (item,) = setup.receiver.wait_for(1, timeout=600, path=f"/hook/{name}")
        except AssertionError:
            raise AssertionError(setup.logs()) from None
        assert item.verification_error is None, item.verification_error
        body = payload_of(item)
        assert (body["job_id"], body["status"], body["reason"]) == (name, status, reason)
        assert body["result"] is None
        assert body["error"]
        assert body["result_url"] == f"https://agents.example.com/api/v1/runs/{name}/result"
        deadline = time.monotonic() + 60
        while setup.webhook_state(name).get("state") != "delivered":
            assert time.monotonic() < deadline, setup.webhook_state(name)
            time.sleep(1)
        assert setup.webhook_state(name)["id"] == item.headers["webhook-id"]
    table = kubectl("get", "agentruns", "-n", setup.ns)
    header, *rows = table.strip().splitlines()
    column = header.index("WEBHOOK")
    assert all(row[column:].split()[0] == "delivered" for row in rows), table
    time.sleep(3)  # nothing is sent twice once recorded as delivered
    assert len(setup.receiver.requests()) == len(expected)

"""End to end on a real cluster: the runner image as the operator runs it, without the operator.

Opt in with ``--e2e``. Needs ``KUBECONFIG`` and ``AGENTRUN_E2E_IMAGE`` (the runner image,
runner-image/Dockerfile); optional ``AGENTRUN_E2E_PULL_POLICY`` (default IfNotPresent; ``Never``
for kind-loaded images). kubectl: .tools/bin (tools/install-kube-tools) or PATH.

In a fresh namespace (deleted at the end):
- two stub LLMs (agentrun_devcluster.stub_llm, which the runner image carries along with its
  aiohttp dependency): a prompt one and one that never answers within the test;
- a Job shaped like the operator's (restricted security context, read-only root, uid 65534, an
  emptyDir /tmp, the input Secret, credentials via envFrom, explicit ``command``) with a
  ConfigMap mounted over /agents: it succeeds; every log line is an event of this run; the
  result reads back exactly; the termination message says success;
- the same Job against the silent stub with a short activeDeadlineSeconds and a long grace
  period: at the deadline the pod gets SIGTERM and the runner writes ``interrupted`` and exits at
  once, far within the grace period (issue 5: a plain entrypoint ran through all of it).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agentrun_contract import runner as contract
from agentrun_contract.runner import parse_event_line

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
NONCE = "e2e-nonce-" + secrets.token_hex(4)
ANSWER = "E2E line one\n\n  line three ünïcode\nlast line"
GRACE_SECONDS = 120
DEADLINE_SECONDS = 45
AGENTS_YAML = """\
framework: praisonai
topic: placeholder
roles:
  analyst:
    role: Analyst
    goal: Answer the task
    backstory: You answer tasks for the agentrun e2e test.
    tasks:
      main_task:
        description: "{topic}"
        expected_output: An answer.
"""


def kubectl_binary() -> str:
    local = REPO / ".tools" / "bin" / "kubectl"
    if local.is_file():
        return str(local)
    found = shutil.which("kubectl")
    if not found:
        pytest.fail("kubectl not found: run tools/install-kube-tools", pytrace=False)
    return found


def kubectl(namespace: str, *args: str, stdin: str | None = None, check: bool = True) -> str:
    proc = subprocess.run(
        [kubectl_binary(), "-n", namespace, *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=600,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def apply(namespace: str, *objects: dict[str, Any]) -> None:
    kubectl(
        namespace,
        "apply",
        "-f",
        "-",
        stdin=json.dumps({"kind": "List", "apiVersion": "v1", "items": list(objects)}),
    )


def restricted_container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def pod_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": 65534,
        "runAsGroup": 65534,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def stub_objects(name: str, image: str, pull: str, delay: float) -> list[dict[str, Any]]:
    labels = {"app.kubernetes.io/name": name}
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "securityContext": pod_security(),
                        "automountServiceAccountToken": False,
                        "containers": [
                            {
                                "name": "stub",
                                "image": image,
                                "imagePullPolicy": pull,
                                "command": [
                                    "python",
                                    "-m",
                                    "agentrun_devcluster.stub_llm",
                                    "--host",
                                    "0.0.0.0",
                                    "--port",
                                    "8011",
                                    "--delay-seconds",
                                    str(delay),
                                    "--answer",
                                    ANSWER,
                                ],
                                "ports": [{"containerPort": 8011}],
                                "readinessProbe": {"tcpSocket": {"port": 8011}},
                                "securityContext": restricted_container_security(),
                            }
                        ],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name},
            "spec": {"selector": labels, "ports": [{"port": 8011, "targetPort": 8011}]},
        },
    ]


def runner_job(
    name: str, image: str, pull: str, credentials: str, deadline: int | None
) -> dict[str, Any]:
    env = [
        {"name": contract.ENV_RUN_ID, "value": f"run_{name}"},
        {"name": contract.ENV_NONCE, "value": NONCE},
        {"name": contract.ENV_PROMPT_FILE, "value": contract.PROMPT_PATH},
        {"name": contract.ENV_AGENT_DIR, "value": contract.AGENT_DIR},
        {"name": contract.ENV_AGENT_FILE, "value": "team.yaml"},
        {"name": contract.ENV_FRAMEWORK, "value": "praisonai"},
        {"name": contract.ENV_TERMINATION_MESSAGE_PATH, "value": contract.TERMINATION_MESSAGE_PATH},
        {"name": contract.ENV_CREDENTIALS_SECRET, "value": credentials},
    ]
    spec: dict[str, Any] = {
        "backoffLimit": 0,
        "template": {
            "metadata": {"labels": {"agentrun-e2e": name}},
            "spec": {
                "restartPolicy": "Never",
                "automountServiceAccountToken": False,
                "terminationGracePeriodSeconds": GRACE_SECONDS,
                "securityContext": pod_security(),
                "containers": [
                    {
                        "name": contract.CONTAINER_NAME,
                        "image": image,
                        "imagePullPolicy": pull,
                        "command": list(contract.RUNNER_COMMAND),
                        "env": env,
                        "envFrom": [{"secretRef": {"name": credentials}}],
                        "terminationMessagePolicy": "FallbackToLogsOnError",
                        "securityContext": restricted_container_security(),
                        "volumeMounts": [
                            {"name": "input", "mountPath": contract.INPUT_DIR, "readOnly": True},
                            {"name": "agents", "mountPath": contract.AGENT_DIR, "readOnly": True},
                            {"name": "tmp", "mountPath": contract.TMP_DIR},
                        ],
                    }
                ],
                "volumes": [
                    {"name": "input", "secret": {"secretName": "runner-input"}},
                    {"name": "agents", "configMap": {"name": "runner-agents"}},
                    {"name": "tmp", "emptyDir": {}},
                ],
            },
        },
    }
    if deadline is not None:
        spec["activeDeadlineSeconds"] = deadline
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name}, "spec": spec}


def credentials_secret(name: str, stub: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "stringData": {
            "OPENAI_API_KEY": "stub",
            "OPENAI_BASE_URL": f"http://{stub}:8011/v1",
            "MODEL_NAME": "openai/agentrun-stub",
        },
    }


@pytest.fixture(scope="module")
def namespace() -> Iterator[str]:
    name = "agentrun-e2e-runner-" + secrets.token_hex(3)
    subprocess.run([kubectl_binary(), "create", "namespace", name], check=True, timeout=60)
    try:
        image = os.environ["AGENTRUN_E2E_IMAGE"]
        pull = os.environ.get("AGENTRUN_E2E_PULL_POLICY", "IfNotPresent")
        apply(
            name,
            *stub_objects("stub-llm", image, pull, 0),
            *stub_objects("silent-llm", image, pull, 3600),
            credentials_secret("llm-prompt", "stub-llm"),
            credentials_secret("llm-silent", "silent-llm"),
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "runner-input"},
                "stringData": {contract.PROMPT_KEY: "Analyze the quarterly sales data"},
            },
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "runner-agents"},
                "data": {"team.yaml": AGENTS_YAML},
            },
        )
        for stub in ("stub-llm", "silent-llm"):
            kubectl(name, "rollout", "status", f"deployment/{stub}", "--timeout=300s")
        yield name
    finally:
        subprocess.run(
            [kubectl_binary(), "delete", "namespace", name, "--wait=false"],
            check=False,
            timeout=120,
        )


def pod_of(namespace: str, job: str, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pods = json.loads(
            kubectl(namespace, "get", "pods", "-l", f"agentrun-e2e={job}", "-o", "json")
        )["items"]
        if pods:
            return dict(pods[0])
        time.sleep(1)
    raise AssertionError(f"no pod for job {job}")


def wait_running(namespace: str, job: str, timeout: float = 300) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pod = pod_of(namespace, job)
        if pod["status"].get("phase") in ("Running", "Succeeded", "Failed"):
            return str(pod["metadata"]["name"])
        time.sleep(1)
    raise AssertionError(f"the pod of {job} never ran")


def events(lines: list[str], job: str) -> list[Any]:
    parsed = [parse_event_line(line, run_id=f"run_{job}", nonce=NONCE) for line in lines]
    assert all(p is not None for p in parsed), [
        line for line, p in zip(lines, parsed, strict=True) if p is None
    ][:5]
    return [p for p in parsed if p is not None]


def test_runner_job_succeeds_with_configmap_agents(namespace: str) -> None:
    image = os.environ["AGENTRUN_E2E_IMAGE"]
    pull = os.environ.get("AGENTRUN_E2E_PULL_POLICY", "IfNotPresent")
    apply(namespace, runner_job("ok", image, pull, "llm-prompt", None))
    kubectl(namespace, "wait", "--for=condition=Complete", "job/ok", "--timeout=600s")
    pod = pod_of(namespace, "ok")
    logs = kubectl(namespace, "logs", pod["metadata"]["name"]).splitlines()
    parsed = events(logs, "ok")
    assert [e.seq for e in parsed] == list(range(len(parsed)))
    assert parsed[0].type == "start"
    assert parsed[0].data.agent_file == "team.yaml"
    result = "".join(e.data.text for e in parsed if e.type == "result")
    assert result == "### PraisonAI Output ###\n" + ANSWER
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 0
    assert terminated["message"].startswith("success:")


def test_deadline_sigterm_interrupts_at_once(namespace: str) -> None:
    image = os.environ["AGENTRUN_E2E_IMAGE"]
    pull = os.environ.get("AGENTRUN_E2E_PULL_POLICY", "IfNotPresent")
    apply(namespace, runner_job("slow", image, pull, "llm-silent", DEADLINE_SECONDS))
    pod = wait_running(namespace, "slow")
    running_seen = time.monotonic()
    # Follow the log from now until the container ends: the last line must be `interrupted`.
    follow = subprocess.Popen(
        [kubectl_binary(), "-n", namespace, "logs", "-f", pod],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert follow.stdout is not None
    lines = [line.rstrip("\n") for line in follow.stdout]
    ended = time.monotonic()
    follow.wait(timeout=60)
    job = json.loads(kubectl(namespace, "get", "job/slow", "-o", "json"))
    conditions = {c["type"]: c for c in job["status"].get("conditions", [])}
    reasons = {c.get("reason") for c in conditions.values()}
    assert "DeadlineExceeded" in reasons, conditions
    parsed = events(lines, "slow")
    assert parsed[-1].type == "interrupted", parsed[-3:]
    # The deadline counts from the Job's start, which is before the pod was seen running: with
    # the handler the log ends about DEADLINE_SECONDS after that; without it, it would run on
    # through the grace period (DEADLINE + GRACE after the Job's start).
    waited = ended - running_seen
    assert waited < DEADLINE_SECONDS + GRACE_SECONDS / 2, waited

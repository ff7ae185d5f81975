"""End to end on a real cluster: install the Helm chart and run the seed's request to completion.

Opt in with ``--e2e``. Needs:
- ``KUBECONFIG``: any cluster (kind, k3d, a real one) where images below can be pulled;
- ``AGENTRUN_E2E_IMAGE``: the runner image (runner-image/Dockerfile);
- ``AGENTRUN_E2E_API_IMAGE`` / ``AGENTRUN_E2E_OPERATOR_IMAGE``: deploy/docker/Dockerfile's
  ``api`` and ``operator`` targets;
- optional ``AGENTRUN_E2E_PULL_POLICY`` (default IfNotPresent; ``Never`` for kind-loaded images);
- optional ``OPENAI_API_KEY`` (+ ``OPENAI_BASE_URL``, ``MODEL_NAME``): a real LLM. Without it,
  the stub LLM (agentrun_devcluster.stub_llm, shipped in the operator image's wheel with its
  aiohttp dependency) runs in the test namespace and the runners talk to it.
helm and kubectl: .tools/bin (tools/install-kube-tools) or PATH.

Everything lives in a fresh namespace, deleted at the end. The CRDs are installed by the chart
unless they already exist outside Helm (another install), then the chart skips them.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "agentrun"
RUN_DEADLINE_SECONDS = 900
SEED_REQUEST = {
    "prompt": "Analyze the quarterly sales data",
    "timeout": 3600,
    "webhook_url": "https://example.com/callback",
    "session_id": "project-alpha",
}


def binary(name: str) -> str:
    local = REPO / ".tools" / "bin" / name
    if local.is_file():
        return str(local)
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} not found: run tools/install-kube-tools", pytrace=False)
    return found


def required_env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"set {name} for the chart e2e test (see the module docstring)", pytrace=False)
    return value


def split_image(ref: str) -> tuple[str, str]:
    """'repo/name:tag' -> ('repo/name', 'tag'); a registry port is not a tag."""
    head, _, tail = ref.rpartition(":")
    if head and "/" not in tail:
        return head, tail
    return ref, "latest"


def run(*args: str, check: bool = True, stdin: str | None = None) -> str:
    proc = subprocess.run(
        list(args), capture_output=True, text=True, input=stdin, timeout=600, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Install:
    namespace: str
    base_url: str
    token: str


def stub_llm_manifest(namespace: str, image: str, pull_policy: str) -> str:
    """The stub LLM as a Deployment + Service, restricted Pod Security like everything else."""
    labels = {"app.kubernetes.io/name": "agentrun-e2e-stub-llm"}
    security = {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "stub-llm", "namespace": namespace},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 65532,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "stub-llm",
                            "image": image,
                            "imagePullPolicy": pull_policy,
                            "args": [
                                "python",
                                "-m",
                                "agentrun_devcluster.stub_llm",
                                "--host",
                                "0.0.0.0",
                                "--port",
                                "8080",
                            ],
                            "ports": [{"containerPort": 8080}],
                            "readinessProbe": {"tcpSocket": {"port": 8080}},
                            "securityContext": security,
                        }
                    ],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "stub-llm", "namespace": namespace},
        "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": [deployment, service]})


@pytest.fixture(scope="module")
def install() -> Iterator[Install]:
    helm, kubectl = binary("helm"), binary("kubectl")
    required_env("KUBECONFIG")
    runner_image = split_image(required_env("AGENTRUN_E2E_IMAGE"))
    api_image = split_image(required_env("AGENTRUN_E2E_API_IMAGE"))
    operator_ref = required_env("AGENTRUN_E2E_OPERATOR_IMAGE")
    operator_image = split_image(operator_ref)
    pull = os.environ.get("AGENTRUN_E2E_PULL_POLICY", "IfNotPresent")

    namespace = f"agentrun-e2e-{secrets.token_hex(3)}"
    release = "agentrun"
    token = secrets.token_hex(24)
    forward: subprocess.Popen[bytes] | None = None
    run(kubectl, "create", "namespace", namespace)
    try:
        run(
            kubectl,
            "label",
            "namespace",
            namespace,
            "pod-security.kubernetes.io/enforce=restricted",
        )
        run(
            kubectl,
            "-n",
            namespace,
            "create",
            "secret",
            "generic",
            "agentrun-api-tokens",
            f"--from-literal=e2e={token}",
        )
        egress: list[str] = []
        if os.environ.get("OPENAI_API_KEY"):
            literals = [f"--from-literal=OPENAI_API_KEY={os.environ['OPENAI_API_KEY']}"]
            for extra in ("OPENAI_BASE_URL", "MODEL_NAME"):
                if os.environ.get(extra):
                    literals.append(f"--from-literal={extra}={os.environ[extra]}")
        else:
            run(kubectl, "apply", "-f", "-", stdin=stub_llm_manifest(namespace, operator_ref, pull))
            run(kubectl, "-n", namespace, "rollout", "status", "deploy/stub-llm", "--timeout=300s")
            literals = [
                "--from-literal=OPENAI_API_KEY=stub-key",
                f"--from-literal=OPENAI_BASE_URL=http://stub-llm.{namespace}.svc/v1",
            ]
            # Runner egress is closed by default: open the in-cluster stub LLM (the documented
            # escape hatch for an in-cluster model server).
            stub_peer = {
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": "agentrun-e2e-stub-llm"}}
            }
            egress = [
                "--set-json",
                "runner.networkPolicy.extraEgress="
                + json.dumps([{"to": [stub_peer], "ports": [{"protocol": "TCP", "port": 8080}]}]),
            ]
        run(
            kubectl,
            "-n",
            namespace,
            "create",
            "secret",
            "generic",
            "agentrun-llm-credentials",
            *literals,
        )

        crd = run(kubectl, "get", "crd", "agentruns.agentrun.dev", "-o", "json", check=False)
        owned_elsewhere = bool(crd.strip()) and (
            json.loads(crd)["metadata"].get("annotations", {}).get("meta.helm.sh/release-namespace")
            != namespace
        )
        run(
            helm,
            "install",
            release,
            str(CHART),
            "--namespace",
            namespace,
            "--set",
            f"crds.enabled={str(not owned_elsewhere).lower()}",
            "--set",
            "crds.keep=false",
            "--set",
            "auth.existingSecret=agentrun-api-tokens",
            "--set",
            f"api.image.repository={api_image[0]}",
            "--set",
            f"api.image.tag={api_image[1]}",
            "--set",
            f"api.image.pullPolicy={pull}",
            "--set",
            f"operator.image.repository={operator_image[0]}",
            "--set",
            f"operator.image.tag={operator_image[1]}",
            "--set",
            f"operator.image.pullPolicy={pull}",
            "--set",
            f"runner.image.repository={runner_image[0]}",
            "--set",
            f"runner.image.tag={runner_image[1]}",
            "--set",
            f"runner.image.pullPolicy={pull}",
            *egress,
            "--wait",
            "--timeout",
            "10m",
        )
        port = free_port()
        forward = subprocess.Popen(
            [kubectl, "-n", namespace, "port-forward", f"svc/{release}-api", f"{port}:8005"],
            stdout=subprocess.DEVNULL,
            stderr=sys.stderr,
        )
        base_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base_url}/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the API never became healthy via port-forward"
            time.sleep(1)
        yield Install(namespace=namespace, base_url=base_url, token=token)
    finally:
        if forward is not None:
            forward.terminate()
            forward.wait(timeout=10)
        run(helm, "uninstall", release, "--namespace", namespace, "--wait", check=False)
        run(kubectl, "delete", "namespace", namespace, "--wait=false", check=False)


def test_chart_install_runs_the_seed_request_to_completion(install: Install) -> None:
    headers = {"Authorization": f"Bearer {install.token}", "Idempotency-Key": "unique-key-123"}
    with httpx.Client(base_url=install.base_url, timeout=30) as client:
        assert client.post("/api/v1/runs", json=SEED_REQUEST).status_code == 401

        created = client.post("/api/v1/runs", json=SEED_REQUEST, headers=headers)
        assert created.status_code == 202, created.text
        body = created.json()
        assert body["status"] == "queued"
        job_id = body["job_id"]

        replay = client.post("/api/v1/runs", json=SEED_REQUEST, headers=headers)
        assert replay.status_code == 200
        assert replay.json()["job_id"] == job_id

        auth = {"Authorization": headers["Authorization"]}
        deadline = time.monotonic() + RUN_DEADLINE_SECONDS
        status: dict[str, object] = {}
        while time.monotonic() < deadline:
            status = client.get(f"/api/v1/runs/{job_id}", headers=auth).json()
            if status["status"] in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(3)
        assert status.get("status") == "succeeded", status

        result = client.get(f"/api/v1/runs/{job_id}/result", headers=auth)
        assert result.status_code == 200
        assert result.json()["result"]

        stream = client.get(f"/api/v1/runs/{job_id}/stream", headers=auth)
        assert stream.status_code == 200
        assert "event: complete" in stream.text
        assert stream.text.rstrip().endswith("data: [DONE]")

    listed = run(binary("kubectl"), "-n", install.namespace, "get", "agentruns", "-o", "json")
    items = json.loads(listed)["items"]
    assert [i["status"]["phase"] for i in items] == ["Succeeded"]


def test_chart_upgrade_keeps_runs_and_scales(install: Install) -> None:
    """`helm upgrade` (CRDs included, since they are templated) keeps every run; two API
    replicas get a PodDisruptionBudget and both serve."""
    helm, kubectl = binary("helm"), binary("kubectl")
    run(
        helm, "upgrade", "agentrun", str(CHART), "--namespace", install.namespace,
        "--reuse-values", "--set", "api.replicas=2", "--wait", "--timeout", "10m",
    )  # fmt: skip
    pdb = json.loads(
        run(kubectl, "-n", install.namespace, "get", "pdb", "agentrun-api", "-o", "json")
    )
    assert pdb["spec"]["minAvailable"] == 1
    deployment = json.loads(
        run(kubectl, "-n", install.namespace, "get", "deploy", "agentrun-api", "-o", "json")
    )
    assert deployment["status"].get("readyReplicas") == 2
    items = json.loads(run(kubectl, "-n", install.namespace, "get", "agentruns", "-o", "json"))
    assert len(items["items"]) == 1

"""End-to-end tests of the operator on a real cluster (opt in: ``pytest --e2e``).

Needs KUBECONFIG (a cluster where you may create namespaces and CRDs) and AGENTRUN_E2E_IMAGE
(the runner image, pullable by the cluster). The success and concurrency tests also need LLM
credentials for the runner: AGENTRUN_E2E_OPENAI_API_KEY (and optionally
AGENTRUN_E2E_OPENAI_BASE_URL, AGENTRUN_E2E_MODEL_NAME), e.g. an OpenAI-compatible stub reachable
from the pods.

The operator under test runs as a local process (``agentrun operator``) against the cluster,
in a fresh namespace per test; the CRDs are applied from deploy/crds/agentrun.dev.yaml.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO / "deploy" / "crds" / "agentrun.dev.yaml"
TERMINAL = {"Succeeded", "Failed", "Cancelled"}


def kubectl(*args: str, input_: str | None = None, check: bool = True) -> str:
    result = subprocess.run(
        ["kubectl", *args], input=input_, capture_output=True, text=True, timeout=120
    )
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)}: {result.stderr}")
    return result.stdout


def get_json(*args: str) -> Any:
    return json.loads(kubectl("get", *args, "-o", "json"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class E2E:
    def __init__(self, namespace: str, workdir: Path) -> None:
        self.ns = namespace
        self.workdir = workdir
        self.operators: list[subprocess.Popen[bytes]] = []

    def start_operator(self, **env: str) -> subprocess.Popen[bytes]:
        health = free_port()
        full = {
            **os.environ,
            "AGENTRUN_OPERATOR_NAMESPACES": json.dumps([self.ns]),
            "AGENTRUN_OPERATOR_RUNNER_IMAGE": os.environ["AGENTRUN_E2E_IMAGE"],
            "AGENTRUN_OPERATOR_LEADER_ELECTION__ENABLED": "false",
            "AGENTRUN_OPERATOR_HEALTH_HOST": "127.0.0.1",
            "AGENTRUN_OPERATOR_HEALTH_PORT": str(health),
            "AGENTRUN_OPERATOR_METRICS_PORT": str(free_port()),
            "AGENTRUN_OPERATOR_RESYNC_SECONDS": "2",
            **env,
        }
        log = (self.workdir / f"operator-{len(self.operators)}.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "agentrun_cli.main", "operator"],
            env=full,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.operators.append(proc)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{health}/health", timeout=2).status_code == 200:
                    return proc
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, self.logs()
            time.sleep(0.3)
        raise AssertionError(f"operator not healthy: {self.logs()}")

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-4000:] for p in self.workdir.glob("*.log"))

    def create_credentials(self) -> None:
        key = os.environ.get("AGENTRUN_E2E_OPENAI_API_KEY")
        if not key:
            raise AssertionError("this test needs AGENTRUN_E2E_OPENAI_API_KEY (LLM for the runner)")
        args = [
            "create",
            "secret",
            "generic",
            "agentrun-llm-credentials",
            "-n",
            self.ns,
            f"--from-literal=OPENAI_API_KEY={key}",
        ]
        if os.environ.get("AGENTRUN_E2E_OPENAI_BASE_URL"):
            base = os.environ["AGENTRUN_E2E_OPENAI_BASE_URL"]
            args += [
                f"--from-literal=OPENAI_BASE_URL={base}",
                f"--from-literal=OPENAI_API_BASE={base}",
            ]
        if os.environ.get("AGENTRUN_E2E_MODEL_NAME"):
            args.append(f"--from-literal=MODEL_NAME={os.environ['AGENTRUN_E2E_MODEL_NAME']}")
        kubectl(*args)

    def create_run(self, name: str, prompt: str, **spec: Any) -> None:
        body = {
            "apiVersion": "agentrun.dev/v1alpha1",
            "kind": "AgentRun",
            "metadata": {"name": name, "namespace": self.ns},
            "spec": {"prompt": prompt, **spec},
        }
        kubectl("apply", "-f", "-", input_=json.dumps(body))

    def run(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = get_json("agentrun", name, "-n", self.ns)
        return result

    def wait(
        self, name: str, pred: Callable[[dict[str, Any]], bool], timeout: float
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        run: dict[str, Any] = {}
        while time.monotonic() < deadline:
            run = self.run(name)
            if pred(run):
                return run
            time.sleep(1)
        raise AssertionError(f"{name}: timed out; status {run.get('status')}\n{self.logs()}")

    def wait_done(self, name: str, timeout: float = 300) -> dict[str, Any]:
        return self.wait(
            name,
            lambda r: ((r.get("status") or {}).get("transcript") or {}).get("complete", False),
            timeout,
        )

    def transcript(self, name: str) -> list[dict[str, Any]]:
        items = get_json("agentruntranscripts", "-n", self.ns, "-l", f"agentrun.dev/run={name}")
        events = []
        for item in items["items"]:
            events += [
                json.loads(line) for line in item["spec"].get("events", "").splitlines() if line
            ]
        return sorted(events, key=lambda e: e["id"])

    def jobs(self, name: str) -> list[dict[str, Any]]:
        return list(get_json("jobs", "-n", self.ns, "-l", f"agentrun.dev/run={name}")["items"])


@pytest.fixture
def e2e(tmp_path: Path) -> Iterator[E2E]:
    kubectl("apply", "-f", str(CRDS))
    kubectl("wait", "--for=condition=Established", "crd/agentruns.agentrun.dev", "--timeout=60s")
    ns = f"agentrun-e2e-{secrets.token_hex(3)}"
    kubectl("create", "namespace", ns)
    kubectl("create", "serviceaccount", "agentrun-runner", "-n", ns)
    env = E2E(ns, tmp_path)
    try:
        yield env
    finally:
        for proc in env.operators:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_e2e_success(e2e: E2E) -> None:
    e2e.create_credentials()
    e2e.start_operator()
    e2e.create_run("e2e-ok", "Say hello in one short sentence.", timeoutSeconds=600)
    run = e2e.wait_done("e2e-ok", timeout=600)
    assert run["status"]["phase"] == "Succeeded", run["status"]
    assert run["status"]["resultExcerpt"]
    events = e2e.transcript("e2e-ok")
    assert [e["id"] for e in events] == list(range(1, len(events) + 1))
    assert [e["data"]["status"] for e in events if e["event"] == "status"][-1] == "succeeded"
    assert events[-1]["event"] == "complete"
    assert len(e2e.jobs("e2e-ok")) == 1


def test_e2e_timeout_keeps_transcript(e2e: E2E) -> None:
    e2e.create_credentials()
    e2e.start_operator()
    e2e.create_run("e2e-timeout", "Write a long essay about the sea.", timeoutSeconds=1)
    run = e2e.wait_done("e2e-timeout", timeout=300)
    assert (run["status"]["phase"], run["status"]["reason"]) == ("Failed", "timeout")
    events = e2e.transcript("e2e-timeout")
    assert events[-1]["event"] == "complete"
    assert events[-1]["data"]["reason"] == "timeout"
    # the pod (and its log) are gone; the transcript stays
    e2e.wait(
        "e2e-timeout",
        lambda r: not get_json("pods", "-n", e2e.ns, "-l", "agentrun.dev/run=e2e-timeout")["items"],
        timeout=120,
    )
    assert e2e.transcript("e2e-timeout") == events


def test_e2e_cancel(e2e: E2E) -> None:
    e2e.create_credentials()
    e2e.start_operator()
    e2e.create_run("e2e-cancel", "Write a long essay about mountains.", timeoutSeconds=600)
    e2e.wait(
        "e2e-cancel", lambda r: (r.get("status") or {}).get("phase") in ("Running", *TERMINAL), 300
    )
    kubectl(
        "patch",
        "agentrun",
        "e2e-cancel",
        "-n",
        e2e.ns,
        "--type=merge",
        "-p",
        '{"spec":{"cancelRequested":true}}',
    )
    run = e2e.wait_done("e2e-cancel", timeout=120)
    assert (run["status"]["phase"], run["status"]["reason"]) == ("Cancelled", "cancelled")
    e2e.wait("e2e-cancel", lambda r: not e2e.jobs("e2e-cancel"), timeout=120)
    assert e2e.run("e2e-cancel")["status"]["phase"] == "Cancelled"


def test_e2e_missing_secret(e2e: E2E) -> None:
    secret = f"agentrun-e2e-missing-{secrets.token_hex(3)}"
    e2e.start_operator(AGENTRUN_OPERATOR_CREDENTIALS_SECRET=secret)
    e2e.create_run("e2e-nocred", "hello", timeoutSeconds=600)
    run = e2e.wait_done("e2e-nocred", timeout=300)
    assert (run["status"]["phase"], run["status"]["reason"]) == ("Failed", "missing_credentials")
    assert f"create Secret {secret}" in run["status"]["message"]


def test_e2e_concurrency_limit(e2e: E2E) -> None:
    e2e.create_credentials()
    e2e.start_operator(AGENTRUN_OPERATOR_MAX_CONCURRENT_RUNS="1")
    e2e.create_run("e2e-c1", "Write two sentences about rivers.", timeoutSeconds=600)
    e2e.create_run("e2e-c2", "Write two sentences about lakes.", timeoutSeconds=600)
    deadline = time.monotonic() + 900
    peak = 0
    while time.monotonic() < deadline:
        jobs = get_json("jobs", "-n", e2e.ns)["items"]
        active = [
            j
            for j in jobs
            if not any(
                c.get("status") == "True" and c["type"] in ("Complete", "Failed", "FailureTarget")
                for c in (j.get("status") or {}).get("conditions") or []
            )
        ]
        peak = max(peak, len(active))
        done = [
            ((e2e.run(n).get("status") or {}).get("transcript") or {}).get("complete")
            for n in ("e2e-c1", "e2e-c2")
        ]
        if all(done):
            break
        time.sleep(1)
    assert peak <= 1
    first, second = e2e.run("e2e-c1"), e2e.run("e2e-c2")
    assert first["status"]["phase"] == "Succeeded"
    assert second["status"]["phase"] == "Succeeded"
    assert second["status"]["startedAt"] >= first["status"]["completedAt"][:19]


# ---------------------------------------------------------------------------------------------
# Golden files from a real cluster: the Job and Pods at the moment the Job reaches a decision,
# fed to map_run_status, and (with AGENTRUN_E2E_RECORD_GOLDENS=1) written next to the
# hand-written goldens as tests/unit/operator/golden/recorded_<case>.yaml, so the unit tests
# replay them; `git diff` shows how reality differs from the documented shape.

GOLDEN_DIR = REPO / "tests" / "unit" / "operator" / "golden"


def _capture_decided(e2e: E2E, name: str, timeout: float) -> tuple[dict[str, Any], list[Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = e2e.jobs(name)
        if jobs:
            job = jobs[0]
            conds = {
                c["type"]
                for c in (job.get("status") or {}).get("conditions") or []
                if c.get("status") == "True"
            }
            pods = get_json("pods", "-n", e2e.ns, "-l", f"agentrun.dev/run={name}")["items"]
            waiting = [
                cs
                for p in pods
                for cs in (p.get("status") or {}).get("containerStatuses") or []
                if (cs.get("state") or {}).get("waiting", {}).get("reason")
                == "CreateContainerConfigError"
            ]
            if conds & {"Complete", "FailureTarget", "Failed"} or waiting:
                return job, pods
        time.sleep(0.5)
    raise AssertionError(f"{name}: no decided Job within {timeout}s\n{e2e.logs()}")


@pytest.mark.parametrize(
    ("case", "prompt", "timeout_seconds", "expected"),
    [
        ("success", "Say hello in one short sentence.", 600, ("Succeeded", None)),
        ("deadline_exceeded", "Write a long essay about the sea.", 1, ("Failed", "timeout")),
        ("missing_credentials", "hello", 600, ("Failed", "missing_credentials")),
    ],
)
def test_e2e_goldens(
    e2e: E2E, case: str, prompt: str, timeout_seconds: int, expected: tuple[str, str | None]
) -> None:
    import yaml
    from agentrun_contract.resource import AgentRun
    from agentrun_operator.run_status import map_run_status, parse_time

    name = f"golden-{case.replace('_', '-')}"
    if case == "missing_credentials":
        # No operator: it would fail the run and delete the Job before the capture. Create
        # the input Secret and the Job exactly as it would.
        from agentrun_operator.job_manifest import build_input_secret, build_job_manifest
        from agentrun_operator.settings import OperatorSettings

        secret = "agentrun-llm-credentials-absent"
        e2e.create_run(name, prompt, timeoutSeconds=timeout_seconds)
        stored = AgentRun.model_validate(e2e.run(name))
        settings = OperatorSettings(
            credentials_secret=secret, runner_image=os.environ["AGENTRUN_E2E_IMAGE"]
        )
        for obj in (build_input_secret(stored), build_job_manifest(stored, settings, "nonce")):
            kubectl("apply", "-f", "-", input_=json.dumps(obj))
    else:
        secret = "agentrun-llm-credentials"
        e2e.create_credentials()
        e2e.start_operator()
        e2e.create_run(name, prompt, timeoutSeconds=timeout_seconds)
    job, pods = _capture_decided(e2e, name, timeout=600)
    run = AgentRun.model_validate(
        {**e2e.run(name), "status": {"phase": "Queued", "jobName": job["metadata"]["name"]}}
    )
    now = parse_time(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    assert now is not None
    decision = map_run_status(run, job, pods, now, credentials_secret=secret)
    assert (decision.phase.value, decision.reason.value if decision.reason else None) == expected
    if os.environ.get("AGENTRUN_E2E_RECORD_GOLDENS") == "1":
        for obj in [job, *pods]:
            obj.get("metadata", {}).pop("managedFields", None)
        document = {
            "source": "recorded from a real cluster (Kubernetes "
            + json.loads(kubectl("version", "-o", "json"))["serverVersion"]["gitVersion"]
            + ") by tests/e2e/test_e2e_operator.py::test_e2e_goldens",
            "description": f"recorded: {case}",
            "now": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "run": {"spec": {"timeoutSeconds": timeout_seconds}, "status": {"phase": "Queued"}},
            "credentialsSecret": secret,
            "job": job,
            "pods": pods,
            "expected": {"phase": expected[0], "reason": expected[1]},
        }
        (GOLDEN_DIR / f"recorded_{case}.yaml").write_text(yaml.safe_dump(document, sort_keys=False))

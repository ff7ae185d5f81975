"""`agentrun dev` as a user runs it: a subprocess on a free port, the seed's curl, Ctrl-C.

These start the real operator and API processes (through the dev command), so they are slow-ish
(a few seconds each) and kept few.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from agentrun_devcluster.system import SyncKube, free_port

pytestmark = pytest.mark.slow

SEED_BODY = {
    "prompt": "Analyze the quarterly sales data",
    "timeout": 3600,
    "webhook_url": "https://example.com/callback",
    "session_id": "project-alpha",
}


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (any session), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@dataclass
class Dev:
    proc: subprocess.Popen[str]
    url: str
    state_dir: Path
    output: list[str]

    @property
    def kubeconfig(self) -> Path:
        return self.state_dir / "kubeconfig"

    def kube(self) -> SyncKube:
        import yaml

        config = yaml.safe_load(self.kubeconfig.read_text())
        return SyncKube(config["clusters"][0]["cluster"]["server"])


def start_dev(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Dev:
    port = free_port()
    state = tmp_path / "state"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agentrun_cli.main",
            "dev",
            "--port",
            str(port),
            "--state-dir",
            str(state),
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env or dict(os.environ),
        start_new_session=True,
    )
    output: list[str] = []
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        output.append(line)
        if line.strip() == "Ctrl-C stops everything.":  # the banner's last line
            return Dev(proc, f"http://127.0.0.1:{port}", state, output)
    proc.kill()
    proc.wait()
    rest = proc.stdout.read() if proc.stdout else ""
    raise AssertionError("agentrun dev never became ready:\n" + "".join(output) + rest)


def stop_dev(dev: Dev, sig: int = signal.SIGINT) -> tuple[int, str]:
    if dev.proc.poll() is None:
        dev.proc.send_signal(sig)
    try:
        out, _ = dev.proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(dev.proc.pid, signal.SIGKILL)
        out, _ = dev.proc.communicate()
        raise AssertionError("agentrun dev did not stop within 60s of " + str(sig)) from None
    return dev.proc.returncode, "".join(dev.output) + (out or "")


def logs_of(dev: Dev) -> str:
    """Tails of the operator's and the API's logs, for failure messages."""
    parts = []
    for name in ("operator", "api"):
        path = dev.state_dir / f"{name}.log"
        if path.exists():
            parts.append(f"==> {name}.log\n{path.read_text(errors='replace')[-4000:]}")
    return "\n".join(parts)


@contextlib.contextmanager
def explained(dev: Dev) -> Iterator[None]:
    """Re-raise an assertion failure with the dev output and the children's logs."""
    try:
        yield
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}\n--- dev output\n{''.join(dev.output)}\n{logs_of(dev)}"
        ) from exc


@pytest.fixture
def stub_dev(tmp_path: Path) -> Iterator[Dev]:
    dev = start_dev(tmp_path, "--stub-llm", "--runner", "tiny")
    try:
        yield dev
    finally:
        if dev.proc.poll() is None:
            stop_dev(dev)


def test_dev_seed_curl_run_completes_and_sigint_leaves_nothing(stub_dev: Dev) -> None:
    with explained(stub_dev):
        seed_curl_run_completes_and_sigint_leaves_nothing(stub_dev)


def seed_curl_run_completes_and_sigint_leaves_nothing(dev: Dev) -> None:
    banner = "".join(dev.output)
    assert "STUB LLM" in banner
    assert f"kubectl --kubeconfig {dev.kubeconfig} get agentruns" in banner
    assert f"curl -X POST {dev.url}/api/v1/runs" in banner
    assert httpx.get(f"{dev.url}/health", timeout=5).status_code == 200

    # the seed's curl, as is
    r = httpx.post(
        f"{dev.url}/api/v1/runs",
        json=SEED_BODY,
        headers={"Idempotency-Key": "unique-key-123"},
        timeout=10,
    )
    assert r.status_code == 202, r.text
    accepted = r.json()
    assert accepted["status"] == "queued"

    def finished() -> dict[str, object] | None:
        body = httpx.get(accepted["poll_url"], timeout=5).json()
        return body if body["status"] in ("succeeded", "failed", "cancelled") else None

    kube = dev.kube()
    final = kube.wait_for("the seed run to finish", finished, timeout=60, interval=0.3)
    assert final["status"] == "succeeded", final
    result = httpx.get(f"{accepted['poll_url']}/result", timeout=5).json()
    assert result["result"] == f"tiny result for {accepted['job_id']}"

    # the printed kubectl command works against the emulated cluster
    kubectl = shutil.which("kubectl")
    if kubectl is not None:
        shown = subprocess.run(
            [kubectl, "--kubeconfig", str(dev.kubeconfig), "get", "agentruns"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert shown.returncode == 0, shown.stderr
        assert accepted["job_id"].replace("_", "-") in shown.stdout

    # a long run whose runner process is alive when Ctrl-C arrives
    r = httpx.post(f"{dev.url}/api/v1/runs", json={"prompt": "sleep=60"}, timeout=10)
    assert r.status_code == 202, r.text
    kube.wait_for(
        "a running runner pod",
        lambda: [
            p
            for p in kube.items("/api/v1/namespaces/default/pods")
            if p["status"].get("phase") == "Running"
        ],
        timeout=60,
    )
    tree = descendants(dev.proc.pid)
    runner_procs = [p for p in tree if "tiny_runner" in Path(f"/proc/{p}/cmdline").read_text()]
    assert runner_procs, "expected a tiny runner process below agentrun dev"
    assert len(tree) >= 3  # operator, API, runner (at least)
    code, output = stop_dev(dev, signal.SIGINT)
    assert code == 0, output
    assert "agentrun dev: stopped" in output
    time.sleep(0.5)
    left = [p for p in tree if alive(p)]
    assert left == [], f"processes left after SIGINT: {left}"


def test_dev_without_credentials_says_so_and_runs_fail_naming_the_secret(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "MODEL_NAME"))}
    dev = start_dev(tmp_path, "--runner", "tiny", env=env)
    try:
        with explained(dev):
            banner = "".join(dev.output)
            assert "no LLM credentials" in banner
            assert "export OPENAI_API_KEY" in banner
            assert "--stub-llm" in banner
            r = httpx.post(f"{dev.url}/api/v1/runs", json={"prompt": "hi"}, timeout=10)
            assert r.status_code == 202, r.text
            poll = r.json()["poll_url"]
            kube = dev.kube()

            def failed_or_reason() -> dict[str, object] | None:
                body = httpx.get(poll, timeout=5).json()
                text = str(body.get("error") or "") + str(body.get("message") or "")
                return body if "agentrun-llm-credentials" in text else None

            body = kube.wait_for(
                "a missing-credentials error", failed_or_reason, timeout=60, interval=0.3
            )
            assert "agentrun-llm-credentials" in str(body)
    finally:
        code, output = stop_dev(dev, signal.SIGTERM)
    assert code == 0, output + logs_of(dev)


@pytest.mark.praisonai
def test_dev_real_praisonai_runner_against_stub_llm(tmp_path: Path) -> None:
    """The one end-to-end run of real PraisonAI through `agentrun dev --stub-llm`."""
    dev = start_dev(tmp_path, "--stub-llm")
    try:
        with explained(dev):
            r = httpx.post(
                f"{dev.url}/api/v1/runs",
                json=SEED_BODY,
                headers={"Idempotency-Key": "unique-key-123"},
                timeout=10,
            )
            assert r.status_code == 202, r.text
            poll = r.json()["poll_url"]

            def finished() -> dict[str, object] | None:
                body = httpx.get(poll, timeout=5).json()
                return body if body["status"] in ("succeeded", "failed", "cancelled") else None

            final = dev.kube().wait_for("the PraisonAI run", finished, timeout=120, interval=0.5)
            logs = (dev.state_dir / "operator.log").read_text(errors="replace")[-3000:]
            assert final["status"] == "succeeded", (final, logs)
            result = httpx.get(f"{poll}/result", timeout=5).json()["result"]
            assert result.startswith("### PraisonAI Output ###")
            assert "[agentrun stub LLM]" in result
            assert "Analyze the quarterly sales data" in result
    finally:
        code, output = stop_dev(dev, signal.SIGINT)
    assert code == 0, output

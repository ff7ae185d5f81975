"""``agentrun dev --faults``: random apiserver faults, seeded and printed, as a user starts them."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from agentrun_devcluster.system import free_port


def dev_command(tmp_path: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "agentrun_cli.main",
        "dev",
        "--runner",
        "tiny",
        "--port",
        str(free_port()),
        "--state-dir",
        str(tmp_path / "state"),
        *args,
    ]


def test_unknown_fault_names_the_choices(tmp_path: Path) -> None:
    out = subprocess.run(
        dev_command(tmp_path, "--faults", "log_cut,restrat"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "unknown fault 'restrat'" in out.stderr
    assert "log_disconnect" in out.stderr  # the choices


@pytest.mark.slow
def test_dev_faults_fire_at_random_with_the_printed_seed(tmp_path: Path) -> None:
    args = ["--stub-llm", "--faults", "throttle,server_error", "--fault-rate", "0.2"]
    args += ["--fault-seed", "4242"]
    proc = subprocess.Popen(
        dev_command(tmp_path, *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    output: list[str] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any("FAULTS on" in line for line in output):
            line = proc.stdout.readline()
            if not line:
                break
            output.append(line)
        text = "".join(output)
        assert "seed=4242" in text, text
        assert "--fault-seed 4242" in text
        cluster = re.search(r"emulated cluster at (http://\S+)", text)
        api = re.search(r"API at (http://\S+) ", text)
        assert cluster is not None
        assert api is not None, text

        # writes of the operator and the API now fail at random (one in five): a client that
        # retries as a careful one does still gets its run through
        deadline = time.monotonic() + 90
        status = None
        job_id = None
        while time.monotonic() < deadline and status != "succeeded":
            try:
                if job_id is None:
                    r = httpx.post(
                        f"{api.group(1)}/api/v1/runs",
                        json={"prompt": "lines=2"},
                        headers={"Idempotency-Key": "dev-faults"},
                        timeout=10,
                    )
                    if r.status_code in (200, 202):
                        job_id = r.json()["job_id"]
                else:
                    status = httpx.get(f"{api.group(1)}/api/v1/runs/{job_id}", timeout=10).json()[
                        "status"
                    ]
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        listing = httpx.get(f"{cluster.group(1)}/_emulator/faults", timeout=10).json()
        assert "seed=4242" in listing["chaos"]
        assert listing["fired"].get("throttle", 0) + listing["fired"].get("server_error", 0) > 0
        assert set(listing["fired"]) <= {"throttle", "server_error"}
        assert status == "succeeded", (job_id, status, text)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()

"""agentrun-runner as a real process, with the agent scripted (fast; no PraisonAI import)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from agentrun_contract import runner as contract
from agentrun_contract.runner import ExitCode

SCRIPTED = [sys.executable, str(Path(__file__).with_name("scripted_agent.py"))]
CREDENTIALS = {"OPENAI_API_KEY": "k", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}


def test_agent_output_even_perfect_forgeries_is_only_log(workspace: Any, harness: Any) -> None:
    env = workspace.env(SCRIPTED_AGENT="forge", **CREDENTIALS)
    outcome = harness.run_runner(workspace, env, SCRIPTED)
    assert outcome.code == ExitCode.SUCCESS
    harness.assert_only_events(outcome)
    forged_logs = [e for e in outcome.of("log") if '"text":"FORGED"' in e.data.message]
    # print, os.write(1), the child's stdout; os.write(2), print to stderr, the child's stderr.
    assert len(forged_logs) == 6
    assert sorted(e.data.stream for e in forged_logs) == ["stderr"] * 3 + ["stdout"] * 3
    long_pieces = [e.data.message for e in outcome.of("log") if e.data.message.startswith("y")]
    assert "".join(long_pieces) == "y" * (contract.LOG_LINE_MAX_CHARS * 2 + 5)
    assert all(len(p) <= contract.LOG_LINE_MAX_CHARS for p in long_pieces)
    # stdout and stderr are two pipes read by two threads: order is kept within each stream.
    stdout_logs = [e.data.message for e in outcome.of("log") if e.data.stream == "stdout"]
    assert stdout_logs[-1] == "last line without newline"
    assert outcome.result().startswith("line 1\n\n  line 3 ünïcödé\t\n{")
    assert outcome.result().endswith('"text":"FORGED"}}')
    assert outcome.kinds()[:3] == ["start", "progress", "progress"]
    assert outcome.kinds()[-3:] == ["progress", "result", "progress"]
    assert [e.data.percentage for e in outcome.of("progress")] == [5, 10, 90, 100]
    assert workspace.termination_log.read_text().startswith("success:")


def test_agent_exception_is_agent_error_with_traceback_logs(workspace: Any, harness: Any) -> None:
    outcome = harness.run_runner(
        workspace, workspace.env(SCRIPTED_AGENT="raise", **CREDENTIALS), SCRIPTED
    )
    assert outcome.code == ExitCode.AGENT_ERROR
    harness.assert_only_events(outcome)
    (error,) = outcome.of("error")
    assert error.data.reason == "agent_error"
    assert error.data.message == ("the agent failed: RuntimeError: scripted failure second line")
    assert outcome.kinds()[-1] == "error"
    assert not outcome.of("result")
    stderr_logs = [e.data.message for e in outcome.of("log") if e.data.stream == "stderr"]
    assert "Traceback (most recent call last):" in stderr_logs
    assert workspace.termination_log.read_text().startswith("agent_error:")


def test_sigterm_kills_the_agents_children_and_exits_143(workspace: Any, harness: Any) -> None:
    pid_file = workspace.root / "grandchild.pid"
    env = workspace.env(
        SCRIPTED_AGENT="sleep", SCRIPTED_AGENT_PID_FILE=str(pid_file), **CREDENTIALS
    )
    process = subprocess.Popen(SCRIPTED, env=env, stdout=subprocess.PIPE)
    lines: list[str] = []
    try:
        harness.read_events_until(process, lines, lambda line: "agent sleeping" in line, 60)
        deadline = time.monotonic() + 10
        while not pid_file.exists() or not pid_file.read_text().strip():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        grandchild = int(pid_file.read_text())
        os.kill(grandchild, 0)  # alive before the signal
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=30)
        elapsed = time.monotonic() - signalled
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == ExitCode.INTERRUPTED
    assert elapsed < 10, "exits at once, not after the agent's sleep"
    outcome = harness.parse_outcome(
        workspace, process.returncode, lines + out.decode().splitlines(keepends=True), None, 0
    )
    harness.assert_only_events(outcome)
    assert outcome.kinds()[-1] == "interrupted"
    assert workspace.termination_log.read_text() == "interrupted: SIGTERM"
    deadline = time.monotonic() + 10
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild), "the agent's grandchild was killed with the runner"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize(
    ("llm", "missing"),
    [
        ({}, "OPENAI_API_KEY"),  # the default model, OpenAI's
        (
            {"MODEL_NAME": "anthropic/claude-sonnet-4-5", "OPENAI_API_KEY": "k"},
            "ANTHROPIC_API_KEY",
        ),
    ],
)
def test_missing_credentials_fails_fast_naming_the_secret_and_key(
    workspace: Any, harness: Any, llm: dict[str, str], missing: str
) -> None:
    env = workspace.env(**{contract.ENV_CREDENTIALS_SECRET: "team-llm-keys"}, **llm)
    outcome = harness.run_runner(workspace, env)
    assert outcome.code == ExitCode.MISSING_CREDENTIALS
    harness.assert_only_events(outcome)
    assert outcome.kinds() == ["start", "progress", "error"]
    error = outcome.events[-1]
    assert error.data.reason == "missing_credentials"
    assert "'team-llm-keys'" in error.data.message
    assert f"{missing} is not set" in error.data.message
    imported = [line for line in workspace.audit() if line.startswith("import")]
    assert imported == ["import litellm"], (
        "PraisonAI must not be imported before the credentials are checked (litellm decides)"
    )
    assert workspace.termination_log.read_text().startswith("missing_credentials:")


def test_missing_agent_file_is_bad_input(workspace: Any, harness: Any) -> None:
    env = workspace.env(**{contract.ENV_AGENT_FILE: "no-such-agent.yaml"}, **CREDENTIALS)
    outcome = harness.run_runner(workspace, env)
    assert outcome.code == ExitCode.BAD_INPUT
    (error,) = outcome.events
    assert error.data.reason == "bad_input"
    assert "no-such-agent.yaml" in error.data.message
    assert not workspace.audit()


def test_agent_file_escaping_the_agent_dir_is_bad_input(workspace: Any, harness: Any) -> None:
    env = workspace.env(**{contract.ENV_AGENT_FILE: "../../etc/passwd"}, **CREDENTIALS)
    outcome = harness.run_runner(workspace, env)
    assert outcome.code == ExitCode.BAD_INPUT
    assert "'..'" in outcome.events[0].data.message


def test_missing_prompt_is_bad_input(workspace: Any, harness: Any) -> None:
    workspace.prompt_file.unlink()
    outcome = harness.run_runner(workspace, workspace.env(**CREDENTIALS))
    assert outcome.code == ExitCode.BAD_INPUT
    assert "prompt file" in outcome.events[0].data.message


def test_configmap_mounted_agents_dir_is_followed(workspace: Any, harness: Any) -> None:
    agents = workspace.root / "agents"
    stamped = agents / "..2026_11_29_10_00_00.000000001"
    text = "roles:\n  writer:\n    role: Writer\n    goal: g\n    backstory: b\n"
    workspace.write(f"agents/{stamped.name}/team.yaml", text)
    (agents / "..data").symlink_to(stamped.name)
    (agents / "team.yaml").symlink_to("..data/team.yaml")
    env = workspace.env(
        SCRIPTED_AGENT="agent_file",
        **{contract.ENV_AGENT_DIR: str(agents), contract.ENV_AGENT_FILE: "team.yaml"},
        **CREDENTIALS,
    )
    outcome = harness.run_runner(workspace, env, SCRIPTED)
    assert outcome.code == ExitCode.SUCCESS
    assert outcome.result() == text
    assert outcome.of("start")[0].data.agent_file == "team.yaml"


def test_a_library_replacing_the_sigterm_handler_does_not_disable_it(
    workspace: Any, harness: Any
) -> None:
    env = workspace.env(SCRIPTED_AGENT="steal_sigterm", **CREDENTIALS)
    process = subprocess.Popen(SCRIPTED, env=env, stdout=subprocess.PIPE)
    lines: list[str] = []
    try:
        harness.read_events_until(process, lines, lambda line: "agent sleeping" in line, 60)
        time.sleep(1.5)  # more than the runner's handler check interval (0.5 s)
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == ExitCode.INTERRUPTED
    outcome = harness.parse_outcome(
        workspace, process.returncode, lines + out.decode().splitlines(keepends=True), None, 0
    )
    assert outcome.kinds()[-1] == "interrupted"

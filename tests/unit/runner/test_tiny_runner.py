"""The tiny test runner as a real process: contract events, directives, inputs, signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from agentrun_contract.runner import (
    ENV_AGENT_DIR,
    ENV_AGENT_FILE,
    ENV_FRAMEWORK,
    ENV_NONCE,
    ENV_PROMPT_FILE,
    ENV_RUN_ID,
    ENV_TERMINATION_MESSAGE_PATH,
    ExitCode,
    RunnerEvent,
    parse_event_line,
)
from agentrun_devcluster.tiny_runner import parse_directives, sized_result

RUN_ID = "run_tiny1"
NONCE = "nonce-abc"


def _env(tmp_path: Path, prompt: str, **extra: str) -> dict[str, str]:
    prompt_file = tmp_path / "prompt"
    prompt_file.write_text(prompt, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTRUN_")}
    env.pop("OPENAI_API_KEY", None)
    env.update(
        {
            ENV_RUN_ID: RUN_ID,
            ENV_NONCE: NONCE,
            ENV_PROMPT_FILE: str(prompt_file),
            ENV_TERMINATION_MESSAGE_PATH: str(tmp_path / "termination-log"),
        }
    )
    env.update(extra)
    return env


def _run(tmp_path: Path, prompt: str, **extra: str) -> tuple[int, list[str]]:
    done = subprocess.run(
        [sys.executable, "-m", "agentrun_devcluster.tiny_runner"],
        env=_env(tmp_path, prompt, **extra),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.stderr == "", "the runner writes nothing to stderr"
    return done.returncode, done.stdout.splitlines()


def _events(lines: list[str]) -> list[RunnerEvent]:
    events = [parse_event_line(line, run_id=RUN_ID, nonce=NONCE) for line in lines]
    return [e for e in events if e is not None]


def _result(events: list[RunnerEvent]) -> str:
    return "".join(e.data.text for e in events if e.type == "result")


def test_default_run_speaks_the_contract(tmp_path: Path) -> None:
    code, lines = _run(tmp_path, "Analyze the quarterly sales data")
    events = _events(lines)
    assert code == ExitCode.SUCCESS
    assert len(events) == len(lines), "every stdout line is an event of this run"
    assert [e.seq for e in events] == list(range(len(events)))
    kinds = [e.type for e in events]
    assert kinds == ["start", "progress", "log", "log", "log", "progress", "result", "progress"]
    assert _result(events) == f"tiny result for {RUN_ID}"
    assert (tmp_path / "termination-log").read_text().startswith("success:")


def test_echo_returns_the_prompt_exactly(tmp_path: Path) -> None:
    prompt = 'echo line one\n  "quoted" ünïcode {"type":"result"}\n\nlast'
    code, lines = _run(tmp_path, prompt)
    assert code == 0
    assert _result(_events(lines)) == prompt


def test_result_bytes_is_chunked_and_exact(tmp_path: Path) -> None:
    code, lines = _run(tmp_path, "result_bytes=10000 lines=0")
    events = _events(lines)
    results = [e for e in events if e.type == "result"]
    assert code == 0
    assert len(results) > 1
    assert _result(events) == sized_result(10000)


def test_fail_and_error_directives(tmp_path: Path) -> None:
    code, lines = _run(tmp_path, "please fail")
    errors = [e for e in _events(lines) if e.type == "error"]
    assert code == ExitCode.AGENT_ERROR
    assert [e.data.reason for e in errors] == ["agent_error"]
    assert not [e for e in _events(lines) if e.type == "result"]
    code, lines = _run(tmp_path, "error=internal")
    assert code == ExitCode.INTERNAL
    assert [e.data.reason for e in _events(lines) if e.type == "error"] == ["internal"]


def test_exit_code_without_result(tmp_path: Path) -> None:
    code, lines = _run(tmp_path, "exit=3 lines=1")
    events = _events(lines)
    assert code == 3
    assert [e.type for e in events] == ["start", "progress", "log"]


def test_imitated_events_stay_log_messages(tmp_path: Path) -> None:
    code, lines = _run(tmp_path, "imitate lines=0")
    events = _events(lines)
    assert code == 0
    assert len(events) == len(lines)
    forged_logs = [e for e in events if e.type == "log" and "FORGED" in e.data.message]
    assert {e.data.stream for e in forged_logs} == {"stdout", "stderr"}
    assert not [e for e in events if e.type == "error"]
    assert _result(events) == f"tiny result for {RUN_ID}"


def test_forge_nonce_and_raw_lines_are_not_events_of_this_run(tmp_path: Path) -> None:
    code, lines = _run(tmp_path, "forge_nonce raw=2 lines=0")
    assert code == 0
    assert len(lines) - len(_events(lines)) == 3
    assert _result(_events(lines)) == f"tiny result for {RUN_ID}"


def test_steps_emit_progress_during_sleep(tmp_path: Path) -> None:
    code, lines = _run(tmp_path, "sleep=0.2 steps=3 lines=0")
    progress = [e.data.percentage for e in _events(lines) if e.type == "progress"]
    assert code == 0
    assert progress == sorted(progress)
    assert len(progress) == 3 + 3


def test_missing_prompt_file_is_bad_input(tmp_path: Path) -> None:
    code, lines = _run(tmp_path, "x", **{ENV_PROMPT_FILE: str(tmp_path / "nope")})
    errors = [e for e in _events(lines) if e.type == "error"]
    assert code == ExitCode.BAD_INPUT
    assert errors[0].data.reason == "bad_input"
    assert "does not exist" in errors[0].data.message


def test_missing_agent_file_and_unknown_framework(tmp_path: Path) -> None:
    agents = tmp_path / "agents"
    agents.mkdir()
    code, lines = _run(tmp_path, "x", **{ENV_AGENT_DIR: str(agents), ENV_AGENT_FILE: "a.yaml"})
    assert code == ExitCode.BAD_INPUT
    assert "not found" in _events(lines)[0].data.message  # type: ignore[union-attr]
    code, lines = _run(tmp_path, "x", **{ENV_FRAMEWORK: "crewai"})
    assert code == ExitCode.BAD_INPUT
    assert "crewai is not installed" in _events(lines)[0].data.message  # type: ignore[union-attr]


def test_check_credentials_names_the_secret(tmp_path: Path) -> None:
    code, lines = _run(tmp_path, "check_credentials")
    errors = [e for e in _events(lines) if e.type == "error"]
    assert code == ExitCode.MISSING_CREDENTIALS
    assert "agentrun-llm-credentials" in errors[0].data.message
    code, _ = _run(tmp_path, "check_credentials", OPENAI_API_KEY="k")
    assert code == 0


def _start_sleeping(tmp_path: Path, prompt: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "agentrun_devcluster.tiny_runner"],
        env=_env(tmp_path, prompt),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    # Wait for the first log line: the handler is installed by then.
    for line in process.stdout:
        if '"type":"log"' in line:
            break
    return process


def test_sigterm_writes_interrupted_and_exits_143(tmp_path: Path) -> None:
    process = _start_sleeping(tmp_path, "sleep=60 lines=1")
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=30)
    assert process.returncode == ExitCode.INTERRUPTED
    assert time.monotonic() - started < 20
    events = _events(out.splitlines())
    assert [e.type for e in events] == ["interrupted"]
    assert (tmp_path / "termination-log").read_text() == "interrupted: SIGTERM"


def test_ignore_sigterm_survives_sigterm(tmp_path: Path) -> None:
    process = _start_sleeping(tmp_path, "sleep=60 lines=1 ignore_sigterm")
    try:
        process.send_signal(signal.SIGTERM)
        with pytest.raises(subprocess.TimeoutExpired):
            process.wait(timeout=1)
    finally:
        process.kill()
        process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL


def test_parse_directives() -> None:
    found = parse_directives("sleep=1.5, steps=2 lines=0 stderr=1 echo fail exit=7 words")
    assert (found.sleep, found.steps, found.lines, found.stderr_lines) == (1.5, 2, 0, 1)
    assert found.echo
    assert found.error == "agent_error"
    assert found.exit_code == 7
    with pytest.raises(ValueError, match="error=nope"):
        parse_directives("error=nope")
    with pytest.raises(ValueError, match="abc"):
        parse_directives("sleep=abc")


def test_error_reasons_match_the_contract() -> None:
    from typing import get_args

    from agentrun_contract.runner import ErrorData
    from agentrun_devcluster.tiny_runner import ERROR_REASONS

    assert get_args(ErrorData.model_fields["reason"].annotation) == ERROR_REASONS


def test_handler_comes_before_the_contract_import() -> None:
    """Importing the tiny runner (what `python -m` does before main) loads no pydantic, so the
    SIGTERM handler is in place before the slow part of the start."""
    code = "import sys, agentrun_devcluster.tiny_runner; print('pydantic' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "False"

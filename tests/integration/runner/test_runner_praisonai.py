"""agentrun-runner running real PraisonAI against the project's stub LLM on 127.0.0.1.

Few and slow-ish (each PraisonAI run takes seconds): marked ``praisonai``. The run's timings
are printed (``-s``) as the runner's start-to-first-event and total times against the stub.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Any

import pytest
from agentrun_contract import runner as contract
from agentrun_contract.runner import ExitCode

pytestmark = [pytest.mark.praisonai, pytest.mark.slow]

PRAISONAI_PREFIX = "### PraisonAI Output ###\n"
# A result with everything that could break on the way back: blank lines, indentation, tabs,
# non-ASCII, quotes, backslashes, and a line that looks like an event; long enough for chunks.
ANSWER = (
    "Quarterly summary: revenue up 12 %.\n\n"
    '  - "Q1": 1.2 M €\n\t- Q2: 1.4 M € \\ rising\n'
    '{"agentrun":1,"type":"result","run_id":"run_runnertest","nonce":"nonce-7f3a"}\n'
    + "\n".join(f"detail line {i}: " + "x" * 60 for i in range(80))
    + "\nLast line."
)

FAST_FAILING_AGENT = """\
framework: praisonai
topic: placeholder
roles:
  analyst:
    role: Analyst
    goal: Answer the task
    backstory: You answer tasks.
    llm:
      model: openai/agentrun-stub
      max_retries: 0
    tasks:
      main_task:
        description: "{topic}"
        expected_output: An answer.
"""


def _configmap_agents(workspace: Any, harness: Any) -> str:
    """The image's default agents.yaml, mounted the way the kubelet mounts a ConfigMap."""
    agents = workspace.root / "agents"
    stamped = "..2026_11_29_10_00_00.000000001"
    source = (harness.repo / "runner-image" / "agents" / "agents.yaml").read_text()
    assert "{topic}" in source
    workspace.write(f"agents/{stamped}/agents.yaml", source)
    (agents / "..data").symlink_to(stamped)
    (agents / "agents.yaml").symlink_to("..data/agents.yaml")
    return str(agents)


def test_success_multiline_result_read_back_exactly(
    workspace: Any, harness: Any, stub: Any
) -> None:
    stub.server.configure(answer=ANSWER)
    env = workspace.env(
        **harness.llm_env(stub),
        **{
            contract.ENV_AGENT_DIR: _configmap_agents(workspace, harness),
            contract.ENV_SESSION_ID: "s",
        },
    )
    outcome = harness.run_runner(workspace, env)
    print(
        f"\nrunner vs stub: first event after {outcome.first_line_seconds:.2f} s, "
        f"total {outcome.total_seconds:.2f} s"
    )
    assert outcome.code == ExitCode.SUCCESS, outcome.lines[-5:]
    harness.assert_only_events(outcome)
    assert outcome.result() == PRAISONAI_PREFIX + ANSWER
    assert len(outcome.of("result")) > 1, "long enough to be chunked"
    assert outcome.kinds()[0] == "start"
    assert outcome.of("start")[0].data.agent_file == "agents.yaml"
    assert [e.data.percentage for e in outcome.of("progress")] == [5, 10, 90, 100]
    assert outcome.kinds()[-1] == "progress"
    # The prompt reached the model as the task.
    assert any(
        "Analyze the quarterly sales data" in str(body.get("messages"))
        for body in stub.server.requests
    )
    # No phone-home: the only connection is to the stub; no DNS lookup of anything else.
    port = stub.server.port
    assert harness.connections(workspace), "the audit hook recorded the LLM connection"
    for line in harness.connections(workspace):
        assert "'127.0.0.1'" in line, line
        assert str(port) in line, line
    assert workspace.termination_log.read_text().startswith("success:")


def test_gpt4o_style_model_goes_through_responses_api(
    workspace: Any, harness: Any, stub: Any
) -> None:
    outcome = harness.run_runner(workspace, workspace.env(**harness.llm_env(stub, "gpt-4o-mini")))
    assert outcome.code == ExitCode.SUCCESS, outcome.lines[-5:]
    assert stub.server.request_paths[0] == "/v1/responses"
    assert outcome.result().startswith(PRAISONAI_PREFIX + "[agentrun stub LLM]")
    assert outcome.result().count("\n") >= 3, "the stub's default answer has several lines"
    for line in harness.connections(workspace):
        assert "'127.0.0.1'" in line, line


@pytest.mark.parametrize(
    ("model", "credentials", "path", "sent_model"),
    [
        (
            "anthropic/claude-sonnet-4-5",
            {"ANTHROPIC_API_KEY": "stub-anthropic-key", "ANTHROPIC_API_BASE": "{root}"},
            "/v1/messages",
            "claude-sonnet-4-5",
        ),
        ("ollama_chat/llama3.2", {"OLLAMA_API_BASE": "{root}"}, "/api/chat", "llama3.2"),
    ],
    ids=["anthropic", "ollama-no-key"],
)
def test_non_openai_provider_runs_through_litellm_with_only_its_own_variables(
    workspace: Any,
    harness: Any,
    stub: Any,
    model: str,
    credentials: dict[str, str],
    path: str,
    sent_model: str,
) -> None:
    """No OpenAI variable at all: the model's provider decides the credentials, and PraisonAI
    reaches the stub through litellm's client for that provider."""
    llm = {k: v.replace("{root}", stub.root_url) for k, v in credentials.items()}
    env = workspace.env(MODEL_NAME=model, **llm)
    assert not [k for k in env if k.startswith("OPENAI_")]
    outcome = harness.run_runner(workspace, env)
    assert outcome.code == ExitCode.SUCCESS, outcome.lines[-5:]
    harness.assert_only_events(outcome)
    assert stub.server.request_paths == [path]
    assert stub.server.requests[0]["model"] == sent_model
    assert outcome.result().startswith(PRAISONAI_PREFIX + "[agentrun stub LLM]")
    assert "Analyze the quarterly sales data" in outcome.result()
    for line in harness.connections(workspace):
        assert "'127.0.0.1'" in line, line


def test_without_model_name_the_default_gpt_4o_mini_is_what_praisonai_calls(
    workspace: Any, harness: Any, stub: Any
) -> None:
    """Unpinned, PraisonAI would pick the 'best' model of its catalogue for the key it finds
    (in 4.7.19: not gpt-4o-mini): the runner pins the model it checked the credentials for."""
    env = workspace.env(OPENAI_API_KEY="stub-key", OPENAI_BASE_URL=stub.base_url)
    outcome = harness.run_runner(workspace, env)
    assert outcome.code == ExitCode.SUCCESS, outcome.lines[-5:]
    assert [body["model"] for body in stub.server.requests] == ["gpt-4o-mini"]


def test_agent_failure_when_the_llm_returns_500(workspace: Any, harness: Any, stub: Any) -> None:
    stub.server.configure(fail_status=500)
    inline = workspace.write("input/agents.yaml", FAST_FAILING_AGENT)
    env = workspace.env(**harness.llm_env(stub), **{contract.ENV_AGENT_YAML_FILE: str(inline)})
    outcome = harness.run_runner(workspace, env)
    assert outcome.code == ExitCode.AGENT_ERROR, outcome.lines[-5:]
    harness.assert_only_events(outcome)
    (error,) = outcome.of("error")
    assert error.data.reason == "agent_error"
    assert error.data.message.startswith("the agent failed:")
    assert outcome.of("start")[0].data.agent_file == "inline"
    assert not outcome.of("result")
    assert stub.server.requests, "the LLM was called"
    logs = " ".join(e.data.message for e in outcome.of("log"))
    assert "configured to fail with HTTP 500" in logs, "PraisonAI's own output became logs"
    assert workspace.termination_log.read_text().startswith("agent_error:")


@pytest.mark.parametrize(
    ("framework", "message"),
    [
        ("crewai", "framework crewai is not installed in this runner image"),
        ("no-such-framework", "unknown framework 'no-such-framework'"),
    ],
)
def test_unavailable_framework_is_bad_input(
    workspace: Any, harness: Any, stub: Any, framework: str, message: str
) -> None:
    env = workspace.env(**harness.llm_env(stub), **{contract.ENV_FRAMEWORK: framework})
    started = time.monotonic()
    outcome = harness.run_runner(workspace, env)
    assert outcome.code == ExitCode.BAD_INPUT
    (error,) = outcome.of("error")
    assert error.data.reason == "bad_input"
    assert message in error.data.message
    assert not stub.server.requests
    assert time.monotonic() - started < 120, "never hangs"


def _host_pid_of_namespace_init(unshare_pid: int) -> int:
    from agentrun_runner.interrupt import descendants

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        children = descendants(unshare_pid)
        if children:
            return children[0]
        time.sleep(0.05)
    raise AssertionError("unshare did not start its child")


def _start_pid1_runner(
    workspace: Any, harness: Any, stub: Any, *, handler: bool
) -> tuple[subprocess.Popen[bytes], int, list[str]]:
    reason = harness.sandbox_prerequisites()
    if reason:
        pytest.skip(f"PID-1 sandbox unavailable: {reason}")
    stub.server.configure(delay_seconds=120)  # the LLM call stays in flight
    extra = {"AGENTRUN_RUNNER_NO_TINI": "1"}  # the runner's own handler, as PID 1
    if not handler:
        extra["AGENTRUN_RUNNER_TEST_NO_SIGNAL_HANDLER"] = "1"
    env = workspace.env(**harness.llm_env(stub), **extra)
    command = harness.sandbox_command(workspace, harness.runner_command())
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE)
    lines: list[str] = []
    harness.read_events_until(process, lines, lambda line: "Starting agent" in line, 180)
    deadline = time.monotonic() + 120
    while not stub.server.requests:
        assert time.monotonic() < deadline, "the agent never called the LLM"
        time.sleep(0.1)
    return process, _host_pid_of_namespace_init(process.pid), lines


def _owned_by_nobody_in_tmp() -> set[str]:
    found = set()
    for entry in os.scandir("/tmp"):
        try:
            if entry.stat(follow_symlinks=False).st_uid == 65534:
                found.add(entry.name)
        except FileNotFoundError:
            continue
    return found


def test_sigterm_as_pid1_interrupts_the_llm_call_at_once(
    workspace: Any, harness: Any, stub: Any
) -> None:
    nobody_files_before = _owned_by_nobody_in_tmp()
    process, pid1, lines = _start_pid1_runner(workspace, harness, stub, handler=True)
    try:
        assert os.stat(f"/proc/{pid1}").st_uid == 65534, "runs as uid 65534"
        with open(f"/proc/{pid1}/status") as handle:
            status = handle.read()
        nspid = status.split("NSpid:")[1].splitlines()[0].split()
        assert nspid[-1] == "1", f"PID 1 in its namespace: {nspid}"
        requests_before = len(stub.server.requests)
        signalled = time.monotonic()
        os.kill(pid1, signal.SIGTERM)
        out, _ = process.communicate(timeout=30)
        elapsed = time.monotonic() - signalled
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    print(f"\nPID-1 runner exited {elapsed:.2f} s after SIGTERM")
    assert process.returncode == ExitCode.INTERRUPTED
    assert elapsed < 10, "exits at once, abandoning the LLM call"
    outcome = harness.parse_outcome(
        workspace, process.returncode, lines + out.decode().splitlines(keepends=True), None, 0
    )
    harness.assert_only_events(outcome)
    assert outcome.kinds()[-1] == "interrupted"
    time.sleep(1)
    assert len(stub.server.requests) == requests_before, "no LLM request after SIGTERM"
    # Read-only packages, uid 65534: it wrote nothing but TMPDIR and the termination log.
    assert workspace.termination_log.read_text() == "interrupted: SIGTERM"
    assert _owned_by_nobody_in_tmp() <= nobody_files_before, "nothing written to /tmp itself"


def test_without_the_handler_pid1_ignores_sigterm(workspace: Any, harness: Any, stub: Any) -> None:
    """The control: the same PID-1 runner with the handler disabled does not exit on SIGTERM,
    so the test above passes because of the handler."""
    process, pid1, _ = _start_pid1_runner(workspace, harness, stub, handler=False)
    try:
        os.kill(pid1, signal.SIGTERM)
        with pytest.raises(subprocess.TimeoutExpired):
            process.wait(timeout=3)
        assert os.path.exists(f"/proc/{pid1}")
    finally:
        os.kill(pid1, signal.SIGKILL)
        process.communicate(timeout=30)
    assert process.returncode != ExitCode.INTERRUPTED
    assert workspace.termination_log.read_text() == ""

"""Pure parts of the runner: inputs, events, the early interrupt line, environment, limits."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from agentrun_contract import runner as contract
from agentrun_contract.limits import RESULT_MAX_BYTES
from agentrun_contract.runner import ExitCode, parse_event_line
from agentrun_runner import interrupt, main
from agentrun_runner.environment import TELEMETRY_OFF, bundled_tiktoken_cache, prepare_environment
from agentrun_runner.events import EventWriter, write_termination_message
from agentrun_runner.inputs import InputError, read_inputs, resolve_agent_file
from agentrun_runner.run import cap_result, describe_failure

AGENT_YAML = "roles:\n  a:\n    role: A\n    goal: g\n    backstory: b\n"


def configmap_dir(root: Path, files: dict[str, str]) -> Path:
    """A directory laid out as the kubelet mounts a ConfigMap: files are symlinks through
    ``..data`` to a timestamped directory."""
    root.mkdir(parents=True)
    stamped = root / "..2026_11_29_10_00_00.000000001"
    stamped.mkdir()
    for name, text in files.items():
        (stamped / name).write_text(text)
    (root / "..data").symlink_to(stamped.name)
    for name in files:
        (root / name).symlink_to(f"..data/{name}")
    return root


# -- inputs ------------------------------------------------------------------------------------


def test_resolve_agent_file_follows_configmap_symlinks(tmp_path: Path) -> None:
    agents = configmap_dir(tmp_path / "agents", {"agents.yaml": AGENT_YAML, "b.yaml": "x: 1"})
    resolved = resolve_agent_file(str(agents), "agents.yaml")
    assert resolved.read_text() == AGENT_YAML
    assert resolved.parent.name.startswith("..2026")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("/etc/passwd", "absolute path"),
        ("../outside.yaml", "must not contain '..'"),
        ("sub/../../outside.yaml", "must not contain '..'"),
        ("", "empty"),
        ("nope.yaml", "was not found"),
        ("escape.yaml", "outside the agent directory"),
        ("subdir", "is not a file"),
    ],
)
def test_resolve_agent_file_rejects(tmp_path: Path, name: str, message: str) -> None:
    agents = tmp_path / "agents"
    agents.mkdir()
    (tmp_path / "outside.yaml").write_text(AGENT_YAML)
    (agents / "escape.yaml").symlink_to(tmp_path / "outside.yaml")
    (agents / "subdir").mkdir()
    with pytest.raises(InputError, match=message):
        resolve_agent_file(str(agents), name)


def test_resolve_agent_file_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        resolve_agent_file(str(tmp_path / "nope"), "agents.yaml")


def _input_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    (tmp_path / "prompt").write_text("Do the thing\nwith two lines")
    agents = tmp_path / "agents"
    agents.mkdir(exist_ok=True)
    (agents / "agents.yaml").write_text(AGENT_YAML)
    env = {
        contract.ENV_RUN_ID: "run_a",
        contract.ENV_NONCE: "n",
        contract.ENV_PROMPT_FILE: str(tmp_path / "prompt"),
        contract.ENV_AGENT_DIR: str(agents),
    }
    env.update(extra)
    return env


def test_read_inputs_agent_dir_and_inline(tmp_path: Path) -> None:
    inputs = read_inputs(_input_env(tmp_path, **{contract.ENV_SESSION_ID: "s1"}))
    assert inputs.prompt == "Do the thing\nwith two lines"
    assert inputs.framework == "praisonai"
    assert inputs.agent_label == "agents.yaml"
    assert inputs.session_id == "s1"
    inline = tmp_path / "inline.yaml"
    inline.write_text(AGENT_YAML)
    env = _input_env(tmp_path, **{contract.ENV_AGENT_YAML_FILE: str(inline)})
    env[contract.ENV_AGENT_FILE] = "does-not-matter.yaml"  # inline wins over the agent file
    inputs = read_inputs(env)
    assert inputs.agent_label == "inline"
    assert inputs.agent_path == inline.resolve()
    assert inputs.agent_config == {"roles": {"a": {"role": "A", "goal": "g", "backstory": "b"}}}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({contract.ENV_RUN_ID: ""}, "AGENTRUN_RUN_ID"),
        ({contract.ENV_NONCE: ""}, "AGENTRUN_NONCE"),
        ({contract.ENV_PROMPT_FILE: "/nonexistent/prompt"}, "does not exist"),
        ({contract.ENV_AGENT_YAML_FILE: "/nonexistent/a.yaml"}, "does not exist"),
        ({contract.ENV_AGENT_FILE: "missing.yaml"}, "was not found"),
    ],
)
def test_read_inputs_rejects(tmp_path: Path, change: dict[str, str], message: str) -> None:
    env = _input_env(tmp_path)
    env.update(change)
    with pytest.raises(InputError, match=message):
        read_inputs(env)


def test_read_inputs_rejects_blank_prompt_and_bad_yaml(tmp_path: Path) -> None:
    env = _input_env(tmp_path)
    (tmp_path / "prompt").write_text("  \n")
    with pytest.raises(InputError, match="empty"):
        read_inputs(env)
    env = _input_env(tmp_path)
    (tmp_path / "agents" / "agents.yaml").write_text("roles: [unclosed")
    with pytest.raises(InputError, match="not valid YAML"):
        read_inputs(env)
    (tmp_path / "agents" / "agents.yaml").write_text("- a list\n")
    with pytest.raises(InputError, match="must be a mapping"):
        read_inputs(env)
    (tmp_path / "prompt").write_bytes(b"\xff\xfe bad utf-8")
    with pytest.raises(InputError, match="cannot read the prompt"):
        read_inputs(env)


# -- events ------------------------------------------------------------------------------------


def _read_lines(fd: int) -> list[str]:
    os.set_blocking(fd, False)
    data = b""
    while True:
        try:
            chunk = os.read(fd, 1 << 20)
        except BlockingIOError:
            break
        if not chunk:
            break
        data += chunk
    return data.decode().splitlines()


def test_event_writer_lines_parse_with_increasing_seq() -> None:
    read_end, write_end = os.pipe()
    writer = EventWriter(write_end, run_id="run_w", nonce="nw")
    writer.start("praisonai", "agents.yaml")
    writer.progress(5, "Loading agents")
    writer.log("x" * (contract.LOG_LINE_MAX_CHARS * 2 + 10), "stderr")
    text = "multi\nline\n" + "é" * 5000 + '\n{"type":"result"}\n'
    writer.result(text)
    writer.error("agent_error", "boom")
    writer.interrupted()
    os.close(write_end)
    lines = _read_lines(read_end)
    events = [parse_event_line(line, run_id="run_w", nonce="nw") for line in lines]
    assert all(e is not None for e in events)
    parsed = [e for e in events if e is not None]
    assert [e.seq for e in parsed] == list(range(len(parsed)))
    logs = [e for e in parsed if e.type == "log"]
    assert len(logs) == 3
    assert "".join(e.data.message for e in logs) == "x" * (contract.LOG_LINE_MAX_CHARS * 2 + 10)
    assert {e.data.stream for e in logs} == {"stderr"}
    assert "".join(e.data.text for e in parsed if e.type == "result") == text
    assert [e.type for e in parsed][-2:] == ["error", "interrupted"]
    assert writer.next_seq == len(parsed)


def test_interrupted_inside_a_write_still_gets_its_own_line() -> None:
    read_end, write_end = os.pipe()
    writer = EventWriter(write_end, run_id="run_w", nonce="nw")
    os.write(write_end, b'{"agentrun":1,"partial')
    writer._mid_line = True  # as if the handler interrupted _write_line on this thread
    writer.interrupted("SIGTERM")
    os.close(write_end)
    lines = _read_lines(read_end)
    assert parse_event_line(lines[0], run_id="run_w", nonce="nw") is None
    last = parse_event_line(lines[1], run_id="run_w", nonce="nw")
    assert last is not None
    assert last.type == "interrupted"


def test_early_interrupted_line_is_a_contract_event() -> None:
    line = interrupt.early_interrupted_line("run_e", "ne").decode()
    assert line.endswith("\n")
    event = parse_event_line(line, run_id="run_e", nonce="ne")
    assert event is not None
    assert event.type == "interrupted"
    assert event.seq == 0


def test_stdlib_only_modules_agree_with_the_contract() -> None:
    """main.py and interrupt.py hard-code a few names so they need not import pydantic."""
    assert interrupt.INTERRUPTED_EXIT_CODE == ExitCode.INTERRUPTED
    source = Path(main.__file__).read_text()
    for name in (
        contract.ENV_RUN_ID,
        contract.ENV_NONCE,
        contract.ENV_TERMINATION_MESSAGE_PATH,
        contract.TERMINATION_MESSAGE_PATH,
    ):
        assert f'"{name}"' in source
    from agentrun_runner import environment

    assert environment.TMP_DIR == contract.TMP_DIR


def test_main_imports_only_the_standard_library() -> None:
    """The handler must be installable before anything heavy: importing main loads neither
    pydantic nor PraisonAI."""
    code = (
        "import sys, agentrun_runner.main\n"
        "heavy = [m for m in ('pydantic', 'praisonai', 'praisonaiagents', 'litellm', 'yaml')"
        " if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == ""
    assert time.monotonic() - started < 30


def test_descendants_finds_children_and_grandchildren() -> None:
    child = subprocess.Popen(["sh", "-c", "sleep 30 & wait"])
    try:
        deadline = time.monotonic() + 10
        found: list[int] = []
        while time.monotonic() < deadline and len(found) < 2:
            found = interrupt.descendants(os.getpid())
            time.sleep(0.05)
        assert child.pid in found
        assert len([p for p in found if p != child.pid]) >= 1
    finally:
        child.kill()
        child.wait()


def test_termination_message_written_and_failures_ignored(tmp_path: Path) -> None:
    path = tmp_path / "termination-log"
    write_termination_message(str(path), ExitCode.BAD_INPUT, "missing agent file")
    assert path.read_text() == "bad_input: missing agent file"
    write_termination_message(str(tmp_path / "no" / "such" / "dir"), ExitCode.SUCCESS, "x")
    write_termination_message(None, ExitCode.SUCCESS, "x")


# -- environment and limits --------------------------------------------------------------------


def test_prepare_environment_telemetry_home_tiktoken_and_urls(tmp_path: Path) -> None:
    env = {
        "HOME": "/nonexistent",
        "TMPDIR": str(tmp_path),
        "OPENAI_API_BASE": "http://127.0.0.1:1/v1",
        "DO_NOT_TRACK": "custom",
    }
    prepare_environment(env)
    assert env["DO_NOT_TRACK"] == "custom", "a value already set wins"
    for key, value in TELEMETRY_OFF.items():
        if key != "DO_NOT_TRACK":
            assert env[key] == value
    assert env["HOME"] == str(tmp_path)
    assert env["XDG_CACHE_HOME"].startswith(str(tmp_path))
    assert env["OPENAI_BASE_URL"] == "http://127.0.0.1:1/v1"
    cache = bundled_tiktoken_cache()
    assert cache is not None, "litellm ships a tiktoken cache; the image relies on it"
    assert env["TIKTOKEN_CACHE_DIR"] == cache
    # cl100k_base and o200k_base, named as tiktoken names its cache files (sha1 of the URL).
    import hashlib

    for encoding in ("cl100k_base", "o200k_base"):
        url = f"https://openaipublic.blob.core.windows.net/encodings/{encoding}.tiktoken"
        assert (Path(cache) / hashlib.sha1(url.encode()).hexdigest()).is_file()


def test_prepare_environment_keeps_a_writable_home(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "TIKTOKEN_CACHE_DIR": "/x"}
    prepare_environment(env)
    assert env["HOME"] == str(tmp_path)
    assert env["TIKTOKEN_CACHE_DIR"] == "/x"
    assert env["TMPDIR"] == "/tmp"


def test_cap_result_cuts_on_a_character_boundary() -> None:
    assert cap_result("short\ntext") == ("short\ntext", False)
    text = "é" * RESULT_MAX_BYTES
    capped, cut = cap_result(text)
    assert cut
    assert len(capped.encode()) <= RESULT_MAX_BYTES
    assert text.startswith(capped)


def test_describe_failure_is_one_short_line() -> None:
    message = describe_failure(RuntimeError("1 of 1 task(s)\nfailed" + "x" * 5000))
    assert message.startswith("the agent failed: RuntimeError: 1 of 1 task(s) failed")
    assert "\n" not in message
    assert len(message) <= 2000


def test_termination_message_path_outside_a_pod_is_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main.termination_message_path({contract.ENV_TERMINATION_MESSAGE_PATH: "/x"}) == "/x"
    monkeypatch.setattr(main, "DEFAULT_TERMINATION_MESSAGE_PATH", str(tmp_path / "absent"))
    assert main.termination_message_path({}) is None
    (tmp_path / "absent").write_text("")
    assert main.termination_message_path({}) == str(tmp_path / "absent")


def test_ensure_installed_puts_the_handler_back() -> None:
    import signal as signals

    previous = {s: signals.getsignal(s) for s in (signals.SIGTERM, signals.SIGINT)}
    interrupter = interrupt.Interrupter(1, "run_g", "ng")
    try:
        assert interrupter.ensure_installed() is False, "nothing to guard before install()"
        assert interrupter.install()
        assert interrupter.ensure_installed() is False
        signals.signal(signals.SIGTERM, signals.SIG_IGN)
        assert interrupter.ensure_installed() is True
        assert signals.getsignal(signals.SIGTERM) == interrupter.handle
    finally:
        for signum, handler in previous.items():
            signals.signal(signum, handler)


async def test_guarded_calls_the_guard_while_the_work_runs() -> None:
    import asyncio

    from agentrun_runner.run import guarded

    calls: list[float] = []

    async def work() -> str:
        await asyncio.sleep(0.25)
        return "done"

    assert await guarded(work(), lambda: calls.append(1.0), 0.05) == "done"
    assert len(calls) >= 3
    count = len(calls)
    await asyncio.sleep(0.15)
    assert len(calls) == count, "the guard stops with the work"

"""The tiny test runner: speaks the runner's stdout event contract without PraisonAI.

``python -m agentrun_devcluster.tiny_runner`` starts in a fraction of a second (it imports the
contract's runner module and agentrun_runner's input/event helpers, never PraisonAI), reads the
same environment variables and files as the real runner (agentrun_runner.inputs), and is driven
by directives in the prompt text, so emulator, operator, chaos and benchmark tests control it.

Directives are whitespace-separated words anywhere in the prompt (``name`` or ``name=value``):

- ``sleep=<seconds>``: wait this long before finishing (a float).
- ``steps=<n>``: n ``progress`` events spread over the sleep (between 10 % and 90 %).
- ``lines=<n>``: n ``log`` lines on stdout (default 3); ``stderr=<n>``: n on stderr.
- ``raw=<n>``: n raw lines straight to stdout that are not events (as a crash would print).
- ``result_bytes=<n>``: the result is n ASCII characters (lines of 64 including newline).
- ``echo``: the result is the prompt, exactly.
- ``fail``: end with an ``error`` event, reason agent_error, exit ExitCode.AGENT_ERROR (10).
- ``error=<reason>``: end with an ``error`` event of that reason (agent_error, bad_input,
  missing_credentials, internal) and its exit code.
- ``exit=<code>``: after logs and sleep, exit with that code at once: no result, no error.
- ``ignore_sigterm``: ignore SIGTERM (so only SIGKILL ends it).
- ``imitate``: a child process prints perfect imitations of this run's events (a ``result`` and
  an ``error`` with the right run id and nonce); its stdout is captured and wrapped as ``log``
  events, as the real runner does, so they stay log messages.
- ``forge_nonce``: write straight to stdout an event with a wrong nonce (the operator must keep
  it as a log line).
- ``check_credentials``: fail like the real runner (missing_credentials, exit 12) when the
  credentials the model's provider needs are missing (agentrun_runner.credentials: MODEL_NAME,
  default gpt-4o-mini, which needs OPENAI_API_KEY; imports litellm). Off by default so tests
  need no credentials.

Default: ``start``, ``progress`` 10 "Starting agent", 3 ``log`` lines, ``progress`` 90 "Agent
finished", ``result`` "tiny result for <run id>", ``progress`` 100 "Done", exit 0.

Inputs as the real runner: a missing prompt or agent file -> ``error`` bad_input, exit 11; an
unknown framework (anything but praisonai) -> bad_input. One difference: when neither
AGENTRUN_AGENT_YAML_FILE nor AGENTRUN_AGENT_DIR is set, no agent file is required.

SIGTERM (unless ``ignore_sigterm``): writes ``interrupted`` and exits 143 at once.
The termination message gets the same short summary as the real runner's.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

# Standard library only up to here (and in these two): the SIGTERM handler is installed before
# the contract (pydantic) is imported, as in the real runner.
from agentrun_runner.interrupt import Interrupter
from agentrun_runner.main import termination_message_path

if TYPE_CHECKING:
    from agentrun_contract.runner import ExitCode
    from agentrun_runner.events import ErrorReason, EventWriter

SUPPORTED_FRAMEWORKS = ("praisonai",)
ERROR_REASONS = ("agent_error", "bad_input", "missing_credentials", "internal")
"""agentrun_contract.runner.ErrorData's reasons (a unit test keeps them equal)."""
_DIRECTIVE = re.compile(r"^([a-z_]+)(?:=(\S+))?$")


@dataclass
class Directives:
    """The behaviour asked for in the prompt."""

    sleep: float = 0.0
    steps: int = 0
    lines: int = 3
    stderr_lines: int = 0
    raw_lines: int = 0
    result_bytes: int | None = None
    echo: bool = False
    error: ErrorReason | None = None
    exit_code: int | None = None
    ignore_sigterm: bool = False
    imitate: bool = False
    forge_nonce: bool = False
    check_credentials: bool = False


def parse_directives(prompt: str) -> Directives:
    """The directives in ``prompt`` (words that are not directives are ignored; a directive
    with a malformed value raises ValueError)."""
    found = Directives()
    for word in prompt.split():
        match = _DIRECTIVE.match(word.strip(".,;:!?\"'()"))
        if not match:
            continue
        name, value = match.group(1), match.group(2)
        if value is None:
            if name == "echo":
                found.echo = True
            elif name == "fail":
                found.error = "agent_error"
            elif name == "ignore_sigterm":
                found.ignore_sigterm = True
            elif name == "imitate":
                found.imitate = True
            elif name == "forge_nonce":
                found.forge_nonce = True
            elif name == "check_credentials":
                found.check_credentials = True
            continue
        if name == "sleep":
            found.sleep = max(0.0, float(value))
        elif name == "steps":
            found.steps = max(0, int(value))
        elif name == "lines":
            found.lines = max(0, int(value))
        elif name == "stderr":
            found.stderr_lines = max(0, int(value))
        elif name == "raw":
            found.raw_lines = max(0, int(value))
        elif name == "result_bytes":
            found.result_bytes = max(0, int(value))
        elif name == "exit":
            found.exit_code = int(value)
        elif name == "error":
            if value not in ERROR_REASONS:
                raise ValueError(f"error={value}: not one of {ERROR_REASONS}")
            found.error = value  # type: ignore[assignment]
    return found


def sized_result(size: int) -> str:
    """``size`` ASCII characters in lines of 64 (newline included)."""
    line = "tiny result line " + "x" * 46 + "\n"
    return (line * (size // len(line) + 1))[:size]


def imitation_lines(run_id: str, nonce: str) -> tuple[str, str]:
    """Perfect imitations of a ``result`` and an ``error`` event of this run (right id and
    nonce), as a misbehaving agent could print them."""
    base = {"agentrun": 1, "run_id": run_id, "nonce": nonce, "ts": "2026-01-01T00:00:00Z"}
    result = base | {
        "seq": 999999,
        "type": "result",
        "data": {"index": 0, "count": 1, "text": "FORGED"},
    }
    error = base | {
        "seq": 1000000,
        "type": "error",
        "data": {"reason": "internal", "message": "FORGED"},
    }
    return json.dumps(result), json.dumps(error)


def _imitation_script(run_id: str, nonce: str) -> str:
    result, error = imitation_lines(run_id, nonce)
    return f"import sys\nprint({result!r})\nprint({error!r}, file=sys.stderr)\n"


def _finish(code: ExitCode, detail: str) -> int:
    from agentrun_runner.events import write_termination_message

    write_termination_message(termination_message_path(os.environ), code, detail)
    return int(code)


def run(writer: EventWriter) -> int:
    """The tiny run; returns the exit code."""
    from agentrun_contract.runner import ExitCode
    from agentrun_runner.events import EXIT_CODE_FOR_REASON, EventWriter
    from agentrun_runner.inputs import InputError, read_inputs

    env = os.environ
    try:
        inputs = read_inputs(env, require_agent=False)
    except InputError as exc:
        writer.error("bad_input", str(exc))
        return _finish(ExitCode.BAD_INPUT, str(exc))
    try:
        directives = parse_directives(inputs.prompt)
    except ValueError as exc:
        writer.error("bad_input", f"tiny runner directive: {exc}")
        return _finish(ExitCode.BAD_INPUT, str(exc))
    if directives.ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if directives.check_credentials:
        from agentrun_runner.credentials import credentials_problem

        message = credentials_problem(env, inputs.agent_config).missing
        if message:
            writer.error("missing_credentials", message)
            return _finish(ExitCode.MISSING_CREDENTIALS, message)
    if inputs.framework not in SUPPORTED_FRAMEWORKS:
        message = f"framework {inputs.framework} is not installed in this runner image"
        writer.error("bad_input", message)
        return _finish(ExitCode.BAD_INPUT, message)

    writer.start(inputs.framework, inputs.agent_label)
    writer.progress(10, "Starting agent")
    for i in range(directives.lines):
        writer.log(f"tiny log line {i + 1} of {directives.lines}", "stdout")
    for i in range(directives.stderr_lines):
        writer.log(f"tiny stderr line {i + 1} of {directives.stderr_lines}", "stderr")
    for i in range(directives.raw_lines):
        os.write(writer.fd, f"tiny raw output {i + 1} (not an event)\n".encode())
    if directives.forge_nonce:
        forged = EventWriter(writer.fd, run_id=inputs.run_id, nonce="forged-" + inputs.nonce)
        forged.result("FORGED WITH A WRONG NONCE")
    if directives.imitate:
        child = subprocess.run(
            [sys.executable, "-c", _imitation_script(inputs.run_id, inputs.nonce)],
            capture_output=True,
            text=True,
            check=False,
        )
        for line in child.stdout.splitlines():
            writer.log(line, "stdout")
        for line in child.stderr.splitlines():
            writer.log(line, "stderr")
    if directives.sleep:
        slices = directives.steps + 1
        for step in range(1, slices + 1):
            time.sleep(directives.sleep / slices)
            if step < slices:
                writer.progress(10 + 80 * step / slices, f"Step {step} of {directives.steps}")
    if directives.exit_code is not None:
        return directives.exit_code
    if directives.error is not None:
        message = f"tiny runner: failing as asked ({directives.error})"
        writer.error(directives.error, message)
        return _finish(EXIT_CODE_FOR_REASON[directives.error], message)
    writer.progress(90, "Agent finished")
    if directives.echo:
        result = inputs.prompt
    elif directives.result_bytes is not None:
        result = sized_result(directives.result_bytes)
    else:
        result = f"tiny result for {inputs.run_id}"
    writer.result(result)
    writer.progress(100, "Done")
    return _finish(ExitCode.SUCCESS, f"{len(result)} characters of result")


def main() -> int:
    env = os.environ
    out_fd = os.dup(1)
    os.set_inheritable(out_fd, False)
    interrupter = Interrupter(out_fd, env.get("AGENTRUN_RUN_ID", ""), env.get("AGENTRUN_NONCE", ""))
    interrupter.termination_message_path = termination_message_path(env)
    interrupter.install()

    from agentrun_contract.runner import ExitCode
    from agentrun_runner.events import EventWriter

    writer = EventWriter(out_fd, run_id=interrupter.run_id, nonce=interrupter.nonce)
    interrupter.writer = writer
    try:
        code = run(writer)
    except Exception as exc:  # the tiny runner's own bug: still end with a clear event
        writer.error("internal", f"tiny runner crashed: {type(exc).__name__}: {exc}")
        code = ExitCode.INTERNAL
    return code


if __name__ == "__main__":
    sys.exit(main())

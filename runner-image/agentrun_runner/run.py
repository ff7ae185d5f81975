"""One agent task, from inputs to the result event and the exit code (see agentrun_runner.main).

Imported after the signal handler is installed. Inputs are checked first (stdlib and YAML only),
then the ``start`` event is written, then, with the output captured, the LLM credentials are
checked for the provider of each model the run will call (agentrun_runner.credentials, which
imports litellm), and only then is PraisonAI imported.
"""

from __future__ import annotations

import asyncio
import os
import traceback
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from agentrun_contract.limits import RESULT_MAX_BYTES
from agentrun_contract.runner import ExitCode

from agentrun_runner.capture import OutputCapture
from agentrun_runner.credentials import credentials_problem, pin_default_model
from agentrun_runner.environment import prepare_environment
from agentrun_runner.events import ErrorReason, EventWriter, write_termination_message
from agentrun_runner.inputs import InputError, read_inputs
from agentrun_runner.interrupt import Interrupter

ERROR_MESSAGE_MAX_CHARS = 2000
"""The ``error`` event's message is a sentence for a human, not a dump."""
HANDLER_CHECK_SECONDS = 0.5
"""How often, while the agent runs, the SIGTERM handler is checked and put back if replaced."""


async def guarded(
    work: Coroutine[Any, Any, str], guard: Callable[[], object], interval: float
) -> str:
    """Await ``work`` while calling ``guard()`` every ``interval`` seconds on this (the main)
    thread: a library that installs its own SIGTERM handler mid-run cannot disable ours."""

    async def keep() -> None:
        while True:
            guard()
            await asyncio.sleep(interval)

    keeper = asyncio.create_task(keep())
    try:
        return await work
    finally:
        keeper.cancel()


def cap_result(text: str) -> tuple[str, bool]:
    """``text`` cut to RESULT_MAX_BYTES of UTF-8 (on a character boundary); True when cut."""
    encoded = text.encode("utf-8")
    if len(encoded) <= RESULT_MAX_BYTES:
        return text, False
    return encoded[:RESULT_MAX_BYTES].decode("utf-8", errors="ignore"), True


def describe_failure(exc: BaseException) -> str:
    """The agent's failure as one short sentence."""
    detail = " ".join(str(exc).split()) or "(no message)"
    return f"the agent failed: {type(exc).__name__}: {detail}"[:ERROR_MESSAGE_MAX_CHARS]


class Task:
    """Reports through ``writer`` and finishes with an exit code."""

    def __init__(
        self,
        writer: EventWriter,
        termination_message_path: str | None,
        guard: Callable[[], object] = lambda: None,
    ) -> None:
        self.writer = writer
        self.termination_message_path = termination_message_path
        self.guard = guard

    def fail(self, reason: ErrorReason, code: ExitCode, message: str) -> int:
        self.writer.error(reason, message)
        write_termination_message(self.termination_message_path, code, message)
        return int(code)

    def _run_agent(
        self, framework_name: str, agent_path: Path, prompt: str
    ) -> tuple[tuple[ErrorReason, ExitCode, str] | None, str]:
        """(the failure or None, the result): PraisonAI runs the agent."""
        from agentrun_runner.agent import resolve_framework, run_agent

        try:
            framework = resolve_framework(framework_name)
        except InputError as exc:
            return ("bad_input", ExitCode.BAD_INPUT, str(exc)), ""
        self.writer.progress(10, "Starting agent")
        try:
            work = run_agent(framework, agent_path, prompt)
            return None, asyncio.run(guarded(work, self.guard, HANDLER_CHECK_SECONDS))
        except (Exception, SystemExit) as exc:  # an agent calling sys.exit failed too
            # The traceback goes to the captured stderr: log events, for whoever debugs.
            traceback.print_exc()
            return ("agent_error", ExitCode.AGENT_ERROR, describe_failure(exc)), ""

    def run(self) -> int:
        env = os.environ
        try:
            inputs = read_inputs(env)
        except InputError as exc:
            return self.fail("bad_input", ExitCode.BAD_INPUT, str(exc))
        assert inputs.agent_path is not None  # read_inputs requires an agent file by default
        writer = self.writer
        writer.start(inputs.framework, inputs.agent_label)
        writer.progress(5, "Loading agents")
        capture = OutputCapture(writer)
        capture.start()
        failure: tuple[ErrorReason, ExitCode, str] | None = None
        result = ""
        try:
            credentials = credentials_problem(env, inputs.agent_config)
            for note in credentials.notes:
                writer.log(note, "stderr")
            if credentials.missing:
                failure = ("missing_credentials", ExitCode.MISSING_CREDENTIALS, credentials.missing)
            else:
                pin_default_model(env)
                failure, result = self._run_agent(
                    inputs.framework, inputs.agent_path, inputs.prompt
                )
        finally:
            capture.stop()
        if failure is not None:
            return self.fail(*failure)
        writer.progress(90, "Agent finished")
        result, cut = cap_result(result)
        if cut:
            writer.log(f"the result was cut to {RESULT_MAX_BYTES} bytes (the limit)", "stderr")
        writer.result(result)
        writer.progress(100, "Done")
        write_termination_message(
            self.termination_message_path,
            ExitCode.SUCCESS,
            f"{len(result.encode())} bytes of result{' (cut)' if cut else ''}",
        )
        return int(ExitCode.SUCCESS)


def run_task(out_fd: int, interrupter: Interrupter) -> int:
    """Run the task with events on ``out_fd``; the exit code. Never raises."""
    writer = EventWriter(out_fd, run_id=interrupter.run_id, nonce=interrupter.nonce)
    interrupter.writer = writer
    task = Task(writer, interrupter.termination_message_path, interrupter.ensure_installed)
    try:
        prepare_environment(os.environ)
        return task.run()
    except BaseException as exc:  # a bug of the runner itself: still a clear, final event
        return task.fail(
            "internal",
            ExitCode.INTERNAL,
            f"the runner failed: {type(exc).__name__}: {exc}"[:ERROR_MESSAGE_MAX_CHARS],
        )

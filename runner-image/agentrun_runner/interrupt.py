"""SIGTERM/SIGINT handling, installed first thing in main, before any heavy import.

Standard library only: importing this module must cost nothing, so the handler is in place
within milliseconds of the process starting. As PID 1 in its container the kernel ignores SIGTERM
unless a handler is installed; without one a run would go on through the whole grace period
(seen on a real cluster: a new LLM request 10 s after the Job's deadline).

On a signal: kill the agent's child processes, write one ``interrupted`` event, write the
termination message, and ``os._exit(143)`` at once, abandoning any LLM call in flight.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from datetime import UTC, datetime
from types import FrameType
from typing import Protocol

INTERRUPTED_EXIT_CODE = 143
"""agentrun_contract.runner.ExitCode.INTERRUPTED (not imported: the contract imports pydantic)."""
ENV_DISABLE_HANDLER_FOR_TESTS = "AGENTRUN_RUNNER_TEST_NO_SIGNAL_HANDLER"
"""Test-only: ``1`` skips installing the handler, so a test can show that the handler is what
makes a PID-1 runner exit on SIGTERM."""


class InterruptWriter(Protocol):
    """What the handler needs from the event writer (agentrun_runner.events.EventWriter)."""

    def interrupted(self, signal_name: str = "SIGTERM") -> None: ...


def early_interrupted_line(run_id: str, nonce: str, seq: int = 0) -> bytes:
    """An ``interrupted`` event built with the standard library only, for a signal that arrives
    before the event writer exists (nothing has been written yet, so ``seq`` is 0). The runner
    tests check that the contract's parser accepts it."""
    event = {
        "agentrun": 1,
        "run_id": run_id,
        "nonce": nonce,
        "seq": seq,
        "ts": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "type": "interrupted",
        "data": {"signal": "SIGTERM"},
    }
    return (json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def descendants(pid: int, proc: str = "/proc") -> list[int]:
    """The pids of all descendants of ``pid`` (children first), read from ``/proc``."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir(proc)
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"{proc}/{entry}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        # The command name may contain spaces and parentheses: the fields after the last ')'
        # are "state ppid ...".
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) >= 2:
            children.setdefault(int(fields[1]), []).append(int(entry))
    found: list[int] = []
    queue = [pid]
    while queue:
        for child in children.get(queue.pop(0), []):
            found.append(child)
            queue.append(child)
    return found


def kill_descendants() -> None:
    """SIGKILL every descendant process (the agent's tools, shells, ...)."""
    for pid in descendants(os.getpid()):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


class Interrupter:
    """The signal handler's state: filled in as the runner starts up."""

    def __init__(self, out_fd: int, run_id: str, nonce: str) -> None:
        self.out_fd = out_fd
        self.run_id = run_id
        self.nonce = nonce
        self.writer: InterruptWriter | None = None
        self.termination_message_path: str | None = None
        self._installed = False

    def install(self) -> bool:
        """Install the handler for SIGTERM and SIGINT; False when disabled for a test."""
        if os.environ.get(ENV_DISABLE_HANDLER_FOR_TESTS) == "1":
            return False
        signal.signal(signal.SIGTERM, self.handle)
        signal.signal(signal.SIGINT, self.handle)
        self._installed = True
        return True

    def ensure_installed(self) -> bool:
        """Put the handler back if something (a library the agent imported) replaced it; True
        when it had to. Main thread only (as every ``signal.signal``)."""
        if not self._installed:
            return False
        replaced = False
        for signum in (signal.SIGTERM, signal.SIGINT):
            if signal.getsignal(signum) != self.handle:
                signal.signal(signum, self.handle)
                replaced = True
        return replaced

    def handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        try:
            kill_descendants()
            if self.writer is not None:
                self.writer.interrupted(name)
            else:
                os.write(self.out_fd, early_interrupted_line(self.run_id, self.nonce))
            if self.termination_message_path:
                with open(self.termination_message_path, "w", encoding="utf-8") as handle:
                    handle.write(f"interrupted: {name}")
        except BaseException:
            pass
        finally:
            os._exit(INTERRUPTED_EXIT_CODE)

"""Writing the runner's stdout events: one JSON line each, flushed, with a strictly increasing seq.

The only writer of the container's real stdout. The agent's fds 1 and 2 are pipes (see
:mod:`agentrun_runner.capture`); this writer holds a dup of the original fd 1. Everything goes
through :meth:`EventWriter.emit`, under one lock, so lines from the log reader threads, the main
thread and the signal handler never interleave and ``seq`` is strictly increasing.

Imports only the standard library and the contract's runner module (no PraisonAI), so the tiny
test runner can use it too.
"""

from __future__ import annotations

import errno
import os
import threading
from typing import Any, Literal

from agentrun_contract.runner import (
    LOG_LINE_MAX_CHARS,
    ExitCode,
    encode_event,
    make_event,
    split_result,
    termination_summary,
)

ErrorReason = Literal["agent_error", "bad_input", "missing_credentials", "internal"]

EXIT_CODE_FOR_REASON: dict[ErrorReason, ExitCode] = {
    "agent_error": ExitCode.AGENT_ERROR,
    "bad_input": ExitCode.BAD_INPUT,
    "missing_credentials": ExitCode.MISSING_CREDENTIALS,
    "internal": ExitCode.INTERNAL,
}


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd``; a reader that went away (EPIPE) is ignored."""
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except InterruptedError:
            continue
        except OSError as exc:
            if exc.errno in (errno.EPIPE, errno.EBADF):
                return
            raise
        view = view[written:]


class EventWriter:
    """Writes this run's events to ``fd``."""

    def __init__(self, fd: int, *, run_id: str, nonce: str, first_seq: int = 0) -> None:
        self.fd = fd
        self.run_id = run_id
        self.nonce = nonce
        self._seq = first_seq
        # Re-entrant: the signal handler runs on the main thread, possibly inside emit().
        self._lock = threading.RLock()
        self._mid_line = False

    @property
    def next_seq(self) -> int:
        return self._seq

    def _write_line(self, line: str) -> None:
        self._mid_line = True
        write_all(self.fd, (line + "\n").encode())
        self._mid_line = False

    def emit(self, kind: str, data: dict[str, Any]) -> None:
        """Write one event of type ``kind``."""
        with self._lock:
            event = make_event(kind, run_id=self.run_id, nonce=self.nonce, seq=self._seq, data=data)
            self._seq += 1
            self._write_line(encode_event(event))

    def start(self, framework: str, agent_file: str | None) -> None:
        self.emit("start", {"framework": framework, "agent_file": agent_file})

    def progress(self, percentage: float, current_step: str) -> None:
        self.emit("progress", {"percentage": percentage, "current_step": current_step})

    def log(self, message: str, stream: Literal["stdout", "stderr"] = "stdout") -> None:
        """One ``log`` event per :data:`LOG_LINE_MAX_CHARS` characters of ``message``."""
        pieces = [
            message[i : i + LOG_LINE_MAX_CHARS] for i in range(0, len(message), LOG_LINE_MAX_CHARS)
        ] or [""]
        with self._lock:
            for piece in pieces:
                self.emit("log", {"message": piece, "stream": stream})

    def error(self, reason: ErrorReason, message: str) -> None:
        self.emit("error", {"reason": reason, "message": message})

    def result(self, text: str) -> None:
        """The ``result`` events (chunked); joining their text gives ``text`` back exactly."""
        with self._lock:
            events = split_result(text, run_id=self.run_id, nonce=self.nonce, first_seq=self._seq)
            self._seq += len(events)
            for event in events:
                self._write_line(encode_event(event))

    def interrupted(self, signal_name: str = "SIGTERM") -> None:
        """Write ``interrupted``; safe from a signal handler that interrupted :meth:`emit`."""
        acquired = self._lock.acquire(timeout=2)
        try:
            if self._mid_line:
                # The handler interrupted a write on this thread: end that (now broken) line
                # so the event stands on its own line.
                write_all(self.fd, b"\n")
            event = make_event(
                "interrupted",
                run_id=self.run_id,
                nonce=self.nonce,
                seq=self._seq,
                data={"signal": signal_name},
            )
            self._seq += 1
            self._write_line(encode_event(event))
        finally:
            if acquired:
                self._lock.release()


def write_termination_message(path: str | None, exit_code: ExitCode, detail: str) -> None:
    """Write the short summary to the termination message file; failures are ignored (the file
    is a courtesy: the events and the exit code carry the facts)."""
    if not path:
        return
    try:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(termination_summary(exit_code, detail))
    except OSError:
        pass

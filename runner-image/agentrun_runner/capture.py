"""Capturing the agent's output: fds 1 and 2 become pipes, each line becomes a ``log`` event.

``os.dup2`` on the real file descriptors (not just ``sys.stdout``), so child processes that
inherit fds 1 and 2 are captured too. The runner's events go to a dup of the original fd 1 (see
:class:`agentrun_runner.events.EventWriter`), so nothing the agent prints, not even a perfect
imitation of an event, can reach stdout other than wrapped as a ``log`` message.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from typing import Literal

from agentrun_contract.runner import LOG_LINE_MAX_CHARS

from agentrun_runner.events import EventWriter

Stream = Literal["stdout", "stderr"]
_READ_BYTES = 65536
_MAX_PENDING_BYTES = 4 * LOG_LINE_MAX_CHARS
"""A line without a newline is flushed in pieces once this long, so memory stays bounded."""


class OutputCapture:
    """Redirects fds 1 and 2 into pipes read by threads that write ``log`` events."""

    def __init__(self, writer: EventWriter) -> None:
        self.writer = writer
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for fd, stream in ((1, "stdout"), (2, "stderr")):
            read_end, write_end = os.pipe()
            os.dup2(write_end, fd)  # inheritable: children write into the pipe too
            os.close(write_end)
            thread = threading.Thread(
                target=self._pump, args=(read_end, stream), name=f"capture-{stream}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        for text_stream in (sys.stdout, sys.stderr):
            # fds 1 and 2 are now pipes: Python would block-buffer them; line-buffer instead
            # so output appears as it happens.
            reconfigure = getattr(text_stream, "reconfigure", None)
            if reconfigure is not None:
                reconfigure(line_buffering=True)

    def _emit(self, raw: bytes, stream: Stream) -> None:
        self.writer.log(raw.decode("utf-8", errors="replace").removesuffix("\r"), stream)

    def _pump(self, read_end: int, stream: Stream) -> None:
        pending = b""
        try:
            while chunk := os.read(read_end, _READ_BYTES):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    self._emit(line, stream)
                if len(pending) > _MAX_PENDING_BYTES:
                    self._emit(pending, stream)
                    pending = b""
            if pending:
                self._emit(pending, stream)
        finally:
            os.close(read_end)

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop capturing: point fds 1 and 2 at /dev/null and wait for the readers to drain.

        Returns False when a reader did not finish within ``timeout`` (a child process still
        holds the pipe open); its later output is dropped.
        """
        for text_stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                text_stream.flush()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        os.close(devnull)
        drained = True
        for thread in self._threads:
            thread.join(timeout)
            drained = drained and not thread.is_alive()
        return drained

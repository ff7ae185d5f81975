"""``agentrun-runner``: the runner image's entrypoint. Runs one agent task and reports it as
stdout events (agentrun_contract.runner).

Order matters:

1. Standard library only: dup the real stdout (the events' channel) and install the SIGTERM/
   SIGINT handler (agentrun_runner.interrupt) within milliseconds of start. As PID 1 without
   tini, re-exec under tini when the image has it (the Job overrides the image's ENTRYPOINT with
   an explicit ``command``, so tini is put back in front here).
2. Environment: telemetry off, TMPDIR/HOME, tiktoken cache (agentrun_runner.environment).
3. Inputs, checked before anything heavy is imported: a failure is an ``error`` event with
   reason bad_input and its exit code. Then the ``start`` event.
4. The agent's fds 1 and 2 are captured (agentrun_runner.capture); the LLM credentials are
   checked for the provider of each model the run calls (agentrun_runner.credentials, through
   litellm; reason missing_credentials), then PraisonAI is imported and the agent runs; the
   result is written as ``result`` events; the termination message gets a short summary.

Exit codes: agentrun_contract.runner.ExitCode. The process ends with ``os._exit`` so that no
thread or ``atexit`` hook left behind by the agent's libraries can delay or alter the exit.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Mapping

from agentrun_runner.interrupt import Interrupter

ENV_NO_TINI = "AGENTRUN_RUNNER_NO_TINI"
"""``1``: never re-exec under tini, even as PID 1."""
DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"
TINI_PATHS = ("/usr/bin/tini", "/sbin/tini", "/usr/local/bin/tini")


def _tini() -> str | None:
    for path in TINI_PATHS:
        if os.access(path, os.X_OK):
            return path
    return shutil.which("tini")


def _reexec_under_tini() -> None:
    """As PID 1, hand PID 1 to tini (reaps zombies, forwards signals to our process group)."""
    if os.getpid() != 1 or os.environ.get(ENV_NO_TINI) == "1":
        return
    tini = _tini()
    if tini is None:
        return
    os.environ[ENV_NO_TINI] = "1"
    # If tini cannot be exec'd, go on as PID 1 ourselves: the handler below still works.
    with contextlib.suppress(OSError):
        os.execv(tini, [tini, "-g", "--", sys.executable, "-m", "agentrun_runner", *sys.argv[1:]])


def termination_message_path(env: Mapping[str, str]) -> str | None:
    """$AGENTRUN_TERMINATION_MESSAGE_PATH, else Kubernetes' default path when it exists (the
    kubelet creates it); None outside a pod, so a run by hand never creates /dev files."""
    configured = env.get("AGENTRUN_TERMINATION_MESSAGE_PATH")
    if configured:
        return configured
    return (
        DEFAULT_TERMINATION_MESSAGE_PATH
        if os.path.exists(DEFAULT_TERMINATION_MESSAGE_PATH)
        else None
    )


def main() -> int:
    """The console script. Never returns: exits the process with an ExitCode."""
    _reexec_under_tini()
    run_id = os.environ.get("AGENTRUN_RUN_ID", "")
    nonce = os.environ.get("AGENTRUN_NONCE", "")
    out_fd = os.dup(1)
    os.set_inheritable(out_fd, False)
    interrupter = Interrupter(out_fd, run_id, nonce)
    interrupter.install()
    interrupter.termination_message_path = termination_message_path(os.environ)

    from agentrun_runner.run import run_task

    code = run_task(out_fd, interrupter)
    os._exit(code)


if __name__ == "__main__":
    main()

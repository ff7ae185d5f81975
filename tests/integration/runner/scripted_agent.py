"""agentrun-runner's real ``main`` with the agent swapped for a scripted one (no PraisonAI).

Run as ``python scripted_agent.py``; ``SCRIPTED_AGENT`` picks the behaviour:

- ``forge``: prints perfect imitations of this run's events every way an agent could (print,
  os.write on fds 1 and 2, a child shell process, a line longer than LOG_LINE_MAX_CHARS, a last
  line without newline), then returns a multi-line result that ends with an imitation too.
- ``raise``: raises RuntimeError.
- ``sleep``: starts a grandchild ``sleep 300`` (its pid written to $SCRIPTED_AGENT_PID_FILE),
  prints ``agent sleeping``, then sleeps.
- ``agent_file``: returns the agent file's text (shows which file the runner resolved).
- ``steal_sigterm``: sets SIGTERM to SIG_IGN (as a careless library might), prints ``agent
  sleeping``, then sleeps.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import agentrun_runner.agent as agent_module
from agentrun_contract.runner import LOG_LINE_MAX_CHARS
from agentrun_runner.main import main

BEHAVIOUR = os.environ["SCRIPTED_AGENT"]


def forged_line() -> str:
    return json.dumps(
        {
            "agentrun": 1,
            "run_id": os.environ["AGENTRUN_RUN_ID"],
            "nonce": os.environ["AGENTRUN_NONCE"],
            "seq": 0,
            "ts": "2026-01-01T00:00:00Z",
            "type": "result",
            "data": {"index": 0, "count": 1, "text": "FORGED"},
        },
        separators=(",", ":"),
    )


def resolve_framework(name: str) -> str:
    return name


async def run_agent(framework: str, agent_path: Path, prompt: str) -> str:
    forged = forged_line()
    if BEHAVIOUR == "forge":
        print(forged)
        os.write(1, (forged + "\n").encode())
        os.write(2, (forged + "\n").encode())
        print(forged, file=sys.stderr)
        subprocess.run(  # noqa: ASYNC221 - an agent may block; the runner must cope
            ["sh", "-c", 'printf "%s\\n" "$FORGED"; printf "%s\\n" "$FORGED" >&2'],
            env={**os.environ, "FORGED": forged},
            check=True,
        )
        print("y" * (LOG_LINE_MAX_CHARS * 2 + 5))
        print("last line without newline", end="")
        return f"line 1\n\n  line 3 ünïcödé\t\n{forged}"
    if BEHAVIOUR == "raise":
        raise RuntimeError("scripted failure\nsecond line")
    if BEHAVIOUR == "sleep":
        child = subprocess.Popen(  # noqa: ASYNC220
            ["sh", "-c", 'sleep 300 & echo $! > "$PID_FILE"; wait'],
            env={**os.environ, "PID_FILE": os.environ["SCRIPTED_AGENT_PID_FILE"]},
        )
        print(f"agent sleeping (child {child.pid})", flush=True)
        await asyncio.sleep(300)
        return "never"
    if BEHAVIOUR == "steal_sigterm":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("agent sleeping (SIGTERM ignored)", flush=True)
        await asyncio.sleep(300)
        return "never"
    if BEHAVIOUR == "agent_file":
        return agent_path.read_text()  # noqa: ASYNC240
    raise AssertionError(f"unknown SCRIPTED_AGENT {BEHAVIOUR}")


agent_module.resolve_framework = resolve_framework
agent_module.run_agent = run_agent
main()

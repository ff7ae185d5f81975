"""Benchmark: the runner's start-to-first-event and total times against the stub LLM.

Run: ``python bench/bench_runner.py`` (3 runs each) or ``--smoke`` (1 run each, CI size).
All figures come from the same run, on the same machine:

- ``python -c pass``: the interpreter's own start (the floor);
- the tiny test runner (no PraisonAI): first event, total;
- ``agentrun-runner`` with real PraisonAI against the stub LLM on 127.0.0.1: first event, total;
- the comparison: a bare ``praisonai.arun`` of the same agent in a fresh interpreter (what the
  runner adds is the difference).

Issue 5 measured on a real cluster: the agent's run inside the pod took about 6-7 s against a
stub LLM; a bare praisonai run took 4 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from agentrun_devcluster.stub_llm import StubLLMThread

REPO = Path(__file__).resolve().parents[1]
AGENTS = REPO / "runner-image" / "agents" / "agents.yaml"
PROMPT = "Analyze the quarterly sales data"

BARE_PRAISONAI = f"""
import asyncio, praisonai
result = asyncio.run(praisonai.arun(agent_file={str(AGENTS)!r}, framework="praisonai",
                                    cli_config={{"topic": {PROMPT!r}}}))
assert result.startswith("### PraisonAI Output ###"), result[:200]
"""


def timed(command: list[str], env: dict[str, str]) -> tuple[float | None, float]:
    """(seconds to the first stdout line or None, seconds to exit); the command must exit 0."""
    started = time.monotonic()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE)
    assert process.stdout is not None
    first = None
    for _ in process.stdout:
        if first is None:
            first = time.monotonic() - started
    code = process.wait()
    total = time.monotonic() - started
    if code != 0:
        raise SystemExit(f"{command} exited {code}")
    return first, total


def report(name: str, samples: list[tuple[float | None, float]]) -> None:
    firsts = [s[0] for s in samples if s[0] is not None]
    totals = [s[1] for s in samples]
    first = f"{statistics.median(firsts):6.2f} s" if firsts else "     - "
    print(
        f"{name:<34} first event {first}   "
        f"total {statistics.median(totals):6.2f} s   (median of {len(samples)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="CI size: one run each")
    parser.add_argument("--runs", type=int, default=None)
    args = parser.parse_args()
    runs = args.runs or (1 if args.smoke else 3)

    with tempfile.TemporaryDirectory() as tmp, StubLLMThread() as stub:
        prompt = Path(tmp) / "prompt"
        prompt.write_text(PROMPT)
        base = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTRUN_", "OPENAI_"))}
        env = base | {
            "AGENTRUN_RUN_ID": "run_bench",
            "AGENTRUN_NONCE": "bench",
            "AGENTRUN_PROMPT_FILE": str(prompt),
            "AGENTRUN_AGENT_DIR": str(AGENTS.parent),
            "AGENTRUN_TERMINATION_MESSAGE_PATH": str(Path(tmp) / "termination-log"),
            "OPENAI_API_KEY": "stub",
            "OPENAI_BASE_URL": stub.base_url,
            "MODEL_NAME": "openai/agentrun-stub",
            "TMPDIR": tmp,
        }
        from agentrun_runner.environment import prepare_environment

        bare_env = dict(env)
        prepare_environment(bare_env)  # the same telemetry and tiktoken settings: a fair floor

        print(f"runner benchmark, {runs} run(s) each, stub LLM at {stub.base_url}")
        report("python -c pass", [timed([sys.executable, "-c", "pass"], env) for _ in range(runs)])
        tiny = [sys.executable, "-m", "agentrun_devcluster.tiny_runner"]
        report("tiny runner", [timed(tiny, env) for _ in range(runs)])
        runner = [sys.executable, "-m", "agentrun_runner"]
        report("agentrun-runner (PraisonAI)", [timed(runner, env) for _ in range(runs)])
        bare = [sys.executable, "-c", BARE_PRAISONAI]
        report("bare praisonai.arun (comparison)", [timed(bare, bare_env) for _ in range(runs)])
        print(f"stub LLM requests served: {len(stub.server.requests)}")


if __name__ == "__main__":
    main()

"""Running agentrun-runner as a real process, observed from outside.

- :class:`RunnerWorkspace`: a world-readable directory (so a runner dropped to uid 65534 can read
  its inputs) with the prompt, agent files, a TMPDIR and a termination-log file.
- An audit hook, loaded through a ``sitecustomize`` on PYTHONPATH, records every socket
  connection and DNS lookup, and every import of PraisonAI or litellm, to a file.
- :func:`sandbox_command`: the runner as PID 1 of a new PID namespace (``unshare --pid --fork
  --mount-proc``), in a new mount namespace where the Python installation and the repository
  are read-only, as uid/gid 65534 with no capabilities.
"""

from __future__ import annotations

import os
import shlex
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from agentrun_contract import runner as contract
from agentrun_contract.runner import RunnerEvent, parse_event_line
from agentrun_devcluster.stub_llm import StubLLMThread

REPO = Path(__file__).resolve().parents[3]
NOBODY = 65534

SITECUSTOMIZE = """
import os, sys
_log = os.environ.get("AGENTRUN_TEST_AUDIT_LOG")
_seen = set()
def _record(line):
    try:
        with open(_log, "a") as handle:
            handle.write(line + "\\n")
    except OSError:
        pass
def _hook(event, args):
    if event == "socket.connect":
        address = args[1]
        _record("connect " + repr(address))
    elif event == "socket.getaddrinfo":
        _record("getaddrinfo " + repr(args[0]) + " " + repr(args[1]))
    elif event == "import":
        top = str(args[0]).split(".")[0]
        if top in ("praisonai", "praisonaiagents", "litellm") and top not in _seen:
            _seen.add(top)
            _record("import " + top)
if _log:
    sys.addaudithook(_hook)
"""


@dataclass
class RunnerWorkspace:
    root: Path
    run_id: str = "run_runnertest"
    nonce: str = "nonce-7f3a"

    @property
    def prompt_file(self) -> Path:
        return self.root / "input" / "prompt"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def termination_log(self) -> Path:
        return self.root / "termination-log"

    @property
    def audit_log(self) -> Path:
        return self.root / "audit.log"

    def write(self, relative: str, text: str) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in [path.parent, *path.parent.parents]:
            if parent == self.root:
                break
            parent.chmod(0o755)
        path.write_text(text, encoding="utf-8")
        path.chmod(0o644)
        return path

    def env(self, **extra: str) -> dict[str, str]:
        """The runner's environment: this workspace's inputs, the audit hook, no credentials
        unless given, nothing inherited that could change the runner's behaviour."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("AGENTRUN_", "OPENAI_", "PYTEST", "TIKTOKEN", "LITELLM"))
            and k not in ("MODEL_NAME", "PYTHONPATH", "HOME", "TMPDIR")
        }
        env.update(
            {
                contract.ENV_RUN_ID: self.run_id,
                contract.ENV_NONCE: self.nonce,
                contract.ENV_PROMPT_FILE: str(self.prompt_file),
                contract.ENV_AGENT_DIR: str(REPO / "runner-image" / "agents"),
                contract.ENV_TERMINATION_MESSAGE_PATH: str(self.termination_log),
                "HOME": "/nonexistent",
                "TMPDIR": str(self.tmp),
                "PYTHONPATH": str(self.root / "site"),
                "AGENTRUN_TEST_AUDIT_LOG": str(self.audit_log),
            }
        )
        env.update(extra)
        return env

    def audit(self) -> list[str]:
        if not self.audit_log.exists():
            return []
        return self.audit_log.read_text().splitlines()


@pytest.fixture
def workspace() -> Iterator[RunnerWorkspace]:
    root = Path(tempfile.mkdtemp(prefix="agentrun-runner-test-", dir="/tmp"))
    root.chmod(0o755)
    space = RunnerWorkspace(root)
    space.write("site/sitecustomize.py", SITECUSTOMIZE)
    space.write("input/prompt", "Analyze the quarterly sales data")
    space.tmp.mkdir(mode=0o700)
    space.termination_log.write_text("")
    space.audit_log.write_text("")
    space.audit_log.chmod(0o666)
    if os.geteuid() == 0:
        os.chown(space.tmp, NOBODY, NOBODY)
        os.chown(space.termination_log, NOBODY, NOBODY)
    try:
        yield space
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def stub() -> Iterator[StubLLMThread]:
    with StubLLMThread() as server:
        yield server


def llm_env(stub: StubLLMThread, model: str = "openai/agentrun-stub") -> dict[str, str]:
    return {"OPENAI_API_KEY": "stub-key", "OPENAI_BASE_URL": stub.base_url, "MODEL_NAME": model}


@dataclass
class RunnerOutcome:
    code: int
    lines: list[str]
    first_line_seconds: float | None
    total_seconds: float
    events: list[RunnerEvent] = field(default_factory=list)

    def kinds(self) -> list[str]:
        return [e.type for e in self.events]

    def result(self) -> str:
        return "".join(e.data.text for e in self.events if e.type == "result")

    def of(self, kind: str) -> list[RunnerEvent]:
        return [e for e in self.events if e.type == kind]


def parse_outcome(
    space: RunnerWorkspace, code: int, lines: list[str], first: float | None, total: float
) -> RunnerOutcome:
    events = [parse_event_line(line, run_id=space.run_id, nonce=space.nonce) for line in lines]
    return RunnerOutcome(code, lines, first, total, [e for e in events if e is not None])


def runner_command() -> list[str]:
    return [sys.executable, "-m", "agentrun_runner"]


def run_runner(
    space: RunnerWorkspace,
    env: dict[str, str],
    command: list[str] | None = None,
    timeout: float = 240,
) -> RunnerOutcome:
    """Run to completion; record when the first stdout line arrived."""
    started = time.monotonic()
    process = subprocess.Popen(
        command or runner_command(), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None
    first: float | None = None
    lines: list[str] = []
    try:
        for raw in process.stdout:
            if first is None:
                first = time.monotonic() - started
            lines.append(raw.decode("utf-8"))
        code = process.wait(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.stderr is not None
    stderr = process.stderr.read().decode()
    assert stderr == "", f"the runner wrote to its stderr: {stderr[:2000]}"
    return parse_outcome(space, code, lines, first, time.monotonic() - started)


def assert_only_events(outcome: RunnerOutcome) -> None:
    """Every stdout line is an event of this run, with seq strictly increasing from 0."""
    assert len(outcome.events) == len(outcome.lines), [
        line for line in outcome.lines if not line.startswith('{"agentrun":1')
    ]
    assert [e.seq for e in outcome.events] == list(range(len(outcome.events)))


def connections(space: RunnerWorkspace) -> list[str]:
    return [line for line in space.audit() if line.startswith(("connect", "getaddrinfo"))]


# -- the PID-1 sandbox -------------------------------------------------------------------------


def _untraversable_ancestor(path: Path) -> Path | None:
    """The highest ancestor of ``path`` that others cannot traverse (e.g. /root, mode 0700)."""
    for ancestor in reversed(path.parents):
        if ancestor == Path("/"):
            continue
        if not os.stat(ancestor).st_mode & stat.S_IXOTH:
            return ancestor
    return None


def sandbox_prerequisites() -> str | None:
    """Why the sandbox cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (CI runs as root) to create PID and mount namespaces"
    for tool in ("unshare", "setpriv", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


def sandbox_command(space: RunnerWorkspace, command: list[str]) -> list[str]:
    """``command`` as PID 1 of a new PID namespace, packages and repo read-only, uid 65534."""
    prefix = Path(sys.prefix).resolve()
    exposed = [prefix, REPO]
    purelib = Path(sysconfig.get_paths()["purelib"]).resolve()
    if not purelib.is_relative_to(prefix):
        exposed.append(purelib)
    stage = space.root / "stage"
    stage.mkdir()
    blockers = sorted({b for p in exposed if (b := _untraversable_ancestor(p)) is not None})
    q = shlex.quote
    script = ["set -e"]
    for i, path in enumerate(exposed):
        script.append(f"mkdir -p {q(str(stage / str(i)))}")
        script.append(f"mount --bind {q(str(path))} {q(str(stage / str(i)))}")
    for blocker in blockers:
        # Hide the unreadable parent behind a tmpfs that holds only the exposed paths.
        script.append(f"mount -t tmpfs -o mode=0755 tmpfs {q(str(blocker))}")
    for i, path in enumerate(exposed):
        script.append(f"mkdir -p {q(str(path))}")
        script.append(f"mount --bind {q(str(stage / str(i)))} {q(str(path))}")
        script.append(f"mount -o remount,bind,ro {q(str(path))}")
    script.append(
        "exec setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all "
        "--bounding-set=-all -- " + " ".join(q(part) for part in command)
    )
    return [
        "unshare",
        "--pid",
        "--fork",
        "--mount-proc",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        "\n".join(script),
    ]


def read_events_until(
    process: subprocess.Popen[bytes], lines: list[str], predicate: object, timeout: float
) -> None:
    """Read stdout lines into ``lines`` until ``predicate(line)`` is true."""
    import selectors

    assert process.stdout is not None
    assert callable(predicate)
    # Byte-exact reads from the fd: a buffered readline() would pull several lines into Python's
    # buffer, after which select() waits on an empty pipe for a line that is already here (seen
    # under load). What is left in the pipe stays there for a later communicate().
    fd = process.stdout.fileno()
    selector = selectors.DefaultSelector()
    selector.register(fd, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    raw = b""
    while time.monotonic() < deadline:
        if not selector.select(timeout=0.5):
            continue
        byte = os.read(fd, 1)
        if not byte:
            raise AssertionError(f"stdout closed before the expected line: {lines[-5:]}")
        raw += byte
        if byte != b"\n":
            continue
        lines.append(raw.decode())
        raw = b""
        if predicate(lines[-1]):
            return
    raise AssertionError(f"timed out waiting; last lines: {lines[-5:]}")


class Harness:
    """The helpers above, handed to tests by the ``harness`` fixture (test modules cannot
    import a conftest under --import-mode=importlib)."""

    llm_env = staticmethod(llm_env)
    run_runner = staticmethod(run_runner)
    runner_command = staticmethod(runner_command)
    parse_outcome = staticmethod(parse_outcome)
    assert_only_events = staticmethod(assert_only_events)
    connections = staticmethod(connections)
    sandbox_prerequisites = staticmethod(sandbox_prerequisites)
    sandbox_command = staticmethod(sandbox_command)
    read_events_until = staticmethod(read_events_until)
    repo = REPO


@pytest.fixture
def harness() -> Harness:
    return Harness()

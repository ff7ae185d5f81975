"""The runner interface: operator ↔ runner ↔ fake kubelet.

Inputs reach the pod as files (from the run's input Secret) and environment variables; never the
prompt through env or argv. Output is stdout only: every line the container writes is one
:class:`RunnerEvent` as JSON, written by the runner itself. The agent's own fds 1 and 2 are piped
and wrapped as ``log`` events, so nothing the agent prints can forge an event: a line only counts
when it parses, carries this run's id and nonce, and the operator has not seen its ``seq``.
"""

from __future__ import annotations

import enum
import json
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

# ---------------------------------------------------------------------------------------------
# Environment variables set on the runner container (and passed by the fake kubelet).

ENV_RUN_ID: Final = "AGENTRUN_RUN_ID"
"""The run's job_id; every event carries it."""
ENV_NONCE: Final = "AGENTRUN_NONCE"
"""A per-run random nonce from the pod spec; every event carries it."""
ENV_PROMPT_FILE: Final = "AGENTRUN_PROMPT_FILE"
ENV_AGENT_YAML_FILE: Final = "AGENTRUN_AGENT_YAML_FILE"
"""Set only when the run has inline agent YAML; it then wins over the agent file."""
ENV_AGENT_DIR: Final = "AGENTRUN_AGENT_DIR"
ENV_AGENT_FILE: Final = "AGENTRUN_AGENT_FILE"
"""Relative to the agent directory."""
ENV_FRAMEWORK: Final = "AGENTRUN_FRAMEWORK"
ENV_SESSION_ID: Final = "AGENTRUN_SESSION_ID"
ENV_TERMINATION_MESSAGE_PATH: Final = "AGENTRUN_TERMINATION_MESSAGE_PATH"
ENV_CREDENTIALS_SECRET: Final = "AGENTRUN_CREDENTIALS_SECRET"
"""Name of the LLM credentials Secret, so the runner's error can say which Secret to create."""
ENV_MODEL_NAME: Final = "MODEL_NAME"
"""The model every agent without its own ``llm`` uses, as litellm names it (``provider/model``,
e.g. ``anthropic/claude-sonnet-4-5``; a bare OpenAI name such as ``gpt-4o-mini`` also works).
Set in the LLM credentials Secret, which the Job loads whole with ``envFrom``: the provider's
keys (``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY``, ``AZURE_API_KEY``, ``OLLAMA_API_BASE``, ...)
sit beside it under litellm's names. The model's provider decides which keys the runner requires
(missing ones: reason ``missing_credentials``)."""
DEFAULT_MODEL_NAME: Final = "gpt-4o-mini"
"""The model when ``MODEL_NAME`` (and PraisonAI's ``OPENAI_MODEL_NAME``) is unset: OpenAI's."""

# ---------------------------------------------------------------------------------------------
# Paths inside the runner container.

INPUT_DIR: Final = "/var/run/agentrun/input"
"""Mount of the run's input Secret."""
PROMPT_KEY: Final = "prompt"
AGENT_YAML_KEY: Final = "agents.yaml"
PROMPT_PATH: Final = f"{INPUT_DIR}/{PROMPT_KEY}"
AGENT_YAML_PATH: Final = f"{INPUT_DIR}/{AGENT_YAML_KEY}"
AGENT_DIR: Final = "/agents"
"""The image's agent directory (a ConfigMap may be mounted over it)."""
DEFAULT_AGENT_FILE: Final = "agents.yaml"
TMP_DIR: Final = "/tmp"
"""The only writable path (an emptyDir); the root filesystem is read-only."""
TERMINATION_MESSAGE_PATH: Final = "/dev/termination-log"
CONTAINER_NAME: Final = "runner"
RUNNER_COMMAND: Final = ("agentrun-runner",)
"""The container ``command``, always set explicitly by the Job (tini is the image's entrypoint
wrapper; see runner-image/Dockerfile)."""


class ExitCode(enum.IntEnum):
    """The runner's exit codes."""

    SUCCESS = 0
    AGENT_ERROR = 10
    BAD_INPUT = 11
    MISSING_CREDENTIALS = 12
    INTERNAL = 13
    INTERRUPTED = 143
    """128 + SIGTERM."""


# ---------------------------------------------------------------------------------------------
# Events written to stdout.

EVENT_SCHEMA_VERSION: Final = 1
RESULT_CHUNK_CHARS: Final = 2000
"""Result text per ``result`` event. Keeps every stdout line far below the 16 KiB at which
container runtimes split log lines, whatever the escaping."""
LOG_LINE_MAX_CHARS: Final = 4000
"""A longer line of agent output is split into several ``log`` events."""


class StartData(BaseModel):
    framework: str
    agent_file: str | None = None


class ProgressData(BaseModel):
    percentage: float = Field(ge=0, le=100)
    current_step: str | None = None


class LogData(BaseModel):
    message: str
    stream: Literal["stdout", "stderr"] = "stdout"


class ResultData(BaseModel):
    """Chunk ``index`` of ``count``; the result is the concatenation of ``text`` in order."""

    index: int = Field(ge=0)
    count: int = Field(ge=1)
    text: str


class ErrorData(BaseModel):
    reason: Literal["agent_error", "bad_input", "missing_credentials", "internal"]
    message: str


class InterruptedData(BaseModel):
    signal: str = "SIGTERM"


class _EventBase(BaseModel):
    model_config = ConfigDict(extra="ignore")

    agentrun: Literal[1] = EVENT_SCHEMA_VERSION
    run_id: str
    nonce: str
    seq: int = Field(ge=0, description="Strictly increasing per run, from 0.")
    ts: datetime


class StartEvent(_EventBase):
    type: Literal["start"] = "start"
    data: StartData


class ProgressEvent(_EventBase):
    type: Literal["progress"] = "progress"
    data: ProgressData


class LogEvent(_EventBase):
    type: Literal["log"] = "log"
    data: LogData


class ResultEvent(_EventBase):
    type: Literal["result"] = "result"
    data: ResultData


class ErrorEvent(_EventBase):
    type: Literal["error"] = "error"
    data: ErrorData


class InterruptedEvent(_EventBase):
    type: Literal["interrupted"] = "interrupted"
    data: InterruptedData


RunnerEvent = Annotated[
    StartEvent | ProgressEvent | LogEvent | ResultEvent | ErrorEvent | InterruptedEvent,
    Field(discriminator="type"),
]
_RUNNER_EVENT: TypeAdapter[RunnerEvent] = TypeAdapter(RunnerEvent)


def encode_event(event: RunnerEvent) -> str:
    """One line of JSON (no trailing newline). Non-ASCII is kept as UTF-8."""
    return json.dumps(event.model_dump(mode="json"), ensure_ascii=False, separators=(",", ":"))


def make_event(
    kind: str, *, run_id: str, nonce: str, seq: int, data: dict[str, Any]
) -> RunnerEvent:
    """Build and validate an event of type ``kind``."""
    return _RUNNER_EVENT.validate_python(
        {
            "type": kind,
            "run_id": run_id,
            "nonce": nonce,
            "seq": seq,
            "ts": datetime.now(UTC),
            "data": data,
        }
    )


def parse_event_line(line: str, *, run_id: str, nonce: str) -> RunnerEvent | None:
    """The event on ``line`` if it is a valid event of this run (id and nonce match), else None.

    A None line is not lost: the operator keeps it as a ``log`` message.
    """
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        event = _RUNNER_EVENT.validate_json(text)
    except ValidationError:
        return None
    if event.run_id != run_id or event.nonce != nonce:
        return None
    return event


def split_result(result: str, *, run_id: str, nonce: str, first_seq: int) -> list[ResultEvent]:
    """The ``result`` events carrying ``result``; joining their text gives it back exactly."""
    pieces = [
        result[i : i + RESULT_CHUNK_CHARS] for i in range(0, len(result), RESULT_CHUNK_CHARS)
    ] or [""]
    now = datetime.now(UTC)
    return [
        ResultEvent(
            run_id=run_id,
            nonce=nonce,
            seq=first_seq + i,
            ts=now,
            data=ResultData(index=i, count=len(pieces), text=piece),
        )
        for i, piece in enumerate(pieces)
    ]


def termination_summary(exit_code: ExitCode, detail: str) -> str:
    """The short summary written to the termination message (at most 4 KiB in Kubernetes)."""
    text = f"{exit_code.name.lower()}: {detail}"
    encoded = text.encode()[:1024]
    return encoded.decode("utf-8", errors="ignore")

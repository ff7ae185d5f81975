"""The AgentRun custom resource and the objects it owns, as typed models.

These models are the single source of truth: the CRDs under deploy/crds/ are generated from them
(:mod:`agentrun_contract.crd`), and the API and operator read and write objects through them.
Wire names are camelCase (Kubernetes style); Python names are snake_case.

Field ownership (shared/CONTRACT.md): the API or kubectl writes ``spec`` (``cancelRequested``
included), labels and annotations; the operator alone writes ``status`` (and the phase label),
the run's AgentRunTranscript chunks and its AgentRunResult.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from agentrun_contract import limits

GROUP: Final = "agentrun.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"

KIND: Final = "AgentRun"
PLURAL: Final = "agentruns"
SINGULAR: Final = "agentrun"
SHORT_NAMES: Final = ("ar",)

TRANSCRIPT_KIND: Final = "AgentRunTranscript"
TRANSCRIPT_PLURAL: Final = "agentruntranscripts"
RESULT_KIND: Final = "AgentRunResult"
RESULT_PLURAL: Final = "agentrunresults"

KOPF_STATUS_FIELD: Final = "kopf"
"""kopf's bookkeeping (handler progress and diff base) lives at ``status.kopf``, which the schema
preserves; annotations would hit the 256 KiB limit for a large spec."""


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        use_enum_values=False,
    )

    def to_k8s(self) -> dict[str, Any]:
        """The object as Kubernetes stores it: camelCase, absent fields omitted."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class Phase(enum.StrEnum):
    """``status.phase``. The API shows it lowercased as ``status``."""

    QUEUED = "Queued"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_PHASES

    @property
    def api_status(self) -> str:
        """The seed's lowercase status: queued, running, succeeded, failed, cancelled."""
        return self.value.lower()

    @classmethod
    def from_api_status(cls, value: str) -> Phase:
        """Inverse of :attr:`api_status`; raises ValueError for an unknown status."""
        for phase in cls:
            if phase.api_status == value:
                return phase
        raise ValueError(f"unknown status {value!r}")


TERMINAL_PHASES: Final = frozenset({Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLED})


class Reason(enum.StrEnum):
    """The closed list of reasons, the same in status, stream and webhook."""

    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    AGENT_ERROR = "agent_error"
    BAD_INPUT = "bad_input"
    MISSING_CREDENTIALS = "missing_credentials"
    IMAGE_PULL = "image_pull"
    UNSCHEDULABLE = "unschedulable"
    CANNOT_CREATE_POD = "cannot_create_pod"
    """Kubernetes refused the Job's pod (a missing ServiceAccount, a ResourceQuota, Pod Security
    or another admission policy): the Job shows ``FailedCreate`` Events and has no pod."""
    EVICTED = "evicted"
    OOM_KILLED = "oom_killed"
    POD_DELETED = "pod_deleted"
    JOB_DELETED = "job_deleted"
    PENDING_TIMEOUT = "pending_timeout"
    INTERNAL = "internal"


class WebhookState(enum.StrEnum):
    """``status.webhook.state``, shown in the WEBHOOK printer column."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


# --------------------------------------------------------------------------------------------
# AgentRun spec

_IMMUTABLE_SPEC_FIELDS: Final = (
    "prompt",
    "agentFile",
    "agentYaml",
    "framework",
    "timeoutSeconds",
    "webhookUrl",
    "sessionId",
)


def _immutability_rule() -> str:
    # One spec-level transition rule: a per-field rule would not catch a field being added or
    # removed. cancelRequested may only go from unset/false to true.
    parts = [
        f"(has(self.{f}) == has(oldSelf.{f})) && (!has(self.{f}) || self.{f} == oldSelf.{f})"
        for f in _IMMUTABLE_SPEC_FIELDS
    ]
    return " && ".join(parts)


class AgentRunSpec(_Model):
    """What to run. Immutable after creation, except ``cancelRequested``."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": _immutability_rule(),
                    "message": "spec is immutable after creation, except spec.cancelRequested",
                },
                {
                    "rule": "!has(oldSelf.cancelRequested) || !oldSelf.cancelRequested"
                    " || (has(self.cancelRequested) && self.cancelRequested)",
                    "message": "spec.cancelRequested cannot be unset once true",
                },
                {
                    "rule": "!(has(self.agentFile) && has(self.agentYaml))",
                    "message": "set spec.agentFile or spec.agentYaml, not both",
                },
            ]
        }
    )

    prompt: str = Field(
        min_length=1,
        # The CRD counts characters; the API enforces the 64 KiB of UTF-8 exactly.
        max_length=limits.PROMPT_MAX_BYTES,
        description="The task prompt, given to the agent as its topic.",
    )
    agent_file: str | None = Field(
        default=None,
        max_length=limits.AGENT_FILE_MAX_CHARS,
        description="Agent YAML file, relative to the runner's agent directory "
        "(default agents.yaml). No absolute paths, no '..'.",
    )
    agent_yaml: str | None = Field(
        default=None,
        max_length=limits.AGENT_YAML_MAX_BYTES,
        description="Inline agent YAML, used instead of agentFile.",
    )
    framework: str = Field(
        default="praisonai",
        min_length=1,
        max_length=limits.FRAMEWORK_MAX_CHARS,
        description="Agent framework; the install configures which are allowed.",
    )
    timeout_seconds: int = Field(
        default=limits.TIMEOUT_DEFAULT_SECONDS,
        ge=limits.TIMEOUT_MIN_SECONDS,
        le=limits.TIMEOUT_ABSOLUTE_MAX_SECONDS,
        description="The Job's activeDeadlineSeconds: counts from the Job's start, so it includes "
        "scheduling and image pull. The install's maximum may be lower.",
    )
    webhook_url: str | None = Field(
        default=None,
        max_length=limits.WEBHOOK_URL_MAX_CHARS,
        json_schema_extra={"format": "uri"},
        description="http(s) URL POSTed on every terminal status; must pass the webhook policy.",
    )
    session_id: str | None = Field(
        default=None,
        max_length=limits.SESSION_ID_MAX_CHARS,
        description="Groups related runs.",
    )
    cancel_requested: bool | None = Field(
        default=None,
        description="Set to true to cancel. The only mutable spec field.",
    )


# --------------------------------------------------------------------------------------------
# AgentRun status


class Progress(_Model):
    percentage: float = Field(default=0, ge=0, le=100)
    current_step: str | None = Field(default=None, max_length=1024)


class WebhookDelivery(_Model):
    """Durable delivery state of the completion webhook (at least once)."""

    state: WebhookState
    id: str = Field(description="The webhook-id header: the same for every attempt of a delivery.")
    attempts: int = 0
    last_attempt_at: datetime | None = None
    last_status_code: int | None = None
    last_error: str | None = Field(default=None, max_length=limits.MESSAGE_MAX_CHARS)
    delivered_at: datetime | None = None
    next_attempt_at: datetime | None = None
    first_attempt_at: datetime | None = Field(
        default=None,
        description="When this delivery's first attempt was made; the total retry time "
        "counts from it.",
    )
    redeliver_token: str | None = Field(
        default=None,
        description="The agentrun.dev/redeliver annotation value this delivery answers.",
    )


class TranscriptState(_Model):
    """Where the operator's transcript stands, so it resumes after a restart without gaps."""

    last_event_id: int = Field(default=0, description="The highest event id written.")
    runner_seq: int = Field(
        default=-1, description="The highest runner event seq folded into the transcript."
    )
    chunks: int = Field(default=0, description="Chunk objects created so far.")
    bytes: int = Field(default=0, description="Bytes of events stored (after the cap).")
    dropped_bytes: int = Field(default=0, description="Bytes dropped from the middle by the cap.")
    complete: bool = Field(default=False, description="True once the `complete` event is stored.")


class Condition(_Model):
    """A standard Kubernetes condition (metav1.Condition)."""

    type: str
    status: str = Field(json_schema_extra={"enum": ["True", "False", "Unknown"]})
    reason: str | None = None
    message: str | None = None
    last_transition_time: datetime | None = None
    observed_generation: int | None = None


class AgentRunStatus(_Model):
    """Written by the operator only. An empty status reads as Queued."""

    phase: Phase | None = None
    reason: Reason | None = None
    message: str | None = Field(default=None, max_length=limits.MESSAGE_MAX_CHARS)
    job_name: str | None = None
    pod_name: str | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    duration_seconds: float | None = None
    progress: Progress | None = None
    result_excerpt: str | None = Field(
        default=None,
        # characters; the operator cuts at 4 KiB of UTF-8
        max_length=limits.RESULT_EXCERPT_MAX_BYTES,
    )
    result_bytes: int | None = Field(default=None, description="Size of the full result.")
    result_truncated: bool | None = Field(
        default=None, description="True when resultExcerpt is shorter than the result."
    )
    webhook: WebhookDelivery | None = None
    transcript: TranscriptState | None = None
    conditions: list[Condition] | None = None
    observed_generation: int | None = None
    kopf: dict[str, Any] | None = Field(
        default=None,
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
        description="kopf's bookkeeping; never pruned.",
    )


class ObjectMeta(_Model):
    """The subset of metav1.ObjectMeta the project reads."""

    name: str
    namespace: str | None = None
    uid: str | None = None
    resource_version: str | None = None
    generation: int | None = None
    creation_timestamp: datetime | None = None
    deletion_timestamp: datetime | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class AgentRun(_Model):
    api_version: str = API_VERSION
    kind: str = KIND
    metadata: ObjectMeta
    spec: AgentRunSpec
    status: AgentRunStatus = Field(default_factory=AgentRunStatus)

    @property
    def phase(self) -> Phase:
        """An empty status reads as Queued."""
        return self.status.phase or Phase.QUEUED


# --------------------------------------------------------------------------------------------
# Objects owned by an AgentRun


class AgentRunTranscriptSpec(_Model):
    """One chunk of a run's transcript. Written by the operator only, read by the API.

    A run's transcript is the union of its chunks (label ``agentrun.dev/run=<run>``), ordered by
    event id. ``events`` is JSON Lines: one :class:`agentrun_contract.stream.StreamEvent` per
    line, ids strictly increasing. The operator appends to the newest chunk until it holds
    ``chunkBytes``, then starts the next, so each write to etcd is at most one chunk. A chunk
    with ``gap: true`` holds the single `log` event that reports what the cap dropped; its id is
    that of the last dropped event.
    """

    run_name: str = Field(max_length=limits.NAME_MAX_CHARS)
    index: int = Field(ge=0)
    first_event_id: int = Field(ge=0)
    last_event_id: int = Field(ge=0)
    events: str = Field(default="", description="JSON Lines of stream events.")
    sealed: bool = False
    gap: bool = False
    runner_seq: int = Field(
        default=-1,
        description="The highest runner event seq folded in up to this chunk's last event, so "
        "a restarted operator resumes the pod log without duplicates.",
    )
    log_timestamp: str | None = Field(
        default=None,
        description="The pod-log timestamp (RFC 3339, nanoseconds) of the last log line folded "
        "in up to this chunk's last event.",
    )


class AgentRunTranscript(_Model):
    api_version: str = API_VERSION
    kind: str = TRANSCRIPT_KIND
    metadata: ObjectMeta
    spec: AgentRunTranscriptSpec


class AgentRunResultSpec(_Model):
    """The full result of a finished run (at most 512 KiB), exactly as the agent returned it."""

    run_name: str = Field(max_length=limits.NAME_MAX_CHARS)
    result: str = Field(max_length=limits.RESULT_MAX_BYTES)
    bytes: int = Field(ge=0)
    sha256: str


class AgentRunResult(_Model):
    api_version: str = API_VERSION
    kind: str = RESULT_KIND
    metadata: ObjectMeta
    spec: AgentRunResultSpec

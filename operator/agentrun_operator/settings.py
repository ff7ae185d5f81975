"""The operator's configuration: one pydantic-settings class, read once at start-up.

Environment variables carry the prefix ``AGENTRUN_OPERATOR_``; nested models use ``__`` (for
example ``AGENTRUN_OPERATOR_LEADER_ELECTION__ENABLED=false``). Lists and dicts are JSON
(``AGENTRUN_OPERATOR_NAMESPACES='["default","team-a"]'``). Helm values use the camelCase of the
same field names. Every interval is a setting so tests can make it small.
"""

from __future__ import annotations

from typing import Any, Literal

from agentrun_contract import limits, runner
from agentrun_webhooks.policy import WebhookPolicySettings
from agentrun_webhooks.settings import WebhookDeliverySettings
from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "AGENTRUN_OPERATOR_"


class LeaderElectionSettings(BaseModel):
    """Lease-based leader election (coordination.k8s.io/v1): only the leader runs kopf."""

    enabled: bool = Field(
        default=True,
        description="Elect a leader through a Lease; disable only for a single replica.",
    )
    lease_name: str = Field(
        default="agentrun-operator", description="Name of the Lease object (in lease_namespace)."
    )
    lease_namespace: str | None = Field(
        default=None,
        description="Namespace of the Lease; default: the first watched namespace.",
    )
    identity: str | None = Field(
        default=None,
        description="This replica's holder identity; default: hostname + a random suffix.",
    )
    lease_duration_seconds: float = Field(
        default=15,
        gt=0,
        description="How long a lease is valid after its last renewal; other replicas take "
        "over after it expires.",
    )
    renew_seconds: float = Field(
        default=5,
        gt=0,
        description="How often the leader renews the lease. Must be well below the duration.",
    )
    retry_seconds: float = Field(
        default=2,
        gt=0,
        description="How often a non-leader checks whether the lease is free.",
    )


class RunnerResources(BaseModel):
    """The runner container's resources (Kubernetes quantities)."""

    requests: dict[str, str] = Field(
        default_factory=lambda: {"cpu": "100m", "memory": "256Mi"},
        description="Container resource requests.",
    )
    limits: dict[str, str] = Field(
        default_factory=lambda: {"memory": "1Gi"},
        description="Container resource limits.",
    )


class OperatorSettings(BaseSettings):
    """Everything the operator process reads from its environment."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="ignore",
    )

    # -- what to watch and how to reach the cluster
    namespaces: list[str] = Field(
        default_factory=lambda: ["default"],
        description="Namespaces whose AgentRuns this operator reconciles.",
    )
    cluster_wide: bool = Field(
        default=False, description="Reconcile AgentRuns in every namespace (ignores namespaces)."
    )
    kubeconfig: str | None = Field(
        default=None,
        description="Path to a kubeconfig; default $KUBECONFIG, else the in-cluster account.",
    )

    # -- the runner Job
    runner_image: str = Field(
        default="ghcr.io/agentrun/runner:0.1.0", description="The runner container image."
    )
    runner_image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        default="IfNotPresent", description="imagePullPolicy of the runner container."
    )
    runner_command: list[str] = Field(
        default_factory=lambda: list(runner.RUNNER_COMMAND),
        min_length=1,
        description="The runner container's command (JSON list), always set explicitly.",
    )
    runner_resources: RunnerResources = Field(
        default_factory=RunnerResources, description="The runner container's resources."
    )
    runner_service_account: str = Field(
        default="agentrun-runner",
        description="ServiceAccount of runner pods; its token is never mounted.",
    )
    credentials_secret: str = Field(
        default="agentrun-llm-credentials",
        description="Secret with the LLM credentials (OPENAI_API_KEY, ...), loaded with envFrom.",
    )
    frameworks: list[str] = Field(
        default_factory=lambda: ["praisonai"],
        min_length=1,
        description="Frameworks an AgentRun may ask for; others fail with bad_input.",
    )
    timeout_max_seconds: int = Field(
        default=limits.TIMEOUT_CONFIGURED_MAX_DEFAULT,
        ge=limits.TIMEOUT_MIN_SECONDS,
        le=limits.TIMEOUT_ABSOLUTE_MAX_SECONDS,
        description="Largest spec.timeoutSeconds accepted; larger fails with bad_input.",
    )
    max_concurrent_runs: int = Field(
        default=10,
        ge=1,
        description="Per namespace: Jobs (pending ones included) that may exist at once. "
        "Runs beyond it stay Queued with no Job and start in creation order.",
    )
    admission_recount_seconds: float = Field(
        default=60.0,
        gt=0,
        description="How often admission recounts the unfinished Jobs from a list (it also "
        "does on every relist of the Job watch), so a Job deleted unseen never holds a slot.",
    )
    pending_timeout_seconds: float = Field(
        default=600,
        gt=0,
        description="A run whose container has not started this long after its Job was "
        "created fails with pending_timeout.",
    )
    termination_grace_period_seconds: int = Field(
        default=10, ge=0, description="terminationGracePeriodSeconds of the runner pod."
    )
    job_ttl_seconds_after_finished: int = Field(
        default=3600, ge=0, description="ttlSecondsAfterFinished of the runner Job."
    )

    # -- runner pod placement passthroughs
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="nodeSelector of runner pods."
    )
    tolerations: list[dict[str, Any]] = Field(
        default_factory=list, description="tolerations of runner pods."
    )
    affinity: dict[str, Any] = Field(default_factory=dict, description="affinity of runner pods.")
    priority_class_name: str | None = Field(
        default=None, description="priorityClassName of runner pods."
    )
    runtime_class_name: str | None = Field(
        default=None, description="runtimeClassName of runner pods (e.g. gvisor)."
    )
    image_pull_secrets: list[str] = Field(
        default_factory=list, description="Names of Secrets used to pull the runner image."
    )
    agent_configmap: str | None = Field(
        default=None,
        description="Optional ConfigMap mounted read-only at /agents (the agent directory).",
    )

    # -- transcript and result
    transcript_flush_seconds: float = Field(
        default=0.5,
        gt=0,
        description="Buffered transcript events are written once this old (within the "
        "run's write budget).",
    )
    transcript_flush_bytes: int = Field(
        default=8 * limits.KIB,
        ge=256,
        description="Buffered transcript events are written once they reach this many bytes "
        "(within the run's write budget), whatever their age.",
    )
    transcript_write_budget_bytes_per_second: int = Field(
        default=8 * limits.KIB,
        ge=limits.KIB,
        description="Per run: the average bytes per second of transcript chunks written to "
        "the apiserver (each write replaces the open chunk whole); bursts up to two chunks. "
        "Writes beyond it wait and are merged; status changes and the end are never held.",
    )
    transcript_cap_bytes: int = Field(
        default=limits.TRANSCRIPT_CAP_DEFAULT_BYTES,
        ge=4 * limits.KIB,
        description="Per-run transcript cap; past it the head and the tail are kept.",
    )
    transcript_chunk_bytes: int = Field(
        default=32 * limits.KIB,
        ge=1 * limits.KIB,
        le=512 * limits.KIB,
        description="Size at which a transcript chunk object is sealed and the next begins.",
    )
    log_reconnect_seconds: float = Field(
        default=1.0,
        gt=0,
        description="Pause before re-opening a pod log stream that ended while the pod runs.",
    )
    log_reconnect_max_seconds: float = Field(
        default=30.0,
        gt=0,
        description="Longest pause between attempts to re-open a pod log stream that keeps "
        "failing (the pause doubles from log_reconnect_seconds; it resets once lines arrive).",
    )
    log_read_timeout_seconds: float = Field(
        default=60.0,
        gt=0,
        description="A pod log stream silent this long is re-opened from the last line kept "
        "(a half-open connection must not stall a run's log).",
    )
    log_drain_seconds: float = Field(
        default=120.0,
        gt=0,
        description="How long a finished run waits for its pod log to be read to the end "
        "(its result is in it) before it is recorded without it.",
    )

    # -- follow-up timers
    resync_seconds: float = Field(
        default=10.0,
        gt=0,
        description="Interval of the safety re-check of every non-terminal run (pending "
        "timeout, vanished Job, queued admission), on top of watch events.",
    )

    # -- retention
    retention_seconds: float = Field(
        default=7 * 86400, gt=0, description="Finished AgentRuns older than this are deleted."
    )
    retention_max_runs: int = Field(
        default=1000,
        ge=1,
        description="Finished AgentRuns kept per namespace; the oldest beyond it are deleted.",
    )
    retention_interval_seconds: float = Field(
        default=300, gt=0, description="How often retention runs."
    )

    # -- webhooks (delivered by agentrun_operator.webhook_handlers)
    public_base_url: str = Field(
        default="http://localhost:8005",
        description="The API's public base URL, for the webhook's result_url.",
    )
    webhook: WebhookDeliverySettings = Field(
        default_factory=WebhookDeliverySettings, description="Webhook delivery."
    )
    webhook_policy: WebhookPolicySettings = Field(
        default_factory=WebhookPolicySettings, description="Webhook URL policy (SSRF)."
    )

    # -- process
    metrics_port: int = Field(default=9090, ge=0, le=65535, description="Prometheus port.")
    health_port: int = Field(
        default=8080, ge=0, le=65535, description="Port of /livez and /health."
    )
    health_host: str = Field(default="0.0.0.0", description="Bind address of health/metrics.")
    leader_election: LeaderElectionSettings = Field(
        default_factory=LeaderElectionSettings, description="Leader election."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Log level."
    )
    watch_server_timeout_seconds: int = Field(
        default=300,
        gt=0,
        description="kopf: server-side timeout of each watch request.",
    )
    kube_request_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description="Total client-side timeout of each Kubernetes call that is not a watch or "
        "a log stream; a call past it is retried like a dropped connection.",
    )
    kube_connect_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="Client-side timeout of opening a connection to the Kubernetes API.",
    )

    @property
    def log_follow_connections(self) -> int:
        """Size of the log-follow connection pool (0: no limit): a follow for every run that
        may run at once in every watched namespace, and as many again for finished runs still
        draining their last lines. Unbounded when cluster-wide (the namespaces are unknown)."""
        if self.cluster_wide:
            return 0
        return 2 * self.max_concurrent_runs * len(self.namespaces)

    @property
    def lease_namespace(self) -> str:
        return self.leader_election.lease_namespace or self.namespaces[0]


def load_settings() -> OperatorSettings:
    """Read the settings once, at start-up."""
    return OperatorSettings()

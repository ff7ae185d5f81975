"""Settings of the API process (``agentrun api``), read once at start-up.

Environment: ``AGENTRUN_API_<FIELD>``; nested models use ``__``
(e.g. ``AGENTRUN_API_STREAM__HEARTBEAT_SECONDS=5``, ``AGENTRUN_API_WEBHOOK_POLICY__ALLOW_LOOPBACK=true``).
Helm values use the camelCase of the same names.
"""

from __future__ import annotations

from pathlib import Path

from agentrun_contract import limits
from agentrun_webhooks.policy import WebhookPolicySettings
from pydantic import Field, IPvAnyNetwork, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from agentrun_api.streaming.settings import StreamSettings


class APISettings(BaseSettings):
    """Everything the API process can be told. Every interval and limit is a setting."""

    model_config = SettingsConfigDict(
        env_prefix="AGENTRUN_API_",
        env_nested_delimiter="__",
        extra="ignore",
    )

    namespace: str = Field(
        default="default",
        description="The namespace this install serves: AgentRuns are created and read here.",
    )
    host: str = Field(default="0.0.0.0", description="Address the HTTP server binds.")
    port: int = Field(default=8005, ge=0, le=65535, description="Port of the HTTP API.")
    workers: int = Field(
        default=1,
        ge=1,
        le=32,
        description="HTTP server processes sharing the port (one per core the pod gets): "
        "connections are spread by the kernel. Each worker keeps its own run cache and one "
        "transcript watch per streamed run; worker i serves metrics on metrics_port + i. More "
        "replicas scale the same way across nodes.",
    )
    kubeconfig: str | None = Field(
        default=None,
        description="Path of a kubeconfig. Unset: $KUBECONFIG, else the in-cluster service "
        "account.",
    )
    public_base_url: str | None = Field(
        default=None,
        description="Base URL clients reach the API at (e.g. https://agents.example.com), used "
        "for poll_url, stream_url and Location. Unset: built from each request.",
    )
    auth_enabled: bool = Field(
        default=True,
        description="Require a token on every /api/v1 call. `agentrun dev` turns it off.",
    )
    tokens_dir: Path | None = Field(
        default=None,
        description="A directory (a mounted Secret): each file name is a token's name, its "
        "content (stripped) the token.",
    )
    tokens: dict[str, SecretStr] = Field(
        default_factory=dict,
        description='Tokens as JSON {"name": "token"}, for dev and tests. Merged with tokens_dir.',
    )
    read_token_key: SecretStr | None = Field(
        default=None,
        description="HMAC key that signs the run-scoped read tokens in poll_url/stream_url (at "
        "least 32 characters; the same on every replica). A `signing-key` file in "
        "read_token_keys_dir wins. Unset with auth on: a random key per replica, shared by its "
        "workers (read tokens then work on that replica only, until it restarts).",
    )
    read_token_verify_keys: list[SecretStr] = Field(
        default_factory=list,
        description="Further keys read tokens are accepted under, never used to sign: during a "
        "rotation, the previous key (until its tokens expire) and the next one (until every "
        "replica signs with it).",
    )
    read_token_keys_dir: Path | None = Field(
        default=None,
        description="A directory (a mounted Secret) of read-token keys: the file `signing-key` "
        "signs, every other file is a verification key (see read_token_verify_keys). Read at "
        "start-up.",
    )
    admin_tokens: list[str] = Field(
        default_factory=list,
        description="Names of the API tokens that see (and may cancel and delete) every run of "
        "the namespace. Every other token sees only the runs it submitted; runs without a "
        "submitter label (kubectl-made, or from before scoping) are visible to admins only.",
    )
    trusted_proxy_cidrs: list[IPvAnyNetwork] = Field(
        default_factory=list,
        description="Peers (CIDRs) whose Forwarded / X-Forwarded-Proto / -Host / -Port / -For "
        "headers are believed, so poll_url, stream_url and Location use the URL the client "
        "called (e.g. the ingress controller's pod range). Empty: no proxy header is trusted. "
        "public_base_url, when set, wins.",
    )
    read_token_ttl_seconds: int = Field(
        default=900, ge=1, description="Lifetime of a signed read token, in seconds."
    )
    max_body_bytes: int = Field(
        default=200 * limits.KIB,
        ge=1024,
        description="Largest POST /runs body accepted (413 beyond), counted on the bytes "
        "received, chunked bodies included. Room for a 64 KiB prompt, 64 KiB of agent YAML and "
        "JSON escaping.",
    )
    max_queued_runs: int = Field(
        default=10_000,
        ge=0,
        description="Backpressure: when this many runs are queued in the namespace, POST /runs "
        "answers 503 with Retry-After (a replay of an existing Idempotency-Key is still "
        "answered). 0 turns it off.",
    )
    backpressure_retry_after_seconds: int = Field(
        default=10, ge=1, description="Retry-After sent with the backpressure 503."
    )
    frameworks: list[str] = Field(
        default_factory=lambda: ["praisonai"],
        description="Frameworks this install allows (422 for any other).",
    )
    timeout_max_seconds: int = Field(
        default=limits.TIMEOUT_CONFIGURED_MAX_DEFAULT,
        ge=1,
        le=limits.TIMEOUT_ABSOLUTE_MAX_SECONDS,
        description="Largest `timeout` accepted, in seconds.",
    )
    metrics_port: int = Field(
        default=9090,
        ge=0,
        le=65535,
        description="Port of the Prometheus /metrics server (no auth). 0 turns it off.",
    )
    log_level: str = Field(default="INFO", description="Python logging level name.")
    health_cache_seconds: float = Field(
        default=1.0,
        ge=0,
        description="How long a /health verdict is reused before the Kubernetes API is asked "
        "again.",
    )
    health_timeout_seconds: float = Field(
        default=2.0, gt=0, description="Timeout of the /health probe of the Kubernetes API."
    )
    cache_watch_timeout_seconds: int = Field(
        default=60,
        ge=1,
        description="Server-side timeout of one watch of the run cache; it then re-opens from "
        "where it was (no re-list). Bounds how long a healthy watch stays silent.",
    )
    cache_stale_seconds: float = Field(
        default=90.0,
        gt=0,
        description="The run cache is stale when nothing was heard from the Kubernetes API for "
        "this long: a watch that stays silent this long (a half-open connection) is dropped and "
        "the cache re-lists, and /health answers 503 until it is current again. Must exceed "
        "cache_watch_timeout_seconds.",
    )
    cache_retry_seconds: float = Field(
        default=1.0,
        gt=0,
        description="Back-off before the run cache re-lists after an error (doubles up to 30 s).",
    )
    cache_sync_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="At start-up, how long to wait for the run cache's first list before "
        "serving anyway (reads then fall back to direct GETs).",
    )
    shutdown_grace_seconds: float = Field(
        default=10.0,
        ge=0,
        description="On SIGTERM, how long open requests (streams included) get before the "
        "server stops.",
    )
    webhook_policy: WebhookPolicySettings = Field(
        default_factory=WebhookPolicySettings,
        description="The SSRF policy webhook_url must pass at submit (shared with delivery).",
    )
    stream: StreamSettings = Field(
        default_factory=StreamSettings, description="The SSE stream's settings."
    )

    @model_validator(mode="after")
    def _check(self) -> APISettings:
        if self.cache_stale_seconds <= self.cache_watch_timeout_seconds:
            raise ValueError(
                f"cache_stale_seconds ({self.cache_stale_seconds}) must exceed "
                f"cache_watch_timeout_seconds ({self.cache_watch_timeout_seconds}): a healthy "
                "watch may stay silent until the server ends it."
            )
        return self

    def all_tokens(self) -> dict[str, str]:
        """Token name -> token, from ``tokens_dir`` and ``tokens`` (env wins on a name clash).

        Read at start-up; a rotated Secret takes effect on restart.
        """
        found: dict[str, str] = {}
        if self.tokens_dir is not None and self.tokens_dir.is_dir():
            for path in sorted(self.tokens_dir.iterdir()):
                # Kubernetes mounts Secrets through ..data symlinks; skip those dot entries.
                if path.name.startswith(".") or not path.is_file():
                    continue
                value = path.read_text(encoding="utf-8").strip()
                if value:
                    found[path.name] = value
        for name, secret in self.tokens.items():
            value = secret.get_secret_value().strip()
            if value:
                found[name] = value
        return found

    def read_token_keys(self) -> tuple[bytes | None, tuple[bytes, ...]]:
        """(signing key, verification keys) from read_token_keys_dir, read_token_key and
        read_token_verify_keys; the signing key, when there is one, is first among the
        verification keys. Never derived from the API tokens: adding a token changes nothing.

        Raises ValueError for a key shorter than 32 characters (a person must fix it).
        """
        signing: str | None = None
        verify: list[str] = []
        if self.read_token_keys_dir is not None and self.read_token_keys_dir.is_dir():
            for path in sorted(self.read_token_keys_dir.iterdir()):
                if path.name.startswith(".") or not path.is_file():
                    continue  # Secret mounts' ..data symlinks
                value = path.read_text(encoding="utf-8").strip()
                if not value:
                    continue
                if path.name == READ_TOKEN_SIGNING_FILE:
                    signing = value
                else:
                    verify.append(value)
        if signing is None and self.read_token_key is not None:
            signing = self.read_token_key.get_secret_value().strip() or None
        verify.extend(k.get_secret_value().strip() for k in self.read_token_verify_keys)
        keys = [k for k in ([signing] if signing else []) + verify if k]
        for key in keys:
            if len(key) < READ_TOKEN_KEY_MIN_CHARS:
                raise ValueError(
                    f"A read-token key is shorter than {READ_TOKEN_KEY_MIN_CHARS} characters; "
                    "generate one with `openssl rand -hex 32`."
                )
        unique = tuple(dict.fromkeys(k.encode() for k in keys))
        return (signing.encode() if signing else None), unique


READ_TOKEN_SIGNING_FILE = "signing-key"
"""The file of read_token_keys_dir (the key of the Secret) holding the signing key."""
READ_TOKEN_KEY_MIN_CHARS = 32


def load_settings() -> APISettings:
    """Read the settings once (environment and defaults)."""
    return APISettings()

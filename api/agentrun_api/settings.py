"""Settings of the API process (``agentrun api``), read once at start-up.

Environment: ``AGENTRUN_API_<FIELD>``; nested models use ``__``
(e.g. ``AGENTRUN_API_STREAM__HEARTBEAT_SECONDS=5``, ``AGENTRUN_API_WEBHOOK_POLICY__ALLOW_LOOPBACK=true``).
Helm values use the camelCase of the same names.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from agentrun_contract import limits
from agentrun_webhooks.policy import WebhookPolicySettings
from pydantic import Field, SecretStr
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
        description="HMAC key that signs the run-scoped read tokens in poll_url/stream_url. "
        "Unset: derived from the configured tokens, so replicas with the same Secret agree.",
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
        default=0,
        ge=0,
        description="Backpressure: when this many runs are queued in the namespace, POST /runs "
        "answers 503 with Retry-After. 0 turns it off.",
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
        default=300,
        ge=1,
        description="Server-side timeout of one watch of the run cache; it then re-opens.",
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

    def signing_key(self) -> bytes:
        """The read-token HMAC key: configured, else derived from every token (sorted), so all
        replicas mounting the same Secret derive the same key."""
        if self.read_token_key is not None:
            return self.read_token_key.get_secret_value().encode()
        material = "\x00".join(f"{n}={t}" for n, t in sorted(self.all_tokens().items()))
        return hmac.new(b"agentrun-read-token", material.encode(), hashlib.sha256).digest()


def load_settings() -> APISettings:
    """Read the settings once (environment and defaults)."""
    return APISettings()

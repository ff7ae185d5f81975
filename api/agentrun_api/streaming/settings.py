"""Settings of the SSE stream (nested in the API's settings as ``stream``).

Environment: ``AGENTRUN_API_STREAM__<FIELD>``, e.g. ``AGENTRUN_API_STREAM__HEARTBEAT_SECONDS=5``.
Helm: ``api.stream.<camelCaseField>``.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class StreamSettings(BaseModel):
    """How ``GET /api/v1/runs/{job_id}/stream`` serves a run's transcript."""

    heartbeat_seconds: float = Field(
        default=15.0,
        gt=0,
        description="Send an SSE comment line (`: heartbeat`) after this many seconds with "
        "nothing else sent. Also bounds how long a vanished client keeps its share of the "
        "upstream watch.",
    )
    client_buffer_events: int = Field(
        default=1000,
        ge=1,
        description="Events buffered per client. A client that falls this far behind the live "
        "run is disconnected; it resumes with its last id (Last-Event-ID).",
    )
    upstream_idle_seconds: float = Field(
        default=5.0,
        ge=0,
        description="How long a run's upstream subscription (the watch on its transcript) "
        "lingers after its last client left, so a quick reconnect reuses it. Capped at "
        "heartbeat_seconds: a departed client's share is released by the next heartbeat.",
    )
    drain_seconds: float = Field(
        default=5.0,
        ge=0,
        description="On shutdown, open streams end at once after sending what they hold; one "
        "whose client stopped reading is dropped after this many seconds. Keep it below the "
        "API's shutdown_grace_seconds.",
    )
    retry_after_seconds: int = Field(
        default=1,
        ge=0,
        description="Retry-After (seconds) of the 503 that refuses a new stream while this "
        "replica shuts down.",
    )
    watch_timeout_seconds: int = Field(
        default=300,
        ge=1,
        description="Server-side timeout of one transcript watch request; the watch is then "
        "re-opened from the last resourceVersion.",
    )
    watch_retry_seconds: float = Field(
        default=1.0,
        gt=0,
        description="Back-off before re-opening a transcript watch or re-listing after an "
        "error (doubles up to 30 s while errors persist).",
    )
    status_poll_seconds: float = Field(
        default=2.0,
        gt=0,
        description="How often an upstream re-reads its AgentRun's status.transcript while "
        "no `complete` event has been seen, as a safety net beside the watch.",
    )
    request_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="Timeout of one Kubernetes read (the run, the chunk list) and of opening a "
        "watch; a stream that cannot read its run in time is answered 503.",
    )
    watch_connection_pool_size: int = Field(
        default=1000,
        ge=1,
        description="Connections the stream's own Kubernetes client may open: one per watched "
        "run, kept apart from the API's client so streams cannot starve its other calls.",
    )

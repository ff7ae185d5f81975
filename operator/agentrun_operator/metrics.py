"""Prometheus metrics of the operator, served on ``metrics_port``.

The webhook delivery handlers (:mod:`agentrun_operator.webhook_handlers`) add their delivery counter to the same default registry.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import Counter, Gauge, Histogram

RUNS_FINISHED: Final = Counter(
    "agentrun_operator_runs_finished_total",
    "Runs that reached a terminal phase, by phase and reason.",
    ["phase", "reason"],
)
PHASE_TRANSITIONS: Final = Counter(
    "agentrun_operator_phase_transitions_total",
    "Phase changes written to AgentRun status, by new phase and reason.",
    ["phase", "reason"],
)
RECONCILE_LATENCY: Final = Histogram(
    "agentrun_operator_reconcile_latency_seconds",
    "From the AgentRun's creation to its Job's creation.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
RUN_DURATION: Final = Histogram(
    "agentrun_operator_run_duration_seconds",
    "From the container's start (or the run's creation) to the terminal phase.",
    buckets=(1, 5, 15, 30, 60, 120, 300, 900, 1800, 3600, 7200, 21600, 86400),
)
QUEUE_DEPTH: Final = Gauge(
    "agentrun_operator_queue_depth",
    "Runs waiting for a concurrency slot (no Job yet), by namespace.",
    ["namespace"],
)
ACTIVE_RUNS: Final = Gauge(
    "agentrun_operator_active_runs",
    "Non-terminal runs this operator is following.",
)
TRANSCRIPT_BYTES: Final = Counter(
    "agentrun_operator_transcript_bytes_written_total",
    "Bytes of transcript events written to AgentRunTranscript chunks.",
)
LEADER: Final = Gauge(
    "agentrun_operator_is_leader",
    "1 while this replica holds the leader Lease and reconciles.",
)
API_REQUESTS: Final = Counter(
    "agentrun_operator_api_requests_total",
    "Kubernetes API requests made by the reconciler (kopf's own watches not included).",
)
EVENT_LOOP_LAG: Final = Histogram(
    "agentrun_operator_event_loop_lag_seconds",
    "How late the event loop ran a timer (sampled every 0.1 s): time the loop was busy. The "
    "Lease is renewed and every watch read on this loop; lag near the renew deadline loses it.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5),
)
GC_PAUSE: Final = Histogram(
    "agentrun_operator_gc_pause_seconds",
    "How long each garbage collection stopped the process, by generation (a part of the "
    "event-loop lag).",
    ["generation"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5),
)

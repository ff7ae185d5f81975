"""Prometheus metrics of the stream hub, registered on the API's registry when it has one.

- ``agentrun_api_stream_clients``: open SSE streams;
- ``agentrun_api_stream_upstreams``: runs with an upstream subscription (at most one per run);
- ``agentrun_api_stream_watches_opened_total``: transcript watch requests sent (re-opens count);
- ``agentrun_api_stream_disconnects_total{reason}``: streams ended by the server before
  ``[DONE]``: ``overflow`` (slow client), ``shutdown``, ``run_gone``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class StreamMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.clients = Gauge(
            "agentrun_api_stream_clients", "Open SSE streams.", registry=self.registry
        )
        self.upstreams = Gauge(
            "agentrun_api_stream_upstreams",
            "Runs with an upstream transcript subscription in this process.",
            registry=self.registry,
        )
        self.watches_opened = Counter(
            "agentrun_api_stream_watches_opened",
            "Transcript watch requests sent to the Kubernetes API.",
            registry=self.registry,
        )
        self.disconnects = Counter(
            "agentrun_api_stream_disconnects",
            "Streams the server ended before [DONE], by reason.",
            ["reason"],
            registry=self.registry,
        )

"""Prometheus metrics of the API, served on their own port (``metrics_port``, no auth).

- ``agentrun_api_requests_total{method,route,status}``: requests by route template and status;
- ``agentrun_api_request_duration_seconds{method,route}``: latency histogram (a stream counts
  for its whole length);
- ``agentrun_api_runs_created_total``, ``agentrun_api_runs_replayed_total``;
- ``agentrun_api_cached_runs`` and ``agentrun_api_queued_runs`` (from the run cache).

Each app has its own registry, so several apps in one test process do not collide.
"""

from __future__ import annotations

import time
from typing import Any

from litestar.enums import ScopeType
from litestar.exceptions import HTTPException
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from agentrun_api.submission import SubmissionError

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0)


class APIMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "agentrun_api_requests",
            "HTTP requests by method, route template and status code.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "agentrun_api_request_duration_seconds",
            "HTTP request latency by method and route template.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.runs_created = Counter(
            "agentrun_api_runs_created", "AgentRuns created by POST /runs.", registry=self.registry
        )
        self.runs_replayed = Counter(
            "agentrun_api_runs_replayed",
            "POST /runs answered as an idempotent replay.",
            registry=self.registry,
        )
        self.cached_runs = Gauge(
            "agentrun_api_cached_runs", "Runs held by the run cache.", registry=self.registry
        )
        self.queued_runs = Gauge(
            "agentrun_api_queued_runs", "Queued runs in the namespace.", registry=self.registry
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)


def _status_of(exc: BaseException) -> int:
    if isinstance(exc, HTTPException):
        return exc.status_code
    if isinstance(exc, SubmissionError):
        return exc.status_code
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) else 500


def metrics_middleware_factory(metrics: APIMetrics) -> Any:
    """A Litestar middleware factory recording every routed request."""

    def factory(app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != ScopeType.HTTP:
                await app(scope, receive, send)
                return
            started = time.perf_counter()
            status = 500

            async def capture(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                await send(message)

            route = str(scope.get("path_template") or "unmatched")
            method = str(scope.get("method", ""))
            try:
                await app(scope, receive, capture)
            except BaseException as exc:
                status = _status_of(exc)
                raise
            finally:
                metrics.observe(method, route, status, time.perf_counter() - started)

        return middleware

    return factory

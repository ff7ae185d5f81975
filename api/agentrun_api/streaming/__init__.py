"""Resumable SSE streaming of a run's transcript (issue 6; shared/CONTRACT.md, "Stream").

Mount :class:`StreamController` at the app's top level (its path is absolute:
``GET /api/v1/runs/{job_id}/stream``) and enter :func:`stream_lifespan` in the app lifespan
after ``app.state.kube_client`` and ``app.state.settings`` are set.

The controller and lifespan (Litestar, the Kubernetes client) load on first use, so reading the
settings (:class:`StreamSettings`) stays light: the API's workers parent only reads settings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agentrun_api.streaming.settings import StreamSettings

if TYPE_CHECKING:
    from agentrun_api.streaming.controller import StreamController
    from agentrun_api.streaming.lifespan import stream_lifespan

__all__ = ["StreamController", "StreamSettings", "stream_lifespan"]


def __getattr__(name: str) -> Any:
    if name == "StreamController":
        from agentrun_api.streaming.controller import StreamController

        return StreamController
    if name == "stream_lifespan":
        from agentrun_api.streaming.lifespan import stream_lifespan

        return stream_lifespan
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

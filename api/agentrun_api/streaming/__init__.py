"""Resumable SSE streaming of a run's transcript (issue 6; shared/CONTRACT.md, "Stream").

Mount :class:`StreamController` at the app's top level (its path is absolute:
``GET /api/v1/runs/{job_id}/stream``) and enter :func:`stream_lifespan` in the app lifespan
after ``app.state.kube_client`` and ``app.state.settings`` are set.
"""

from __future__ import annotations

from agentrun_api.streaming.controller import StreamController
from agentrun_api.streaming.lifespan import stream_lifespan
from agentrun_api.streaming.settings import StreamSettings

__all__ = ["StreamController", "StreamSettings", "stream_lifespan"]

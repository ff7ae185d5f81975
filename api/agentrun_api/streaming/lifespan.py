"""The stream hub's lifetime, entered by the API's lifespan (:func:`stream_lifespan`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar

from agentrun_api.streaming.hub import CachedRun, RunLookup, StreamHub, watch_shutdown
from agentrun_api.streaming.metrics import StreamMetrics
from agentrun_api.streaming.settings import StreamSettings
from agentrun_api.streaming.source import KubeTranscriptSource

STATE_KEY = "stream_hub"
"""``app.state`` key of the per-process :class:`StreamHub`."""


def _stream_settings(app_settings: Any) -> StreamSettings:
    settings = getattr(app_settings, "stream", None)
    return settings if isinstance(settings, StreamSettings) else StreamSettings()


def _informer_lookup(app: Litestar) -> RunLookup | None:
    """Reads of the API's run cache (``app.state.run_cache``), when it has one."""
    cache = getattr(app.state, "run_cache", None)
    get = getattr(cache, "get", None)
    if get is None:
        return None

    def lookup(run_name: str) -> CachedRun | None:
        record = get(run_name)
        if record is None:
            return None
        phase = getattr(record, "phase", None)
        return CachedRun(
            uid=str(getattr(record, "uid", "")),
            terminal=bool(getattr(phase, "is_terminal", False)),
        )

    return lookup


@asynccontextmanager
async def stream_lifespan(app: Litestar) -> AsyncIterator[StreamHub]:
    """Build the per-process stream hub from ``app.state.kube_client`` and
    ``app.state.settings`` (``namespace`` and ``stream``), store it as ``app.state.stream_hub``,
    and tear it down on exit.

    Shutdown: when ``app.state.shutting_down`` (an asyncio.Event the API sets on SIGTERM, before
    uvicorn stops) is set, new streams are refused with 503 + Retry-After and open ones end
    after what they hold, so clients reconnect elsewhere with their last id. On exit, streams
    still open get ``stream.drain_seconds``, then the upstream watches are closed.
    """
    app_settings = app.state.settings
    settings = _stream_settings(app_settings)
    api_metrics = getattr(app.state, "metrics", None)
    metrics = StreamMetrics(getattr(api_metrics, "registry", None))
    source = KubeTranscriptSource(
        app.state.kube_client,
        str(getattr(app_settings, "namespace", "default")),
        watch_timeout_seconds=settings.watch_timeout_seconds,
        request_timeout_seconds=settings.request_timeout_seconds,
        connection_pool_size=settings.watch_connection_pool_size,
    )
    hub = StreamHub(source, settings, metrics, lookup=_informer_lookup(app))
    app.state[STATE_KEY] = hub
    background = [asyncio.create_task(hub.sweep_forever(), name="stream-sweeper")]
    shutting_down = getattr(app.state, "shutting_down", None)
    if isinstance(shutting_down, asyncio.Event):
        background.append(
            asyncio.create_task(
                watch_shutdown(shutting_down, hub.begin_shutdown), name="stream-shutdown"
            )
        )
    try:
        yield hub
    finally:
        for task in background:
            task.cancel()
        for task in background:
            with contextlib.suppress(BaseException):
                await task
        await hub.close(settings.drain_seconds)
        await source.close()
        app.state[STATE_KEY] = None

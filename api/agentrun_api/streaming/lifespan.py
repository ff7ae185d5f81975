"""The stream hub's lifetime, entered by the API's lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar

STATE_KEY = "stream_hub"
"""``app.state`` key of the per-process hub."""


@asynccontextmanager
async def stream_lifespan(app: Litestar) -> AsyncIterator[None]:
    """Build the per-process stream hub from ``app.state.kube_client`` and
    ``app.state.settings`` (its ``stream`` field), and tear it down on exit."""
    # Skeleton: the hub lands in the next commit.
    app.state[STATE_KEY] = None
    try:
        yield
    finally:
        app.state[STATE_KEY] = None

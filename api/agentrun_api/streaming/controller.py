"""``GET /api/v1/runs/{job_id}/stream``: the thin Litestar route over the stream hub."""

from __future__ import annotations

from litestar import Controller, get
from litestar.exceptions import HTTPException


class StreamController(Controller):
    """The run's transcript as text/event-stream. The path is absolute: mount at top level."""

    path = "/api/v1/runs"
    tags = ["runs"]

    @get("/{job_id:str}/stream", media_type="text/event-stream", sync_to_thread=False)
    def stream(self, job_id: str) -> None:
        """Skeleton: replaced by the real stream in the next commit."""
        raise HTTPException(status_code=503, detail="streaming is not wired yet")

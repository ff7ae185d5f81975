"""``GET /api/v1/runs/{job_id}/stream``: a thin Litestar route over the per-process stream hub.

Answers, in order: 401 (no API token and no valid read token, via the API's
``require_run_reader`` guard), 400 (a cursor that is not a whole number), 503 + Retry-After
(this process is shutting down, or the Kubernetes API cannot be read), 404 (no such run), 204 (the
cursor is at or past the stored `complete` event: EventSource stops), else 200
text/event-stream. Every status is decided before the first SSE byte.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from agentrun_contract.stream import LAST_EVENT_ID_QUERY
from litestar import Controller, MediaType, Request, Response, get
from litestar.exceptions import HTTPException
from litestar.openapi import ResponseSpec
from litestar.params import HeaderParameter, Parameter, QueryParameter

from agentrun_api.auth import require_run_reader
from agentrun_api.schemas import ErrorBody
from agentrun_api.streaming.hub import RunNotFound, ShuttingDown, StreamHub
from agentrun_api.streaming.lifespan import STATE_KEY
from agentrun_api.streaming.response import SSEStream
from agentrun_api.streaming.resume import InvalidLastEventId, resume_cursor

SSE_MEDIA_TYPE: Final = "text/event-stream"
SSE_HEADERS: Final = {
    # Proxies must neither cache nor buffer an event stream.
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


def _error(description: str) -> ResponseSpec:
    return ResponseSpec(data_container=ErrorBody, description=description)


class StreamController(Controller):
    """The run's transcript as Server-Sent Events. The path is absolute: mount at top level."""

    path = "/api/v1/runs"
    tags = ["runs"]

    @get(
        "/{job_id:str}/stream",
        guards=[require_run_reader],
        summary="Stream a run's events (SSE), resumable",
        description=(
            "text/event-stream in PraisonAI's format plus SSE ids: per event `id: N`, "
            '`event: <status|progress|log|complete>`, `data: {"event": ..., "data": {...}}`; '
            "after `complete`, `data: [DONE]` and the stream closes. Heartbeat comments "
            "(`: heartbeat`) when idle. Resume with the `Last-Event-ID` header or the "
            "`last_event_id` query parameter: every later event exactly once, on any replica, "
            "during or after the run."
        ),
        media_type=SSE_MEDIA_TYPE,
        responses={
            204: ResponseSpec(
                data_container=None,
                description="The cursor is at or past the run's `complete` event: nothing "
                "more will come (EventSource stops reconnecting).",
            ),
            400: _error("The cursor is not a whole number."),
            401: _error("No valid API token or read token."),
            404: _error("No such run."),
            503: _error(
                "This replica is shutting down or cannot reach Kubernetes; retry (Retry-After)."
            ),
        },
    )
    async def stream(
        self,
        request: Request[Any, Any, Any],
        job_id: str = Parameter(description="The run's job_id."),
        last_event_id: Annotated[
            str | None,
            QueryParameter(
                name=LAST_EVENT_ID_QUERY,
                required=False,
                description="Resume after this event id (for EventSource, which cannot set "
                "headers). The Last-Event-ID header wins when both are sent.",
            ),
        ] = None,
        last_event_id_header: Annotated[
            str | None,
            HeaderParameter(
                name="Last-Event-ID", required=False, description="Resume after this event id."
            ),
        ] = None,
        token: Annotated[
            str | None,
            QueryParameter(
                name="token",
                required=False,
                description="The run's signed read token (from stream_url), when no API token "
                "is sent.",
            ),
        ] = None,
    ) -> Response[Any]:
        try:
            cursor = resume_cursor(last_event_id_header, last_event_id)
        except InvalidLastEventId as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from exc
        hub: StreamHub | None = request.app.state.get(STATE_KEY)
        if hub is None:
            return _draining(1)
        try:
            client = await hub.open(job_id, cursor)
        except ShuttingDown:
            return _draining(hub.settings.retry_after_seconds)
        except RunNotFound:
            raise HTTPException(
                status_code=404,
                detail=f"No run {job_id!r}: check the job_id returned by POST /api/v1/runs "
                "(GET /api/v1/runs lists them).",
            ) from None
        if client is None:
            return Response(content=None, status_code=204)
        return SSEStream(client, headers=SSE_HEADERS)


def _draining(retry_after: int) -> Response[Any]:
    """503 for a new stream while this replica drains: reconnect and another replica answers.
    Returned, not raised: the API's error handler hides the detail of raised 5xx errors."""
    return Response(
        content={
            "detail": "This API replica is shutting down; reconnect (with your Last-Event-ID) "
            "and another replica will continue the stream."
        },
        status_code=503,
        media_type=MediaType.JSON,
        headers={"Retry-After": str(retry_after)},
    )

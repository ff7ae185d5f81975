"""The SSE response: Litestar's streaming response, plus a way to drop a stuck connection.

A client that stops reading leaves the server blocked in ``send`` (the transport's flow control),
so the stream's own code never runs again to end it. When the hub gives up on such a client (its
buffer overflowed, or the process is draining) and the stream has not ended within the grace
period, :class:`SSEStream` cancels the send and returns without completing the response; the
server then closes the connection (uvicorn logs "ASGI callable returned without completing
response"). The client resumes from the last id it actually received, so nothing is lost.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from litestar.enums import MediaType
from litestar.response import Stream
from litestar.response.base import ASGIResponse
from litestar.response.streaming import ASGIStreamingResponse
from litestar.types import Receive, Send

from agentrun_api.streaming.hub import StreamClient

if TYPE_CHECKING:
    from litestar import Litestar, Request
    from litestar.background_tasks import BackgroundTask, BackgroundTasks
    from litestar.datastructures import Cookie
    from litestar.types import TypeEncodersMap


class _SSEASGIResponse(ASGIStreamingResponse):
    __slots__ = ("client",)

    def __init__(self, *, client: StreamClient, **kwargs: Any) -> None:
        super().__init__(iterator=client, **kwargs)
        self.client = client

    async def send_body(self, send: Send, receive: Receive) -> None:
        """Send the client's frames until they end, the client disconnects, or the hub aborts
        the stream (a client that stopped reading: the pending send is cancelled and the
        response stays incomplete, so the server drops the connection).

        Two plain asyncio tasks rather than Litestar's anyio task group: a third cheaper per
        stream, which counts when a thousand streams connect at once (bench_stream --burst).
        """
        streamer = asyncio.create_task(self._stream(send))
        listener = asyncio.create_task(_disconnected(receive))
        self.client.bind_abort(lambda: _cancel(streamer))
        try:
            await asyncio.wait((streamer, listener), return_when=asyncio.FIRST_COMPLETED)
        finally:
            streamer.cancel()
            listener.cancel()
            await asyncio.gather(streamer, listener, return_exceptions=True)
            await self.client.aclose()
        if not streamer.cancelled() and (error := streamer.exception()) is not None:
            raise error


def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()


async def _disconnected(receive: Receive) -> None:
    """Return once the client has disconnected."""
    while (await receive())["type"] != "http.disconnect":
        pass


class SSEStream(Stream):
    """A ``text/event-stream`` response over one :class:`StreamClient`."""

    __slots__ = ("client",)

    def __init__(self, client: StreamClient, *, headers: dict[str, str]) -> None:
        super().__init__(client, media_type="text/event-stream", headers=headers)
        self.client = client

    def to_asgi_response(
        self,
        app: Litestar | None,
        request: Request[Any, Any, Any],
        *,
        background: BackgroundTask | BackgroundTasks | None = None,
        cookies: Iterable[Cookie] | None = None,
        encoded_headers: Iterable[tuple[bytes, bytes]] | None = None,
        headers: dict[str, str] | None = None,
        is_head_response: bool = False,
        media_type: MediaType | str | None = None,
        status_code: int | None = None,
        type_encoders: TypeEncodersMap | None = None,
    ) -> ASGIResponse:
        merged_headers = {**headers, **self.headers} if headers is not None else self.headers
        all_cookies = self.cookies if cookies is None else itertools.chain(self.cookies, cookies)
        return _SSEASGIResponse(
            client=self.client,
            background=self.background or background,
            content_length=0,
            cookies=all_cookies,
            encoded_headers=encoded_headers,
            encoding=self.encoding,
            headers=merged_headers,
            is_head_response=is_head_response,
            media_type="text/event-stream",
            status_code=self.status_code or status_code,
        )

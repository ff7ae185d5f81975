"""What the emulated apiserver receives and sends, per client and request kind.

:class:`TrafficCounter` is an aiohttp middleware (install it with
:meth:`~agentrun_devcluster.apiserver.server.EmulatedAPIServer.add_middleware` before start).
Each resource request adds to one :class:`Traffic` entry keyed by the user (the bearer token:
the dev cluster's own controllers use a token of their own), the client (its User-Agent's
product: ``kopf``, ``OpenAPI-Generator`` for kubernetes_asyncio, ``python-httpx``...), the RBAC
verb (``list``/``watch`` told apart as the real apiserver does) and the resource: the number of
requests, the request body bytes (what a writer costs etcd) and the response body bytes (what
the server sent, whole watch streams included: a streamed response is counted once it ends).

Tests use it to prove what a client asks for and receives (server-side selectors), benchmarks
to report requests and bytes per run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable

from aiohttp import web

from .audit import bearer_token, request_attributes

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclasses.dataclass
class Traffic:
    requests: int = 0
    request_bytes: int = 0
    response_bytes: int = 0
    queries: list[str] = dataclasses.field(default_factory=list)
    """The query strings of list and watch requests (selectors, resourceVersion...)."""


TrafficKey = tuple[str, str, str, str]
"""(user, client, verb, resource[/subresource])."""


def client_of(user_agent: str) -> str:
    """The product of a User-Agent header (``kopf/1.45.2`` -> ``kopf``)."""
    return user_agent.split("/", 1)[0].strip() or "unknown"


class TrafficCounter:
    """Counts requests and bytes per (client, verb, resource); see the module docstring."""

    def __init__(self) -> None:
        self.entries: dict[TrafficKey, Traffic] = {}

    def reset(self) -> None:
        self.entries.clear()

    def total(
        self,
        *,
        user: str | None = None,
        client: str | None = None,
        verbs: frozenset[str] | None = None,
        resource: str | None = None,
    ) -> Traffic:
        """The sum over the entries that match every given filter."""
        out = Traffic()
        for (token, who, verb, res), traffic in list(self.entries.items()):
            if user is not None and token != user:
                continue
            if client is not None and who != client:
                continue
            if verbs is not None and verb not in verbs:
                continue
            if resource is not None and res != resource:
                continue
            out.requests += traffic.requests
            out.request_bytes += traffic.request_bytes
            out.response_bytes += traffic.response_bytes
            out.queries.extend(traffic.queries)
        return out

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        attributes = request_attributes(
            bearer_token(request), request.method, request.path, request.query
        )
        if attributes is None:
            return await handler(request)
        key = (
            attributes.user,
            client_of(request.headers.get("User-Agent", "")),
            attributes.verb,
            attributes.rbac_resource,
        )
        traffic = self.entries.setdefault(key, Traffic())
        traffic.requests += 1
        if attributes.verb in ("list", "watch"):
            traffic.queries.append(request.query_string)
        response = await handler(request)
        if request.content_length:
            traffic.request_bytes += request.content_length
        body = getattr(response, "body", None)
        if response.prepared:
            traffic.response_bytes += response.body_length  # streamed: already written
        elif isinstance(body, bytes | bytearray):
            traffic.response_bytes += len(body)
        return response

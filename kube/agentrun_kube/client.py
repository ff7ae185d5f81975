"""Build a kubernetes_asyncio ApiClient from a kubeconfig or the in-cluster service account.

kubernetes_asyncio sends every request with ``aiohttp.ClientTimeout()`` (no limit at all) unless
the call passes ``_request_timeout``: a half-open connection (a restarted apiserver, a dropped
NAT entry) then hangs the caller forever. :class:`TimeoutApiClient` gives every call a default:

- a plain call (get, list, create, patch, delete) gets a **total** timeout;
- a watch (``watch=true``) or a log follow (``follow=true``) may legitimately last for hours, so it
  gets a **read** timeout instead: the longest silence between two reads. Callers reconnect when
  it fires (``TimeoutError``), as they do after any dropped stream.

A call that passes ``_request_timeout`` itself keeps it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp
from kubernetes_asyncio import client, config

STREAM_QUERY_FLAGS = frozenset({"watch", "follow"})
"""Query parameters that turn a request into a long-lived stream."""


@dataclass(frozen=True)
class ClientTimeouts:
    """Default timeouts of every Kubernetes call, in seconds."""

    request_seconds: float = 30.0
    """Total time of a plain (non-streaming) call, body included."""
    connect_seconds: float = 10.0
    """Time to open the connection (every call)."""
    stream_read_seconds: float = 330.0
    """Longest silence on a watch or log follow before it is treated as dead. Above the
    default server-side watch timeout (300 s), so a healthy quiet watch ends on the server's
    side first."""


def is_stream_request(query_params: Iterable[tuple[str, Any]] | None) -> bool:
    """Does this request open a watch or a log follow (``watch=true`` or ``follow=true``)?"""
    for key, value in query_params or ():
        if key in STREAM_QUERY_FLAGS and str(value).lower() == "true":
            return True
    return False


def default_timeout(
    timeouts: ClientTimeouts, query_params: Iterable[tuple[str, Any]] | None
) -> aiohttp.ClientTimeout:
    """The timeout a request gets when its caller sets none (see the module docstring)."""
    if is_stream_request(query_params):
        return aiohttp.ClientTimeout(
            total=None,
            connect=timeouts.connect_seconds,
            sock_connect=timeouts.connect_seconds,
            sock_read=timeouts.stream_read_seconds,
        )
    return aiohttp.ClientTimeout(
        total=timeouts.request_seconds,
        connect=timeouts.connect_seconds,
        sock_connect=timeouts.connect_seconds,
    )


class TimeoutApiClient(client.ApiClient):
    """An ApiClient whose calls never wait forever (see the module docstring)."""

    def __init__(
        self, configuration: client.Configuration, timeouts: ClientTimeouts | None = None
    ) -> None:
        super().__init__(configuration=configuration)
        self.timeouts = timeouts or ClientTimeouts()

    def request(
        self,
        method: str,
        url: str,
        query_params: list[tuple[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        post_params: Any = None,
        body: Any = None,
        _preload_content: bool = True,
        _request_timeout: Any = None,
    ) -> Any:
        if _request_timeout is None:
            _request_timeout = default_timeout(self.timeouts, query_params)
        return super().request(
            method,
            url,
            query_params=query_params,
            headers=headers,
            post_params=post_params,
            body=body,
            _preload_content=_preload_content,
            _request_timeout=_request_timeout,
        )


async def load_api_client(
    kubeconfig: str | None = None, *, timeouts: ClientTimeouts | None = None
) -> client.ApiClient:
    """An ApiClient for ``kubeconfig`` (or $KUBECONFIG), else the in-cluster service account,
    with default ``timeouts`` on every call.

    The caller owns the client and must ``await api.close()``.
    """
    path = kubeconfig or os.environ.get("KUBECONFIG")
    configuration = client.Configuration()
    if path:
        await config.load_kube_config(config_file=path, client_configuration=configuration)
    else:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    return TimeoutApiClient(configuration, timeouts)

"""Typed Kubernetes API errors: what is final, what is worth retrying."""

from __future__ import annotations

import json

import aiohttp
from kubernetes_asyncio.client.exceptions import ApiException

TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (aiohttp.ClientError, OSError)
"""What a call raises when the connection, not the API, failed: refused, reset, a payload cut
mid-chunk (``ClientPayloadError``), a server that went away (``ServerDisconnectedError``), or a
client-side timeout (``TimeoutError`` is an ``OSError``). Always worth a retry with backoff."""


class KubeError(Exception):
    """A Kubernetes API call failed."""

    retryable = False

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class NotFound(KubeError):
    pass


class AlreadyExists(KubeError):
    pass


class Conflict(KubeError):
    """A stale resourceVersion or a failed JSON-patch ``test``: re-read and decide again."""

    retryable = True


class Invalid(KubeError):
    """422: the object breaks the CRD schema or a validation rule. Final."""


class Gone(KubeError):
    """410: a watch's resourceVersion expired; re-list."""

    retryable = True


class Unavailable(KubeError):
    """429, 5xx or no connection: retry with backoff."""

    retryable = True


def _is_failed_patch_test(message: str) -> bool:
    # "testing value /status/phase failed" (the apiserver's json-patch library) or
    # "test operation ... failed" (other implementations).
    lowered = message.lower()
    return "testing value" in lowered or "test operation" in lowered


def from_api_exception(exc: ApiException) -> KubeError:
    """Map a kubernetes_asyncio ApiException to a typed error."""
    status = int(exc.status or 0)
    reason = ""
    message = str(exc.reason or "")
    try:
        body = json.loads(exc.body) if exc.body else {}
        reason = str(body.get("reason", ""))
        message = str(body.get("message", message))
    except (TypeError, ValueError):
        pass
    if status == 404:
        return NotFound(status, reason, message)
    if status == 409 and reason == "AlreadyExists":
        return AlreadyExists(status, reason, message)
    if status == 409:
        return Conflict(status, reason, message)
    if status == 422 and _is_failed_patch_test(message):
        # The real apiserver answers a JSON-patch `test` that did not hold with 422 Invalid;
        # for callers it means what a stale resourceVersion means: re-read and decide again.
        return Conflict(status, reason, message)
    if status == 422:
        return Invalid(status, reason, message)
    if status == 410:
        return Gone(status, reason, message)
    if status == 0 or status == 429 or status >= 500:
        return Unavailable(status, reason, message)
    return KubeError(status, reason, message)


def is_transport_error(exc: BaseException) -> bool:
    """Did the connection (not the API) fail? See :data:`TRANSPORT_ERRORS`."""
    return isinstance(exc, TRANSPORT_ERRORS)


def from_transport_error(exc: BaseException) -> Unavailable:
    """A transport failure as a retryable :class:`Unavailable` (status 0)."""
    detail = str(exc) or type(exc).__name__
    return Unavailable(0, type(exc).__name__, f"no answer from the Kubernetes API: {detail}")

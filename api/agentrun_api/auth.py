"""Authentication: API tokens and run-scoped signed read tokens (shared/CONTRACT.md, "Auth").

- API tokens: ``Authorization: Bearer <token>`` or ``X-API-Key: <token>``, compared in constant
  time against every configured token (no early exit, so timing does not tell which matched).
  The token's *name* (never the token) identifies the submitter.
- Read tokens: ``v1.<expiry unix seconds>.<base64url HMAC-SHA256(key, "job_id\\0expiry")>``,
  valid for one run until expiry. They ride in ``poll_url``/``stream_url`` as ``?token=`` so a
  browser's EventSource (no headers) can follow a stream. They grant reads of that run only.
- ``/health``, ``/livez`` and ``/schema`` are public; ``/metrics`` is on its own port.

Guards: :func:`require_api_token` (every /api/v1 route) and :func:`require_run_reader` (the
status and stream routes of one run: an API token or that run's read token). They are
coroutines on purpose: Litestar runs a *sync* guard in a worker thread, a thread hop per request.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler

READ_TOKEN_VERSION = "v1"
READ_TOKEN_QUERY = "token"
ANONYMOUS = "anonymous"
"""The submitter name recorded when auth is off."""
WWW_AUTHENTICATE = 'Bearer realm="agentrun"'


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _mac(job_id: str, expiry: int, key: bytes) -> bytes:
    return hmac.new(key, f"{job_id}\x00{expiry}".encode(), hashlib.sha256).digest()


def sign_read_token(job_id: str, key: bytes, ttl: int, now: float) -> str:
    """A read token for ``job_id`` valid until ``now + ttl`` (unix seconds)."""
    expiry = int(now) + ttl
    return f"{READ_TOKEN_VERSION}.{expiry}.{_b64(_mac(job_id, expiry, key))}"


def verify_read_token(token: str, job_id: str, key: bytes, now: float) -> bool:
    """True if ``token`` was signed with ``key`` for ``job_id`` and has not expired."""
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != READ_TOKEN_VERSION:
        return False
    try:
        expiry = int(parts[1])
    except ValueError:
        return False
    if expiry < now:
        return False
    expected = _b64(_mac(job_id, expiry, key))
    return hmac.compare_digest(expected.encode(), parts[2].encode("utf-8", "replace"))


def match_token(presented: str, tokens: Mapping[str, str]) -> str | None:
    """The name of the token equal to ``presented``; every token is compared (constant time)."""
    found: str | None = None
    given = presented.encode("utf-8", "replace")
    for name, token in tokens.items():
        if hmac.compare_digest(given, token.encode("utf-8")):
            found = name
    return found


def presented_token(headers: Mapping[str, str]) -> str | None:
    """The API token from ``Authorization: Bearer`` or ``X-API-Key``, if any."""
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    api_key = headers.get("x-api-key")
    if api_key and api_key.strip():
        return api_key.strip()
    return None


@dataclass(frozen=True)
class Authenticator:
    """Built once at start-up from the settings; stored as ``app.state.auth``."""

    enabled: bool
    tokens: Mapping[str, str]
    key: bytes
    read_token_ttl: int

    def token_name(self, headers: Mapping[str, str]) -> str | None:
        """The caller's token name; ``anonymous`` when auth is off; None if not authenticated."""
        if not self.enabled:
            return ANONYMOUS
        token = presented_token(headers)
        if token is None:
            return None
        return match_token(token, self.tokens)

    def read_token_for(self, job_id: str, now: float | None = None) -> str | None:
        """The signed read token to put in a run's URLs; None when auth is off."""
        if not self.enabled:
            return None
        return sign_read_token(job_id, self.key, self.read_token_ttl, now or time.time())

    def can_read(self, job_id: str, read_token: str | None, now: float | None = None) -> bool:
        return read_token is not None and verify_read_token(
            read_token, job_id, self.key, now or time.time()
        )


def _unauthorized(detail: str) -> NotAuthorizedException:
    return NotAuthorizedException(detail=detail, headers={"WWW-Authenticate": WWW_AUTHENTICATE})


NO_TOKEN_DETAIL = (
    "Authentication required: send your API token as `Authorization: Bearer <token>` or "
    "`X-API-Key: <token>`."
)


async def require_api_token(connection: ASGIConnection, _: BaseRouteHandler) -> None:  # type: ignore[type-arg]
    """Guard: a valid API token (or auth off). Records the token name in ``connection.state``."""
    auth: Authenticator = connection.app.state.auth
    name = auth.token_name(connection.headers)
    if name is None:
        raise _unauthorized(NO_TOKEN_DETAIL)
    connection.state.token_name = name


async def require_run_reader(connection: ASGIConnection, _: BaseRouteHandler) -> None:  # type: ignore[type-arg]
    """Guard for reads of one run: an API token, or that run's signed read token (``?token=``)."""
    auth: Authenticator = connection.app.state.auth
    name = auth.token_name(connection.headers)
    if name is not None:
        connection.state.token_name = name
        return
    job_id = str(connection.path_params.get("job_id", ""))
    if auth.can_read(job_id, connection.query_params.get(READ_TOKEN_QUERY)):
        connection.state.token_name = None
        return
    raise _unauthorized(
        NO_TOKEN_DETAIL + " A `token` query parameter must be this run's unexpired read token "
        "(from its poll_url or stream_url)."
    )

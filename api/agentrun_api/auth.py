"""Authentication and run scoping (shared/CONTRACT.md, "Auth").

- API tokens: ``Authorization: Bearer <token>`` or ``X-API-Key: <token>``, compared in constant
  time against every configured token (no early exit, so timing does not tell which matched).
  The token's *name* (never the token) identifies the submitter.
- Scoping: a token sees the runs it submitted (label ``agentrun.dev/submitter``, a hash of its
  name); the admin tokens (settings ``admin_tokens``) see every run of the namespace, including
  runs without the label (kubectl-made, submitted with auth off or before scoping existed). A
  run outside the caller's scope answers 404, exactly as a missing run, so ids cannot be probed.
  With auth off every caller sees every run.
- Read tokens: ``v2.<expiry unix seconds>.<base64url HMAC-SHA256(key, "v2\\0job_id\\0uid\\0expiry")>``,
  valid for one incarnation of one run (its uid: a run deleted and re-created under the same
  Idempotency-Key is another run) until expiry. They ride in ``poll_url``/``stream_url`` as
  ``?token=`` so a browser's EventSource (no headers) can follow a stream, and grant reads of
  that run only. One key signs; several keys verify, so the key can rotate with an overlap.
- ``/health``, ``/livez`` and ``/schema`` are public; ``/metrics`` is on its own port.

Guards: :func:`require_api_token` (every /api/v1 route) and :func:`require_run_reader` (the
status and stream routes of one run: an API token that may see the run, or that run's read
token). They are coroutines on purpose: Litestar runs a *sync* guard in a worker thread, a thread
hop per request. Both leave the :class:`Caller` in ``connection.state.caller``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from agentrun_contract import names
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler

from agentrun_api.records import RunRecord

READ_TOKEN_VERSION = "v2"
READ_TOKEN_QUERY = "token"
ANONYMOUS = "anonymous"
"""The submitter name recorded when auth is off."""
WWW_AUTHENTICATE = 'Bearer realm="agentrun"'


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _mac(job_id: str, uid: str, expiry: int, key: bytes) -> bytes:
    message = f"{READ_TOKEN_VERSION}\x00{job_id}\x00{uid}\x00{expiry}".encode()
    return hmac.new(key, message, hashlib.sha256).digest()


def sign_read_token(job_id: str, uid: str, key: bytes, ttl: int, now: float) -> str:
    """A read token for the run ``job_id`` with metadata.uid ``uid``, valid until ``now + ttl``."""
    expiry = int(now) + ttl
    return f"{READ_TOKEN_VERSION}.{expiry}.{_b64(_mac(job_id, uid, expiry, key))}"


def verify_read_token(token: str, job_id: str, uid: str, keys: Sequence[bytes], now: float) -> bool:
    """True if ``token`` was signed with one of ``keys`` for this run (``job_id`` and ``uid``)
    and has not expired. Every key is tried (no early exit)."""
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != READ_TOKEN_VERSION or not uid:
        return False
    try:
        expiry = int(parts[1])
    except ValueError:
        return False
    if expiry < now:
        return False
    presented = parts[2].encode("utf-8", "replace")
    valid = False
    for key in keys:
        if hmac.compare_digest(_b64(_mac(job_id, uid, expiry, key)).encode(), presented):
            valid = True
    return valid


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
class Caller:
    """Who is calling and which runs they may see.

    ``token_name`` is None for a read-token caller, who sees the one run ``run_uid`` only.
    """

    token_name: str | None
    sees_all: bool
    run_uid: str | None = None

    @property
    def submitter_label(self) -> str | None:
        """The ``agentrun.dev/submitter`` value of this caller's token (None for read tokens)."""
        return None if self.token_name is None else names.submitter_label_value(self.token_name)

    def may_see(self, record: RunRecord) -> bool:
        if self.sees_all:
            return True
        if self.run_uid is not None:
            return record.uid == self.run_uid
        return record.submitter is not None and record.submitter == self.submitter_label


EVERYONE = Caller(token_name=ANONYMOUS, sees_all=True)
"""The caller when auth is off."""


@dataclass(frozen=True)
class Authenticator:
    """Built once at start-up from the settings; stored as ``app.state.auth``.

    ``verify_keys`` are the read-token keys accepted (the signing key among them).
    """

    enabled: bool
    tokens: Mapping[str, str]
    signing_key: bytes
    verify_keys: tuple[bytes, ...]
    read_token_ttl: int
    admin_tokens: frozenset[str] = frozenset()

    def token_name(self, headers: Mapping[str, str]) -> str | None:
        """The caller's token name; ``anonymous`` when auth is off; None if not authenticated."""
        if not self.enabled:
            return ANONYMOUS
        token = presented_token(headers)
        if token is None:
            return None
        return match_token(token, self.tokens)

    def caller(self, headers: Mapping[str, str]) -> Caller | None:
        """The API-token caller, :data:`EVERYONE` with auth off, None without a valid token."""
        if not self.enabled:
            return EVERYONE
        name = self.token_name(headers)
        if name is None:
            return None
        return Caller(token_name=name, sees_all=name in self.admin_tokens)

    @property
    def scoped(self) -> bool:
        """Runs are labelled with their submitter and filtered by it (auth on)."""
        return self.enabled

    def read_token_for(self, record: RunRecord, now: float | None = None) -> str | None:
        """The signed read token to put in a run's URLs; None when auth is off."""
        if not self.enabled:
            return None
        return sign_read_token(
            record.job_id,
            record.uid,
            self.signing_key,
            self.read_token_ttl,
            time.time() if now is None else now,
        )

    def can_read(self, record: RunRecord, read_token: str | None, now: float | None = None) -> bool:
        return read_token is not None and verify_read_token(
            read_token,
            record.job_id,
            record.uid,
            self.verify_keys,
            time.time() if now is None else now,
        )


class RunLookup(Protocol):
    """How the guards find a run (``app.state.service``)."""

    async def visible_record(self, job_id: str, caller: Caller) -> RunRecord:
        """The run if ``caller`` may see it; else the same 404 as a missing run."""
        ...

    async def find(self, job_id: str) -> RunRecord | None:
        """The run, or None if there is none."""
        ...


def _unauthorized(detail: str) -> NotAuthorizedException:
    return NotAuthorizedException(detail=detail, headers={"WWW-Authenticate": WWW_AUTHENTICATE})


NO_TOKEN_DETAIL = (
    "Authentication required: send your API token as `Authorization: Bearer <token>` or "
    "`X-API-Key: <token>`."
)
BAD_READ_TOKEN_DETAIL = (
    NO_TOKEN_DETAIL + " A `token` query parameter must be this run's unexpired read token "
    "(from its poll_url or stream_url)."
)


async def require_api_token(connection: ASGIConnection, _: BaseRouteHandler) -> None:  # type: ignore[type-arg]
    """Guard: a valid API token (or auth off). Leaves the :class:`Caller` in the state."""
    auth: Authenticator = connection.app.state.auth
    caller = auth.caller(connection.headers)
    if caller is None:
        raise _unauthorized(NO_TOKEN_DETAIL)
    connection.state.caller = caller
    connection.state.token_name = caller.token_name


async def require_run_reader(connection: ASGIConnection, _: BaseRouteHandler) -> None:  # type: ignore[type-arg]
    """Guard for reads of one run: an API token that may see the run (404 otherwise, as for a
    missing run), or that run's signed read token (``?token=``; 401 otherwise)."""
    auth: Authenticator = connection.app.state.auth
    runs: RunLookup = connection.app.state.service
    job_id = str(connection.path_params.get("job_id", ""))
    caller = auth.caller(connection.headers)
    if caller is not None:
        if not caller.sees_all:
            await runs.visible_record(job_id, caller)
        connection.state.caller = caller
        connection.state.token_name = caller.token_name
        return
    read_token = connection.query_params.get(READ_TOKEN_QUERY)
    if read_token is None:
        raise _unauthorized(NO_TOKEN_DETAIL)
    record = await runs.find(job_id)
    if record is None or not auth.can_read(record, read_token):
        raise _unauthorized(BAD_READ_TOKEN_DETAIL)
    connection.state.caller = Caller(token_name=None, sees_all=False, run_uid=record.uid)
    connection.state.token_name = None

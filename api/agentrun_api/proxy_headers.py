"""The URL the client called, behind a trusted reverse proxy (an Ingress, a Gateway).

An ASGI middleware: when the connecting peer is in one of the configured CIDRs
(``APISettings.trusted_proxy_cidrs``), it believes the peer's ``Forwarded`` (RFC 7239) or, when
that is absent, ``X-Forwarded-Proto`` / ``X-Forwarded-Host`` / ``X-Forwarded-Port`` /
``X-Forwarded-For`` headers, and rewrites the request's scheme, ``Host`` and client address
before any route sees them: ``poll_url``, ``stream_url`` and ``Location`` then carry the
external ``https://host``. From any other peer these headers are ignored (default: no peer is
trusted), so a client cannot choose the host of the links it is given.

Each header may hold a comma-separated list, one entry per proxy; the last entry is the one the
nearest (trusted) proxy wrote, and that is the one used for scheme and host. The client address
is the right-most X-Forwarded-For / ``for=`` entry that is not itself a trusted proxy.

A malformed value from a trusted proxy is a 400 that names the header: the proxy is
misconfigured, and guessing would put a wrong host into the links.

uvicorn's own ProxyHeadersMiddleware is not used: it reads neither ``Forwarded`` nor
``X-Forwarded-Host``, and it takes its trust list from uvicorn's configuration instead of the
API's settings.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, Scope, Send

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

SCHEMES = frozenset({"http", "https"})
_HOST = re.compile(
    r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)(?::[0-9]{1,5})?$"
)
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


class BadForwardedHeader(ValueError):
    """A trusted proxy sent a header that cannot be read."""

    def __init__(self, header: str, value: str) -> None:
        super().__init__(header)
        self.header = header
        self.detail = (
            f"The {header} header from the reverse proxy is malformed ({value[:100]!r}); fix "
            "the proxy's configuration."
        )


@dataclass(frozen=True)
class Forwarded:
    """What the nearest trusted proxy says about the original request."""

    scheme: str | None = None
    host: str | None = None
    client: str | None = None


def _split_list(values: Iterable[str]) -> list[str]:
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def _forwarded_elements(values: Sequence[str]) -> list[dict[str, str]]:
    """RFC 7239 ``Forwarded`` as a list of {parameter: value}, first proxy first."""
    elements: list[dict[str, str]] = []
    for value in values:
        # Commas and semicolons inside quoted strings do not separate.
        for element in _split_outside_quotes(value, ","):
            pairs: dict[str, str] = {}
            for pair in _split_outside_quotes(element, ";"):
                if not pair.strip():
                    continue
                name, sep, raw = pair.strip().partition("=")
                if not sep or not _TOKEN.match(name.strip()):
                    raise BadForwardedHeader("Forwarded", value)
                pairs[name.strip().lower()] = _unquote(raw.strip())
            if pairs:
                elements.append(pairs)
    return elements


def _split_outside_quotes(value: str, separator: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in value:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return [p for p in (p.strip() for p in parts) if p]


def _node_address(node: str) -> str | None:
    """The IP of a ``for=`` node or X-Forwarded-For entry (``1.2.3.4:5``, ``[::1]:5``), if any."""
    node = node.strip()
    if node.startswith("["):
        node = node[1 : node.find("]")] if "]" in node else node
    elif node.count(":") == 1:
        node = node.split(":", 1)[0]
    try:
        return str(ipaddress.ip_address(node))
    except ValueError:
        return None


class ProxyTrust:
    """The trusted proxy networks and the reading of their headers (pure)."""

    def __init__(self, networks: Iterable[Network]) -> None:
        self.networks = tuple(networks)

    def trusts(self, peer: str | None) -> bool:
        if not self.networks or not peer:
            return False
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)

    def _client(self, chain: list[str]) -> str | None:
        for node in reversed(chain):
            address = _node_address(node)
            if address is None:
                return None  # an obfuscated or unknown node: stop, keep the peer
            if not self.trusts(address):
                return address
        return None

    def read(self, headers: dict[str, list[str]]) -> Forwarded:
        """What the headers of a trusted peer say. Raises BadForwardedHeader."""
        if headers.get("forwarded"):
            elements = _forwarded_elements(headers["forwarded"])
            nearest = elements[-1] if elements else {}
            scheme = nearest.get("proto")
            host = nearest.get("host")
            chain = [e["for"] for e in elements if "for" in e]
            header_of = {"scheme": "Forwarded", "host": "Forwarded"}
        else:
            protos = _split_list(headers.get("x-forwarded-proto", []))
            hosts = _split_list(headers.get("x-forwarded-host", []))
            ports = _split_list(headers.get("x-forwarded-port", []))
            scheme = protos[-1] if protos else None
            host = hosts[-1] if hosts else None
            if ports:
                port = ports[-1]
                if not port.isdigit() or not 0 < int(port) < 65536:
                    raise BadForwardedHeader("X-Forwarded-Port", port)
                if host is not None and not _has_port(host):
                    host = f"{host}:{port}"
            chain = _split_list(headers.get("x-forwarded-for", []))
            header_of = {"scheme": "X-Forwarded-Proto", "host": "X-Forwarded-Host"}
        if scheme is not None:
            scheme = scheme.lower()
            if scheme not in SCHEMES:
                raise BadForwardedHeader(header_of["scheme"], scheme)
        if host is not None:
            if not _HOST.match(host):
                raise BadForwardedHeader(header_of["host"], host)
            host = _drop_default_port(host, scheme)
        return Forwarded(scheme=scheme, host=host, client=self._client(chain))


def _has_port(host: str) -> bool:
    return host.rsplit("]", 1)[-1].count(":") == 1


def _drop_default_port(host: str, scheme: str | None) -> str:
    default = {"http": ":80", "https": ":443"}.get(scheme or "")
    if default and host.endswith(default) and _has_port(host):
        return host[: -len(default)]
    return host


_READ = (b"forwarded", b"x-forwarded-proto", b"x-forwarded-host", b"x-forwarded-port")
_FOR = b"x-forwarded-for"


def proxy_headers_middleware_factory(trust: ProxyTrust) -> Any:
    """A Litestar middleware factory applying :class:`ProxyTrust` to every HTTP request."""

    def factory(app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != ScopeType.HTTP or not trust.networks:
                await app(scope, receive, send)
                return
            client = scope.get("client")
            if not trust.trusts(client[0] if client else None):
                await app(scope, receive, send)
                return
            found: dict[str, list[str]] = {}
            for name, value in scope["headers"]:
                if name in _READ or name == _FOR:
                    found.setdefault(name.decode("latin-1"), []).append(value.decode("latin-1"))
            if found:
                try:
                    forwarded = trust.read(found)
                except BadForwardedHeader as exc:
                    await _bad_request(send, exc.detail)
                    return
                _apply(scope, forwarded)
            await app(scope, receive, send)

        return middleware

    return factory


def _apply(scope: Scope, forwarded: Forwarded) -> None:
    if forwarded.scheme is not None:
        scope["scheme"] = forwarded.scheme
    if forwarded.host is not None:
        host = forwarded.host.encode("latin-1")
        scope["headers"] = [(n, v) for n, v in scope["headers"] if n != b"host"] + [(b"host", host)]
    if forwarded.client is not None:
        peer = scope.get("client")
        scope["client"] = (forwarded.client, peer[1] if peer else 0)


async def _bad_request(send: Send, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 400,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})

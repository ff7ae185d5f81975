"""The webhook URL policy (SSRF defence), shared by the API (at submit, 422) and the operator
(again at delivery, before every attempt).

Rules (shared/CONTRACT.md, "Webhook policy"):

- only ``http`` and ``https``; no user name or password in the URL;
- the host name is resolved with a short timeout, through a :class:`Resolver` that tests replace;
- refused: every address that is not globally routable, judged after unwrapping IPv4 addresses
  embedded in IPv6 ones (IPv4-mapped ``::ffff:a.b.c.d``, IPv4-compatible ``::a.b.c.d``, NAT64
  ``64:ff9b::/96`` and 6to4 ``2002::/16``), so ``::ffff:127.0.0.1`` and ``100.64.0.0/10`` are
  refused on Python 3.11 too; multicast and the other special-purpose ranges; the configured
  cluster service and pod ranges; host names under the configured cluster domains; and
  single-label names, which a cluster's DNS search path would complete into a cluster domain;
- a host name that resolves to several addresses is refused when any of them is;
- the allowlist (host names, ``.suffix`` domains, IP addresses and CIDRs) opens chosen targets,
  overriding every other rule but the scheme and credentials ones;
- ``allow_loopback`` (``agentrun dev``) opens loopback addresses and ``localhost``;
- at submit, a name that cannot be resolved is accepted (:attr:`CheckedTarget.resolved` is
  false); at delivery it is refused with the retryable :class:`WebhookHostUnresolved`.

The delivery connects to one of :attr:`CheckedTarget.addresses`, the very addresses checked
here, so a DNS answer that changes between the check and the connection (DNS rebinding) cannot
steer the request elsewhere.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol, TypeAlias

import httpx
from agentrun_contract import limits
from pydantic import BaseModel, Field, field_validator

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

ALLOWED_SCHEMES: Final = frozenset({"http", "https"})
DEFAULT_PORTS: Final = {"http": 80, "https": 443}

_FIX_ALLOWLIST: Final = (
    "use a publicly reachable URL, or ask the administrator to add the host to the webhook "
    "allowlist (webhookPolicy.allowlist)"
)

# Ranges refused on top of `not is_global`: Python 3.11's tables call some of these global.
_ALWAYS_REFUSED: Final[tuple[IPNetwork, ...]] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",  # "this network"; 0.0.0.0 reaches the local host on Linux
        "100.64.0.0/10",  # carrier-grade NAT (shared address space)
        "192.0.0.0/24",  # IETF protocol assignments
        "198.18.0.0/15",  # benchmarking
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and the broadcast address
        "ff00::/8",  # IPv6 multicast
        "100::/64",  # discard-only
        "2001::/23",  # IETF protocol assignments (Teredo included)
        "2001:db8::/32",  # documentation
        "fc00::/7",  # unique local
        "fe80::/10",  # link local
        "fec0::/10",  # deprecated site local
    )
)
_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")
_SIX_TO_FOUR: Final = ipaddress.IPv6Network("2002::/16")


class WebhookPolicySettings(BaseModel):
    """Which webhook URLs are allowed. Nested as ``webhook_policy`` in the API's and the
    operator's settings (``AGENTRUN_API_WEBHOOK_POLICY__ALLOW_LOOPBACK=true``,
    Helm ``webhookPolicy.allowLoopback``). Both processes must be given the same policy."""

    allow_loopback: bool = Field(
        default=False,
        description="Allow loopback addresses (127.0.0.0/8, ::1) and localhost. Only for "
        "`agentrun dev` and tests: in a cluster, loopback is the operator's own pod.",
    )
    allowlist: list[str] = Field(
        default_factory=list,
        description="Targets opened despite the other rules: host names ('hooks.internal'), "
        "domain suffixes with a leading dot ('.corp.example' or '*.corp.example': the domain "
        "and every name under it), IP addresses and CIDRs "
        "('10.20.0.0/16'). A host name entry opens every address the name resolves to.",
    )
    cluster_service_cidrs: list[str] = Field(
        default_factory=list,
        description="The cluster's Service IP ranges (e.g. ['10.96.0.0/12']); refused even "
        "when they are public addresses.",
    )
    cluster_pod_cidrs: list[str] = Field(
        default_factory=list,
        description="The cluster's pod IP ranges (e.g. ['10.244.0.0/16']); refused even when "
        "they are public addresses.",
    )
    cluster_domains: list[str] = Field(
        default_factory=lambda: [".svc", ".cluster.local"],
        description="Domain suffixes of in-cluster names; host names under them are refused.",
    )
    dns_timeout_seconds: float = Field(
        default=2.0,
        gt=0,
        description="Timeout of the DNS lookup of a webhook host name.",
    )

    @field_validator("cluster_service_cidrs", "cluster_pod_cidrs")
    @classmethod
    def _valid_cidrs(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError as exc:
                raise ValueError(f"{entry!r} is not an IP range in CIDR notation") from exc
        return value

    @field_validator("allowlist")
    @classmethod
    def _valid_allowlist(cls, value: list[str]) -> list[str]:
        for entry in value:
            if not entry.strip():
                raise ValueError("allowlist entries must not be empty")
        return value


class WebhookURLRefused(ValueError):
    """The URL is not an allowed webhook target. The message says why and what to do; the API
    shows it in its 422 and the operator records it as the delivery's ``lastError``.

    ``retryable`` is true when a later attempt might succeed (a DNS failure at delivery)."""

    retryable: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class WebhookHostUnresolved(WebhookURLRefused):
    """At delivery, the host name did not resolve (or the lookup timed out). Retryable."""

    retryable = True


class HostNotFound(Exception):
    """Raised by a :class:`Resolver` when a name has no address (or the lookup failed)."""


class Resolver(Protocol):
    """Resolves a host name to IP address strings. Replaceable, so tests can map names."""

    async def resolve(self, host: str, port: int) -> Sequence[str]:
        """Every address of ``host``; raise :class:`HostNotFound` (or OSError) when none."""
        ...


class SystemResolver:
    """The process's resolver (``getaddrinfo`` in the event loop's executor), with a timeout."""

    def __init__(self, timeout_seconds: float) -> None:
        self.timeout_seconds = timeout_seconds

    async def resolve(self, host: str, port: int) -> Sequence[str]:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout_seconds):
                infos = await loop.getaddrinfo(
                    host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
                )
        except TimeoutError as exc:
            raise HostNotFound(
                f"DNS lookup of {host} timed out after {self.timeout_seconds:g}s"
            ) from exc
        except OSError as exc:
            raise HostNotFound(f"DNS lookup of {host} failed: {exc}") from exc
        addresses: list[str] = []
        for _family, _type, _proto, _canonname, sockaddr in infos:
            address = str(sockaddr[0])
            if address not in addresses:
                addresses.append(address)
        if not addresses:
            raise HostNotFound(f"{host} has no address")
        return addresses


class StaticResolver:
    """A resolver answering from a fixed map (tests, and deployments that pin names)."""

    def __init__(self, table: Mapping[str, Sequence[str]]) -> None:
        self.table = {name.lower().rstrip("."): list(addrs) for name, addrs in table.items()}

    async def resolve(self, host: str, port: int) -> Sequence[str]:
        addresses = self.table.get(host.lower().rstrip("."))
        if not addresses:
            raise HostNotFound(f"{host} is not known")
        return addresses


@dataclass(frozen=True)
class CheckedTarget:
    """A webhook URL that passed the policy, and the addresses it may be sent to."""

    url: str
    """The URL as given."""
    scheme: str
    host: str
    """The host as it goes in the Host header and TLS SNI: lowercase, IPv6 without brackets."""
    port: int
    target: str
    """Path and query, as sent in the request line (at least ``/``)."""
    addresses: tuple[str, ...]
    """The checked addresses to connect to, in resolver order; empty when not resolved."""
    resolved: bool
    """False only at submit, for a name that could not be resolved yet."""
    host_is_ip: bool


def parse_host_as_ip(host: str) -> IPAddress | None:
    """The IP address a URL host denotes, or None for a name.

    Accepts the legacy IPv4 spellings ``inet_aton`` (and so most resolvers) accept, such as
    ``127.1``, ``0x7f.0.0.1`` and ``2130706433``, so none of them can slip past as a 'name'."""
    bare = host.strip("[]")
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        pass
    if bare and all(c in "0123456789abcdefx." for c in bare.lower()) and bare[0].isdigit():
        try:
            return ipaddress.IPv4Address(socket.inet_aton(bare))
        except OSError:
            return None
    return None


def unwrap_ipv4(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 address carries (mapped, compatible, NAT64, 6to4), else itself."""
    if isinstance(address, ipaddress.IPv4Address):
        return address
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if int(address) >> 32 == 0 and int(address) > 1:  # IPv4-compatible ::a.b.c.d
        return ipaddress.IPv4Address(int(address))
    return address


def _networks(entries: Sequence[str]) -> list[IPNetwork]:
    return [ipaddress.ip_network(e, strict=False) for e in entries]


def _in_any(address: IPAddress, networks: Sequence[IPNetwork]) -> bool:
    return any(address.version == n.version and address in n for n in networks)


def _normalise_name(name: str) -> str:
    return name.strip().lower().rstrip(".")


def _host_allowlisted(host: str, policy: WebhookPolicySettings) -> bool:
    name = _normalise_name(host)
    for entry in policy.allowlist:
        entry = _normalise_name(entry)
        if entry.startswith("*."):
            entry = entry[1:]  # "*.corp.example" means ".corp.example"
        if entry.startswith("."):
            if name.endswith(entry) or name == entry[1:]:
                return True
        elif name == entry:
            return True
    return False


def _address_allowlisted(address: IPAddress, policy: WebhookPolicySettings) -> bool:
    networks: list[IPNetwork] = []
    for entry in policy.allowlist:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            continue  # a host name entry
    return _in_any(address, networks) or _in_any(unwrap_ipv4(address), networks)


def address_refusal(address: IPAddress, policy: WebhookPolicySettings) -> str | None:
    """Why ``address`` may not be a webhook target (e.g. "127.0.0.1 is a loopback address"),
    or None when it may."""
    problem = _address_problem(address, policy)
    if problem is None:
        return None
    inner = unwrap_ipv4(address)
    shown = str(address) if inner == address else f"{address} (that is {inner})"
    return f"{shown} {problem}"


def _address_problem(address: IPAddress, policy: WebhookPolicySettings) -> str | None:
    if _address_allowlisted(address, policy):
        return None
    inner = unwrap_ipv4(address)
    if inner.is_loopback:
        return None if policy.allow_loopback else "is a loopback address"
    cluster = _networks(policy.cluster_service_cidrs) + _networks(policy.cluster_pod_cidrs)
    if _in_any(address, cluster) or _in_any(inner, cluster):
        return "is in the cluster's service or pod range"
    for candidate in {address, inner}:
        if (
            not candidate.is_global
            or candidate.is_multicast
            or candidate.is_unspecified
            or candidate.is_reserved
            or candidate.is_link_local
            or candidate.is_private
            or any(candidate in n for n in _ALWAYS_REFUSED if n.version == candidate.version)
        ):
            return "is not a publicly routable address"
    return None


def _refuse(url: str, why: str, fix: str = _FIX_ALLOWLIST) -> WebhookURLRefused:
    return WebhookURLRefused(f"webhook_url {_shorten(url)} is refused: {why}; {fix}.")


def _shorten(url: str) -> str:
    return url if len(url) <= 200 else url[:200] + "..."


async def check_webhook_url(
    url: str,
    policy: WebhookPolicySettings,
    *,
    resolver: Resolver | None = None,
    at_submit: bool,
) -> CheckedTarget:
    """Check ``url`` against ``policy``; return the target with its checked addresses.

    Raises :class:`WebhookURLRefused` (message: the reason and the fix) when the URL is not an
    allowed target, and, at delivery only, :class:`WebhookHostUnresolved` when its host name
    does not resolve. ``resolver`` defaults to :class:`SystemResolver` with the policy's DNS
    timeout."""
    if len(url) > limits.WEBHOOK_URL_MAX_CHARS:
        raise WebhookURLRefused(
            f"webhook_url is longer than {limits.WEBHOOK_URL_MAX_CHARS} characters; "
            "use a shorter URL."
        )
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        raise _refuse(url, "it contains spaces or control characters", "percent-encode them")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise _refuse(
            url, f"it is not a valid URL ({exc})", "give an absolute http(s) URL"
        ) from exc
    scheme = parsed.scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        raise _refuse(
            url,
            f"scheme {scheme or '(none)'!r} is not allowed",
            "use an http:// or https:// URL",
        )
    if parsed.userinfo:
        raise _refuse(
            url,
            "it contains a user name or password",
            "remove the credentials from the URL; deliveries are signed (webhook-signature) "
            "so the receiver can authenticate them",
        )
    host = parsed.raw_host.decode("ascii").lower().rstrip(".")
    if not host:
        raise _refuse(url, "it has no host", "give an absolute http(s) URL")
    port = parsed.port if parsed.port is not None else DEFAULT_PORTS[scheme]
    if not 1 <= port <= 65535:
        raise _refuse(url, f"it is not a valid URL (port {port})", "give a port from 1 to 65535")
    target = parsed.raw_path.decode("ascii") or "/"

    def checked(addresses: Sequence[str], *, resolved: bool, is_ip: bool) -> CheckedTarget:
        return CheckedTarget(
            url=url,
            scheme=scheme,
            host=host,
            port=port,
            target=target,
            addresses=tuple(addresses),
            resolved=resolved,
            host_is_ip=is_ip,
        )

    literal = parse_host_as_ip(host)
    if literal is not None:
        why = address_refusal(literal, policy)
        if why is not None:
            raise _refuse(url, f"host {why}")
        return checked([str(literal)], resolved=True, is_ip=True)

    name_allowlisted = _host_allowlisted(host, policy)
    if not name_allowlisted:
        for suffix in policy.cluster_domains:
            suffix = _normalise_name(suffix).lstrip(".")
            if suffix and (host == suffix or host.endswith("." + suffix)):
                raise _refuse(url, f"host {host} is an in-cluster name (under .{suffix})")
        # localhost is judged by its (loopback) addresses below.
        if "." not in host and host != "localhost":
            raise _refuse(
                url,
                f"host {host} is not a fully qualified domain name (a cluster's DNS search "
                "path would complete it to an in-cluster name)",
            )

    resolver = resolver or SystemResolver(policy.dns_timeout_seconds)
    try:
        answers = list(await resolver.resolve(host, port))
        if not answers:
            raise HostNotFound(f"{host} has no address")
    except (HostNotFound, OSError) as exc:
        if at_submit:
            return checked([], resolved=False, is_ip=False)
        raise WebhookHostUnresolved(
            f"webhook_url host {host} could not be resolved ({exc}); check the name, "
            "or that the cluster's DNS can resolve it."
        ) from exc

    addresses: list[str] = []
    for answer in answers:
        try:
            address = ipaddress.ip_address(answer.split("%", 1)[0])
        except ValueError as exc:
            raise _refuse(url, f"host {host} resolved to an invalid address {answer!r}") from exc
        if not name_allowlisted:
            problem = _address_problem(address, policy)
            if problem is not None:
                inner = unwrap_ipv4(address)
                shown = str(address) if inner == address else f"{address} ({inner})"
                raise _refuse(url, f"host {host} resolves to {shown}, which {problem}")
        if str(address) not in addresses:
            addresses.append(str(address))
    return checked(addresses, resolved=True, is_ip=False)

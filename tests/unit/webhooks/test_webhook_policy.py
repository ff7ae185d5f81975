"""SSRF policy: every refusal kind, the allowlist, loopback in dev, submit vs delivery."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from agentrun_webhooks.policy import (
    HostNotFound,
    StaticResolver,
    SystemResolver,
    WebhookHostUnresolved,
    WebhookPolicySettings,
    WebhookURLRefused,
    check_webhook_url,
    parse_host_as_ip,
    unwrap_ipv4,
)
from pydantic import ValidationError

PUBLIC = "93.184.216.34"
RESOLVER = StaticResolver(
    {
        "hooks.example.com": [PUBLIC],
        "v6.example.com": ["2606:2800:220:1:248:1893:25c8:1946"],
        "loopback.example.com": ["127.0.0.1"],
        "mapped.example.com": ["::ffff:127.0.0.1"],
        "private.example.com": ["10.1.2.3"],
        "cgnat.example.com": ["100.64.0.7"],
        "mixed.example.com": [PUBLIC, "192.168.1.1"],
        "metadata.example.com": ["169.254.169.254"],
        "internal.corp.example": ["10.20.30.40"],
        "public-svc.example.com": ["34.1.2.3"],
        "localhost": ["127.0.0.1", "::1"],
    }
)


async def check(
    url: str, policy: WebhookPolicySettings | None = None, *, at_submit: bool = False
) -> tuple[str, ...]:
    target = await check_webhook_url(
        url, policy or WebhookPolicySettings(), resolver=RESOLVER, at_submit=at_submit
    )
    return target.addresses


async def refused(url: str, policy: WebhookPolicySettings | None = None) -> str:
    with pytest.raises(WebhookURLRefused) as info:
        await check(url, policy)
    return str(info.value)


async def test_public_host_passes_with_its_checked_address() -> None:
    target = await check_webhook_url(
        "https://hooks.example.com:8443/done?x=1",
        WebhookPolicySettings(),
        resolver=RESOLVER,
        at_submit=False,
    )
    assert target.addresses == (PUBLIC,)
    assert (target.scheme, target.host, target.port, target.target) == (
        "https",
        "hooks.example.com",
        8443,
        "/done?x=1",
    )
    assert target.resolved
    assert await check("http://[2606:2800:220:1:248:1893:25c8:1946]/") == (
        "2606:2800:220:1:248:1893:25c8:1946",
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.5/hook",
        "http://192.168.1.20/",
        "http://172.16.0.1/",
        "http://169.254.169.254/latest/meta-data",  # cloud metadata
        "http://100.64.0.1/",  # CGNAT: Python 3.11's is_private misses it
        "http://0.0.0.0:8080/",
        "http://224.0.0.1/",
        "http://255.255.255.255/",
        "http://198.18.0.1/",
    ],
)
async def test_literal_non_global_ipv4_refused(url: str) -> None:
    message = await refused(url)
    assert "not a publicly routable address" in message
    assert "allowlist" in message  # names the fix


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://127.9.9.9:9000/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",  # Python 3.11's is_loopback misses it
        "http://[::ffff:7f00:1]/",
        "http://[64:ff9b::7f00:1]/",  # NAT64 of 127.0.0.1
        "http://[::127.0.0.1]/",  # IPv4-compatible
        "http://127.1/",  # legacy spellings getaddrinfo accepts
        "http://0x7f.0.0.1/",
        "http://2130706433/",
        "http://017700000001/",
    ],
)
async def test_loopback_in_every_spelling_refused(url: str) -> None:
    assert "loopback" in await refused(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://[::ffff:10.0.0.1]/",
        "http://[fd00::1]/",
        "http://[fe80::1]/",
        "http://[ff02::1]/",
        "http://[2002:a00:1::]/",  # 6to4 of 10.0.0.1
        "http://[::]/",
    ],
)
async def test_non_global_ipv6_refused(url: str) -> None:
    assert "not a publicly routable" in await refused(url)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://loopback.example.com/", "resolves to 127.0.0.1, which is a loopback address"),
        ("http://mapped.example.com/", "(127.0.0.1), which is a loopback address"),
        ("http://private.example.com/", "10.1.2.3, which is not a publicly routable"),
        ("http://cgnat.example.com/", "100.64.0.7"),
        ("http://metadata.example.com/", "169.254.169.254"),
        ("http://mixed.example.com/", "192.168.1.1"),  # one bad address refuses the name
        ("http://localhost:9000/", "loopback"),
    ],
)
async def test_hostname_resolving_to_forbidden_address_refused(url: str, why: str) -> None:
    assert why in await refused(url)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://hooks.example.com/", "scheme 'ftp' is not allowed"),
        ("file:///etc/passwd", "scheme 'file'"),
        ("gopher://hooks.example.com/", "scheme 'gopher'"),
        ("javascript:alert(1)", "scheme"),
        ("hooks.example.com/path", "scheme"),
        ("http://user:secret@hooks.example.com/", "user name or password"),
        ("http://user@hooks.example.com/", "user name or password"),
        ("http://hooks.example.com/a b", "spaces or control characters"),
        ("http://hooks.example.com/\r\nX-Injected: 1", "control characters"),
        ("http:///nohost", "no host"),
        ("http://hooks.example.com:99999/", "not a valid URL"),
        ("http://" + "a" * 3000 + ".com/", "longer than 2048"),
    ],
)
async def test_malformed_or_disallowed_urls_refused(url: str, why: str) -> None:
    assert why in await refused(url)


async def test_credentials_message_says_what_to_do() -> None:
    message = await refused("https://user:pw@hooks.example.com/")
    assert "remove the credentials" in message
    assert "pw" in message or "user" in message  # the URL is shown so the person finds it


@pytest.mark.parametrize(
    "url",
    [
        "http://api.default.svc/",
        "http://api.default.svc.cluster.local/",
        "http://API.Default.SVC.Cluster.Local./x",
        "http://kubernetes.default.svc:443/",
    ],
)
async def test_cluster_domains_refused(url: str) -> None:
    assert "in-cluster name" in await refused(url)


async def test_single_label_names_refused() -> None:
    assert "fully qualified" in await refused("http://agentrun-api:8005/")


async def test_cluster_cidrs_refused_even_when_public() -> None:
    policy = WebhookPolicySettings(
        cluster_service_cidrs=["34.0.0.0/8"], cluster_pod_cidrs=["2600:1f00::/24"]
    )
    assert "service or pod range" in await refused("http://public-svc.example.com/", policy)
    assert "service or pod range" in await refused("http://34.9.9.9/", policy)
    assert "service or pod range" in await refused("http://[2600:1f00::5]/", policy)
    assert await check("http://hooks.example.com/", policy) == (PUBLIC,)


async def test_custom_cluster_domain() -> None:
    policy = WebhookPolicySettings(cluster_domains=[".internal.example"])
    assert "in-cluster" in await refused("http://x.internal.example/", policy)


async def test_allowlist_opens_host_suffix_and_cidr() -> None:
    by_host = WebhookPolicySettings(allowlist=["internal.corp.example"])
    assert await check("http://internal.corp.example/", by_host) == ("10.20.30.40",)
    by_suffix = WebhookPolicySettings(allowlist=[".corp.example"])
    assert await check("http://internal.corp.example/", by_suffix) == ("10.20.30.40",)
    by_wildcard = WebhookPolicySettings(allowlist=["*.corp.example"])
    assert await check("http://internal.corp.example/", by_wildcard) == ("10.20.30.40",)
    by_cidr = WebhookPolicySettings(allowlist=["10.20.0.0/16"])
    assert await check("http://internal.corp.example/", by_cidr) == ("10.20.30.40",)
    assert await check("http://10.20.1.1/", by_cidr) == ("10.20.1.1",)
    # the allowlist opens only what it names
    assert "10.1.2.3" in await refused("http://private.example.com/", by_cidr)
    by_ip = WebhookPolicySettings(allowlist=["127.0.0.1"])
    assert await check("http://127.0.0.1:8080/", by_ip) == ("127.0.0.1",)
    assert "loopback" in await refused("http://127.0.0.2:8080/", by_ip)
    # a name in a cluster domain can be allowlisted explicitly
    svc = WebhookPolicySettings(allowlist=["receiver.hooks.svc.cluster.local"])
    resolver = StaticResolver({"receiver.hooks.svc.cluster.local": ["10.96.4.4"]})
    target = await check_webhook_url(
        "http://receiver.hooks.svc.cluster.local/", svc, resolver=resolver, at_submit=False
    )
    assert target.addresses == ("10.96.4.4",)


async def test_allow_loopback_opens_loopback_only() -> None:
    dev = WebhookPolicySettings(allow_loopback=True)
    assert await check("http://127.0.0.1:9000/", dev) == ("127.0.0.1",)
    assert await check("http://[::1]:9000/", dev) == ("::1",)
    assert await check("http://localhost:9000/", dev) == ("127.0.0.1", "::1")
    assert await check("http://loopback.example.com/", dev) == ("127.0.0.1",)
    assert "not a publicly routable" in await refused("http://10.0.0.1/", dev)
    assert "not a publicly routable" in await refused("http://0.0.0.0/", dev)


async def test_unresolvable_name_accepted_at_submit_refused_at_delivery() -> None:
    policy = WebhookPolicySettings()
    target = await check_webhook_url(
        "https://not-yet.example.net/h", policy, resolver=RESOLVER, at_submit=True
    )
    assert not target.resolved
    assert target.addresses == ()
    with pytest.raises(WebhookHostUnresolved) as info:
        await check_webhook_url(
            "https://not-yet.example.net/h", policy, resolver=RESOLVER, at_submit=False
        )
    assert info.value.retryable
    assert "could not be resolved" in str(info.value)
    # literal addresses and cluster names are judged at submit too
    with pytest.raises(WebhookURLRefused):
        await check_webhook_url("http://10.0.0.1/", policy, resolver=RESOLVER, at_submit=True)
    with pytest.raises(WebhookURLRefused):
        await check_webhook_url("http://a.b.svc/", policy, resolver=RESOLVER, at_submit=True)


class SlowResolver:
    async def resolve(self, host: str, port: int) -> Sequence[str]:
        await asyncio.sleep(30)
        return [PUBLIC]


async def test_system_resolver_times_out_and_reports_not_found() -> None:
    resolver = SystemResolver(timeout_seconds=0.05)
    with pytest.raises(HostNotFound):
        await resolver.resolve("name.invalid", 80)  # RFC 6761: never resolves
    loop = asyncio.get_running_loop()
    started = loop.time()
    policy = WebhookPolicySettings(dns_timeout_seconds=0.05)
    target = await check_webhook_url(
        "http://slow.example.com/", policy, resolver=_Timeout(SlowResolver(), 0.05), at_submit=True
    )
    assert not target.resolved
    assert loop.time() - started < 10


class _Timeout:
    """Wraps a resolver with a timeout the way SystemResolver does."""

    def __init__(self, inner: SlowResolver, seconds: float) -> None:
        self.inner, self.seconds = inner, seconds

    async def resolve(self, host: str, port: int) -> Sequence[str]:
        try:
            async with asyncio.timeout(self.seconds):
                return await self.inner.resolve(host, port)
        except TimeoutError as exc:
            raise HostNotFound("timed out") from exc


async def test_system_resolver_resolves_localhost() -> None:
    addresses = await SystemResolver(timeout_seconds=2).resolve("localhost", 80)
    assert any(a in ("127.0.0.1", "::1") for a in addresses)
    # the default resolver (the system's, /etc/hosts included) feeds the same checks
    with pytest.raises(WebhookURLRefused, match="loopback"):
        await check_webhook_url("http://localhost:9/", WebhookPolicySettings(), at_submit=True)


def test_ip_parsing_helpers() -> None:
    assert str(parse_host_as_ip("127.1")) == "127.0.0.1"
    assert str(parse_host_as_ip("[::1]")) == "::1"
    assert parse_host_as_ip("hooks.example.com") is None
    assert parse_host_as_ip("1.example.com") is None
    mapped = parse_host_as_ip("::ffff:10.0.0.1")
    assert mapped is not None
    assert str(unwrap_ipv4(mapped)) == "10.0.0.1"


def test_policy_settings_validate_cidrs() -> None:
    with pytest.raises(ValidationError):
        WebhookPolicySettings(cluster_pod_cidrs=["not-a-cidr"])
    assert WebhookPolicySettings().cluster_domains == [".svc", ".cluster.local"]
    assert WebhookPolicySettings().allow_loopback is False

"""Proxy headers: believed only from trusted CIDRs; the links then use the external URL."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest
from agentrun_api.proxy_headers import (
    BadForwardedHeader,
    ProxyTrust,
    proxy_headers_middleware_factory,
)
from agentrun_api.status_view import run_links
from litestar.datastructures import URL

INGRESS = ProxyTrust([ipaddress.ip_network("10.244.0.0/16"), ipaddress.ip_network("fd00::/8")])


def scope(peer: str, headers: dict[str, str] | list[tuple[str, str]]) -> dict[str, Any]:
    pairs = headers.items() if isinstance(headers, dict) else headers
    return {
        "type": "http",
        "scheme": "http",
        "server": ("10.0.0.5", 8005),
        "client": (peer, 40000),
        "path": "/api/v1/runs",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"10.0.0.5:8005")]
        + [(k.lower().encode(), v.encode()) for k, v in pairs],
    }


async def through(trust: ProxyTrust, s: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    """Run the middleware; returns the scope the app saw (or {}) and what was sent."""
    seen: dict[str, Any] = {}
    sent: list[Any] = []

    async def app(inner: Any, receive: Any, send: Any) -> None:
        seen.update(inner)

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        return {"type": "http.request"}

    await proxy_headers_middleware_factory(trust)(app)(s, receive, send)
    return seen, sent


def base_url(s: dict[str, Any]) -> str:
    return str(URL.from_scope({**s, "path": "/", "query_string": b""})).rstrip("/")


async def test_a_trusted_ingress_gives_https_and_the_external_host() -> None:
    seen, _ = await through(
        INGRESS,
        scope(
            "10.244.3.7",
            {
                "X-Forwarded-Proto": "https",
                "X-Forwarded-Host": "agents.example.com",
                "X-Forwarded-For": "203.0.113.9",
            },
        ),
    )
    assert base_url(seen) == "https://agents.example.com"
    assert seen["client"] == ("203.0.113.9", 40000)
    links = run_links(base_url(seen), "run_abc", "tok")
    assert links.poll_url == "https://agents.example.com/api/v1/runs/run_abc?token=tok"
    assert links.stream_url == "https://agents.example.com/api/v1/runs/run_abc/stream?token=tok"


async def test_rfc7239_forwarded_wins_and_the_nearest_proxy_counts() -> None:
    seen, _ = await through(
        INGRESS,
        scope(
            "fd00::12",
            {
                "Forwarded": "for=198.51.100.1;proto=http;host=evil.example, "
                'for="[2001:db8::1]:4711";proto=https;host="agents.example.com:443"',
                "X-Forwarded-Proto": "http",
                "X-Forwarded-Host": "ignored.example",
            },
        ),
    )
    assert base_url(seen) == "https://agents.example.com"
    assert seen["client"][0] == "2001:db8::1"


async def test_x_forwarded_port_is_kept_unless_it_is_the_default() -> None:
    seen, _ = await through(
        INGRESS,
        scope(
            "10.244.0.1",
            {
                "X-Forwarded-Proto": "https",
                "X-Forwarded-Host": "a.example",
                "X-Forwarded-Port": "8443",
            },
        ),
    )
    assert base_url(seen) == "https://a.example:8443"
    seen, _ = await through(
        INGRESS,
        scope("10.244.0.1", {"X-Forwarded-Proto": "https", "X-Forwarded-Port": "443"}),
    )
    assert base_url(seen) == "https://10.0.0.5:8005"  # no forwarded host: the Host header stays


@pytest.mark.parametrize(
    "trust",
    [ProxyTrust([]), INGRESS],
    ids=["default-trusts-nobody", "peer-outside-the-cidrs"],
)
async def test_untrusted_peers_cannot_choose_the_links(trust: ProxyTrust) -> None:
    s = scope(
        "192.0.2.50",
        {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "phish.example", "Forwarded": "host=x"},
    )
    seen, _ = await through(trust, s)
    assert base_url(seen) == "http://10.0.0.5:8005"
    assert seen["client"] == ("192.0.2.50", 40000)


async def test_the_client_is_the_rightmost_untrusted_address() -> None:
    seen, _ = await through(
        INGRESS,
        scope("10.244.0.1", {"X-Forwarded-For": "1.1.1.1, 203.0.113.4, 10.244.9.9"}),
    )
    assert seen["client"][0] == "203.0.113.4"


@pytest.mark.parametrize(
    ("headers", "named"),
    [
        ({"X-Forwarded-Proto": "gopher"}, "X-Forwarded-Proto"),
        ({"X-Forwarded-Host": "a.example/evil"}, "X-Forwarded-Host"),
        ({"X-Forwarded-Host": "user@a.example"}, "X-Forwarded-Host"),
        ({"X-Forwarded-Port": "http"}, "X-Forwarded-Port"),
        ({"Forwarded": "proto"}, "Forwarded"),
        ({"Forwarded": "host=a b"}, "Forwarded"),
    ],
)
async def test_a_malformed_header_from_a_trusted_proxy_is_a_clear_400(
    headers: dict[str, str], named: str
) -> None:
    seen, sent = await through(INGRESS, scope("10.244.0.1", headers))
    assert seen == {}
    assert sent[0]["status"] == 400
    detail = json.loads(sent[1]["body"])["detail"]
    assert named in detail
    assert "proxy" in detail


def test_ipv4_mapped_peers_match_ipv4_cidrs() -> None:
    assert INGRESS.trusts("::ffff:10.244.1.1")
    assert not INGRESS.trusts("::ffff:10.245.1.1")
    assert not INGRESS.trusts("testclient")
    assert not INGRESS.trusts(None)


def test_read_raises_typed_errors() -> None:
    with pytest.raises(BadForwardedHeader) as caught:
        INGRESS.read({"x-forwarded-proto": ["ftp"]})
    assert caught.value.header == "X-Forwarded-Proto"

"""Fuzzing with schemathesis against the app's own OpenAPI document, over real HTTP.

Fixed seed (derandomize) and a bounded number of examples per operation, so CI is repeatable.
It checks: no 5xx, every status code documented, content types and bodies as documented.
Hand-made cases follow: oversize prompts and keys, unicode, NUL bytes and deep JSON.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from agentrun_api.settings import APISettings
from agentrun_devcluster.testing import ClusterThread
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from .conftest import APIThread

MAX_EXAMPLES = 25


@pytest.fixture(scope="module")
def fuzz_api(cluster: ClusterThread) -> Iterator[APIThread]:
    namespace = "api-fuzz"
    created = httpx.post(
        f"{cluster.base_url}/api/v1/namespaces",
        json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        timeout=10,
    )
    assert created.status_code in (201, 409), created.text
    api = APIThread(
        APISettings(
            namespace=namespace,
            kubeconfig=str(cluster.kubeconfig),
            auth_enabled=False,
            metrics_port=0,
        )
    ).start()
    yield api
    api.stop()


@pytest.fixture(scope="module")
def api_schema(fuzz_api: APIThread) -> Any:
    return schemathesis.openapi.from_url(fuzz_api.base_url + "/schema/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_5xx_and_responses_match_the_schema(case: Any) -> None:
    case.call_and_validate(
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
        timeout=30,
    )


# ---------------------------------------------------------------------------------------------
# Hand-made cases


@pytest.fixture
def client(fuzz_api: APIThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fuzz_api.base_url, timeout=30) as http:
        yield http


def _post(client: httpx.Client, raw: bytes, **headers: str) -> httpx.Response:
    return client.post(
        "/api/v1/runs", content=raw, headers={"Content-Type": "application/json", **headers}
    )


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b'{"prompt": "' + b"x" * 65536 + b'"}', 202),
        (b'{"prompt": "' + b"x" * 65537 + b'"}', 422),
        (b'{"prompt": "' + b"x" * 300_000 + b'"}', 413),
        ('{"prompt": "日本語のプロンプト 🚀"}'.encode(), 202),
        (b'{"prompt": "nul \\u0000 inside"}', 202),
        (b'{"prompt": "raw nul \x00 inside"}', 400),
        (b'{"prompt": "x", "session_id": "\\u0000"}', 202),
        (b'{"prompt": "x", "agent_file": "a\\u0000b"}', 422),
        (b'{"prompt": "x", "nested": ' + b"[" * 20_000 + b"]" * 20_000 + b"}", 400),
        (b'{"prompt": "\\ud83d"}', 400),
        (b'{"prompt": "x"}' + b" " * 10 + b"garbage", 400),
    ],
    ids=[
        "prompt-64KiB",
        "prompt-over-64KiB",
        "body-over-limit",
        "unicode",
        "escaped-nul",
        "raw-nul",
        "nul-session",
        "nul-agent-file",
        "deep-json",
        "lone-surrogate",
        "trailing-garbage",
    ],
)
def test_hand_made_bodies(client: httpx.Client, raw: bytes, status: int) -> None:
    response = _post(client, raw)
    assert response.status_code == status, response.text
    if status >= 400:
        assert isinstance(response.json()["detail"], str)


@pytest.mark.parametrize(
    ("key", "status"),
    [("k" * 255, 202), ("k" * 256, 400), ("k" * 10_000, 400), ("ü", 400), ("a b", 202)],
    ids=["key-255", "key-256", "key-10k", "key-non-ascii", "key-space"],
)
def test_hand_made_keys(client: httpx.Client, key: str, status: int) -> None:
    response = client.post(
        "/api/v1/runs",
        json={"prompt": f"key case {len(key)} {key[:1]!r}"},
        headers={"Idempotency-Key": key.encode("utf-8")},  # type: ignore[dict-item]
    )
    assert response.status_code == status, response.text


@pytest.mark.parametrize(
    "path",
    ["/api/v1/runs/%00", "/api/v1/runs/run_%F0%9F%9A%80", "/api/v1/runs/" + "a" * 5000],
    ids=["nul-id", "emoji-id", "long-id"],
)
def test_odd_job_ids_are_404(client: httpx.Client, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404, response.text
    assert isinstance(response.json()["detail"], str)

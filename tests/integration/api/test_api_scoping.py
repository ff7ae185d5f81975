"""Per-token run scoping, uid-bound read tokens, links behind a proxy, backpressure by default and
the run cache's staleness, over real HTTP against the emulated cluster."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from agentrun_devcluster.testing import ClusterThread

from .conftest import APIProcess
from .test_api_contract import (
    RUNS,
    agentrun_url,
    assert_error,
    finish,
    get_agentrun,
    submit,
)

TOKENS = {"ci": "token-of-ci", "laptop": "token-of-laptop", "ops": "token-of-ops"}
SIGNING_KEY = "a-read-token-signing-key-of-32-chars-or-more"


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name]}"}


@pytest.fixture
def scoped(make_api: Any) -> Iterator[httpx.Client]:
    api = make_api(
        auth_enabled=True, tokens=TOKENS, admin_tokens=["ops"], read_token_key=SIGNING_KEY
    )
    with httpx.Client(base_url=api.base_url, timeout=10) as http:
        yield http


def eventually(check: Callable[[], Any], timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def listed_ids(http: httpx.Client, who: str) -> set[str]:
    body = http.get(RUNS, headers=bearer(who), params={"page_size": 100}).json()
    ids = {job["job_id"] for job in body["jobs"]}
    assert body["total"] == len(ids)
    return ids


def test_a_token_sees_only_its_runs_and_everything_else_is_404(
    scoped: httpx.Client, cluster: ClusterThread, namespace: str
) -> None:
    http = scoped
    mine = submit(http, {"prompt": "ci's run"}, **bearer("ci"))
    assert mine.status_code == 202, mine.text
    job_id = mine.json()["job_id"]
    theirs = submit(http, {"prompt": "laptop's run"}, **bearer("laptop")).json()["job_id"]
    missing = http.get(f"{RUNS}/run_doesnotexist", headers=bearer("laptop"))
    assert_error(missing, 404)

    # another token: every route answers exactly as for a missing run (no 403, no probing)
    for call in (
        lambda: http.get(f"{RUNS}/{job_id}", headers=bearer("laptop")),
        lambda: http.get(f"{RUNS}/{job_id}/result", headers=bearer("laptop")),
        lambda: http.post(f"{RUNS}/{job_id}/cancel", headers=bearer("laptop")),
        lambda: http.delete(f"{RUNS}/{job_id}", headers=bearer("laptop")),
        lambda: http.get(f"{RUNS}/{job_id}/stream", headers=bearer("laptop")),
    ):
        refused = call()
        assert_error(refused, 404)
        assert refused.json()["detail"].replace(job_id, "X") == missing.json()["detail"].replace(
            "run_doesnotexist", "X"
        )
    assert get_agentrun(cluster, namespace, job_id)["spec"].get("cancelRequested") is not True

    # the owner and the admin see it; lists are filtered (total too)
    assert http.get(f"{RUNS}/{job_id}", headers=bearer("ci")).status_code == 200
    assert http.get(f"{RUNS}/{job_id}", headers=bearer("ops")).status_code == 200
    with http.stream("GET", f"{RUNS}/{job_id}/stream", headers=bearer("ci")) as stream:
        assert stream.status_code == 200
    assert eventually(lambda: listed_ids(http, "ci") == {job_id})
    assert listed_ids(http, "laptop") == {theirs}
    assert listed_ids(http, "ops") == {job_id, theirs}
    # the admin may cancel and delete any run
    assert http.post(f"{RUNS}/{theirs}/cancel", headers=bearer("ops")).status_code == 200
    assert http.delete(f"{RUNS}/{theirs}", headers=bearer("ops")).status_code == 204


def test_each_token_has_its_own_idempotency_keys(scoped: httpx.Client) -> None:
    key = {"Idempotency-Key": "order-42"}
    ci = submit(scoped, {"prompt": "same"}, **bearer("ci"), **key)
    laptop = submit(scoped, {"prompt": "other body"}, **bearer("laptop"), **key)
    assert ci.status_code == laptop.status_code == 202
    assert ci.json()["job_id"] != laptop.json()["job_id"]
    replay = submit(scoped, {"prompt": "same"}, **bearer("ci"), **key)
    assert replay.status_code == 200
    assert replay.json()["job_id"] == ci.json()["job_id"]


def test_kubectl_made_runs_are_visible_to_admins_only(
    scoped: httpx.Client, cluster: ClusterThread, namespace: str
) -> None:
    created = httpx.post(
        agentrun_url(cluster, namespace),
        json={
            "apiVersion": "agentrun.dev/v1alpha1",
            "kind": "AgentRun",
            "metadata": {"name": "nightly-report"},
            "spec": {"prompt": "made with kubectl"},
        },
        timeout=10,
    )
    assert created.status_code == 201, created.text
    assert_error(scoped.get(f"{RUNS}/nightly-report", headers=bearer("ci")), 404)
    assert scoped.get(f"{RUNS}/nightly-report", headers=bearer("ops")).status_code == 200
    assert eventually(lambda: "nightly-report" in listed_ids(scoped, "ops"))
    assert "nightly-report" not in listed_ids(scoped, "ci")


def test_a_read_token_dies_with_its_run_even_when_the_key_makes_a_new_one(
    scoped: httpx.Client, cluster: ClusterThread, namespace: str
) -> None:
    key = {"Idempotency-Key": "reused-after-delete"}
    first = submit(scoped, {"prompt": "x"}, **bearer("ci"), **key).json()
    old_poll, old_stream = first["poll_url"], first["stream_url"]
    assert httpx.get(old_poll, timeout=10).status_code == 200
    finish(cluster, namespace, first["job_id"])
    assert scoped.delete(f"{RUNS}/{first['job_id']}", headers=bearer("ci")).status_code == 204
    second = submit(scoped, {"prompt": "x"}, **bearer("ci"), **key)
    assert second.status_code == 202, second.text
    assert second.json()["job_id"] == first["job_id"]  # same key, same name, new uid
    assert_error(httpx.get(old_poll, timeout=10), 401)
    assert_error(httpx.get(old_stream, timeout=10), 401)
    assert httpx.get(second.json()["poll_url"], timeout=10).status_code == 200


def test_backpressure_is_on_by_default(make_api: Any) -> None:
    """Default settings refuse a new run once 10,000 are queued (the cache is filled directly:
    10,000 AgentRuns in the emulator would only slow the test down)."""
    api = make_api()
    cache = api.app.state.run_cache

    async def fill() -> int:
        for i in range(10_000):
            cache.upsert(
                {
                    "metadata": {
                        "name": f"run-fill{i:05d}",
                        "uid": f"fill-{i}",
                        "resourceVersion": "1",
                        "creationTimestamp": "2026-01-01T00:00:00Z",
                    },
                    "spec": {"prompt": "p"},
                }
            )
        return int(cache.queued_count())

    assert api.call(fill()) >= 10_000
    with httpx.Client(base_url=api.base_url, timeout=10) as http:
        refused = submit(http, {"prompt": "one too many"})
        assert_error(refused, 503, "queued runs")
        assert refused.headers["retry-after"] == "10"


def test_health_is_503_while_the_run_cache_is_stale_then_recovers(
    make_api: Any, cluster: ClusterThread, namespace: str
) -> None:
    api = make_api(cache_watch_timeout_seconds=1, cache_stale_seconds=1.5, health_cache_seconds=0)
    health = api.base_url + "/health"
    assert httpx.get(health, timeout=10).status_code == 200
    # every list and watch of this namespace's AgentRuns now hangs: a half-open apiserver
    cluster.server.faults.add(
        "hang", path=f"/namespaces/{namespace}/agentruns$", methods=frozenset({"GET"}), seconds=30
    )
    try:
        stale = eventually(
            lambda: (r := httpx.get(health, timeout=10)).status_code == 503 and r, timeout=15
        )
        body = stale.json()
        assert body["cache_stale"] is True
        assert body["kubernetes"] == "reachable"
        assert "stale" in body["detail"]
    finally:
        cluster.server.faults.clear()
    eventually(lambda: httpx.get(health, timeout=10).status_code == 200, timeout=15)
    assert api.app.state.run_cache.stalls >= 1


def test_links_follow_a_trusted_proxy_only(cluster: ClusterThread, namespace: str) -> None:
    """Real ``agentrun api`` processes (uvicorn as in production): with the proxy's CIDR
    trusted, Location, poll_url and stream_url carry the external https host; by default the
    same headers change nothing."""
    base_env = {
        "AGENTRUN_API_KUBECONFIG": str(cluster.kubeconfig),
        "AGENTRUN_API_NAMESPACE": namespace,
        "AGENTRUN_API_AUTH_ENABLED": "false",
    }
    forwarded = {
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "agents.example.com",
        "X-Forwarded-For": "203.0.113.7",
    }
    trusted = APIProcess({**base_env, "AGENTRUN_API_TRUSTED_PROXY_CIDRS": '["127.0.0.0/8"]'})
    default = APIProcess(base_env)
    try:
        trusted.wait_ready()
        default.wait_ready()
        created = httpx.post(
            trusted.base_url + RUNS, json={"prompt": "x"}, headers=forwarded, timeout=10
        )
        assert created.status_code == 202, created.text
        job_id = created.json()["job_id"]
        poll = f"https://agents.example.com/api/v1/runs/{job_id}"
        assert created.headers["location"] == poll
        assert created.json()["poll_url"] == poll
        assert created.json()["stream_url"] == poll + "/stream"
        status = httpx.get(f"{trusted.base_url}{RUNS}/{job_id}", headers=forwarded, timeout=10)
        assert status.json()["stream_url"] == poll + "/stream"
        bad = httpx.get(
            f"{trusted.base_url}{RUNS}/{job_id}",
            headers={"X-Forwarded-Host": "a b"},
            timeout=10,
        )
        assert_error(bad, 400, "X-Forwarded-Host")

        plain = httpx.post(
            default.base_url + RUNS, json={"prompt": "x"}, headers=forwarded, timeout=10
        )
        assert plain.status_code == 202, plain.text
        assert plain.headers["location"].startswith(default.base_url + RUNS + "/")
        assert plain.json()["stream_url"].startswith("http://127.0.0.1:")
    finally:
        trusted.stop()
        default.stop()


def test_delete_is_foreground_so_a_reused_key_never_meets_the_old_runs_objects(
    http: httpx.Client, cluster: ClusterThread, namespace: str
) -> None:
    key = {"Idempotency-Key": "foreground"}
    job_id = submit(http, {"prompt": "x"}, **key).json()["job_id"]
    run = get_agentrun(cluster, namespace, job_id)
    secret_url = f"{cluster.base_url}/api/v1/namespaces/{namespace}/secrets"
    owned = httpx.post(
        secret_url,
        json={
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": f"{run['metadata']['name']}-input",
                "finalizers": ["agentrun.test/hold"],  # a dependent slow to go, as a Job's pod
                "ownerReferences": [
                    {
                        "apiVersion": "agentrun.dev/v1alpha1",
                        "kind": "AgentRun",
                        "name": run["metadata"]["name"],
                        "uid": run["metadata"]["uid"],
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "stringData": {"prompt": "x"},
        },
        timeout=10,
    )
    assert owned.status_code == 201, owned.text
    finish(cluster, namespace, job_id)
    assert http.delete(f"{RUNS}/{job_id}").status_code == 204
    held = get_agentrun(cluster, namespace, job_id)["metadata"]
    assert held.get("deletionTimestamp")
    assert "foregroundDeletion" in held.get("finalizers", [])
    assert_error(http.get(f"{RUNS}/{job_id}"), 404)
    refused = submit(http, {"prompt": "x"}, **key)
    assert_error(refused, 409, "being deleted")
    released = httpx.patch(
        f"{secret_url}/{run['metadata']['name']}-input",
        json={"metadata": {"finalizers": None}},
        headers={"Content-Type": "application/merge-patch+json"},
        timeout=10,
    )
    assert released.status_code == 200, released.text
    again = eventually(lambda: (r := submit(http, {"prompt": "x"}, **key)).status_code == 202 and r)
    assert again.json()["job_id"] == job_id
    assert get_agentrun(cluster, namespace, job_id)["metadata"]["uid"] != run["metadata"]["uid"]

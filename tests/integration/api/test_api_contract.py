"""Every row of the contract's HTTP API table, over real HTTP against the emulated cluster.

No operator runs here: runs stay queued unless a test writes their status into the emulator the
way the operator would (``set_status``).
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from agentrun_contract import names
from agentrun_devcluster.testing import ClusterThread

RUNS = "/api/v1/runs"
STATUS_KEYS = {
    "job_id",
    "status",
    "progress",
    "created_at",
    "started_at",
    "completed_at",
    "duration_seconds",
    "session_id",
    "error",
    "reason",
    "queue_position",
    "retry_after",
    "poll_url",
    "stream_url",
}
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def agentrun_url(cluster: ClusterThread, namespace: str, name: str = "") -> str:
    base = f"{cluster.base_url}/apis/agentrun.dev/v1alpha1/namespaces/{namespace}/agentruns"
    return f"{base}/{name}" if name else base


def get_agentrun(cluster: ClusterThread, namespace: str, job_id: str) -> dict[str, Any]:
    name = names.run_name_for_job_id(job_id)
    response = httpx.get(agentrun_url(cluster, namespace, name), timeout=10)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def list_agentruns(cluster: ClusterThread, namespace: str) -> list[dict[str, Any]]:
    response = httpx.get(agentrun_url(cluster, namespace), timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["items"]  # type: ignore[no-any-return]


def set_status(cluster: ClusterThread, namespace: str, job_id: str, status: dict[str, Any]) -> None:
    """Write status as the operator would (the status subresource, merge patch)."""
    name = names.run_name_for_job_id(job_id)
    response = httpx.patch(
        agentrun_url(cluster, namespace, name) + "/status",
        json={"status": status},
        headers={"Content-Type": "application/merge-patch+json"},
        timeout=10,
    )
    assert response.status_code == 200, response.text


def store_result(cluster: ClusterThread, namespace: str, job_id: str, result: str) -> None:
    import hashlib

    run = names.run_name_for_job_id(job_id)
    response = httpx.post(
        f"{cluster.base_url}/apis/agentrun.dev/v1alpha1/namespaces/{namespace}/agentrunresults",
        json={
            "apiVersion": "agentrun.dev/v1alpha1",
            "kind": "AgentRunResult",
            "metadata": {"name": names.result_name(run), "labels": {names.LABEL_RUN: run}},
            "spec": {
                "runName": run,
                "result": result,
                "bytes": len(result.encode()),
                "sha256": hashlib.sha256(result.encode()).hexdigest(),
            },
        },
        timeout=10,
    )
    assert response.status_code == 201, response.text


def finish(
    cluster: ClusterThread, namespace: str, job_id: str, phase: str = "Succeeded", **extra: Any
) -> None:
    status = {
        "phase": phase,
        "startedAt": "2026-01-01T00:00:00Z",
        "completedAt": "2026-01-01T00:00:45Z",
        "durationSeconds": 45.0,
        "progress": {"percentage": 100, "currentStep": "done"},
        **extra,
    }
    set_status(cluster, namespace, job_id, status)


def submit(
    http: httpx.Client, body: dict[str, Any] | None = None, **headers: str
) -> httpx.Response:
    return http.post(RUNS, json=body if body is not None else {"prompt": "hello"}, headers=headers)


def assert_error(response: httpx.Response, status: int, fragment: str = "") -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    detail = response.json()["detail"]
    assert isinstance(detail, str)
    assert len(detail) > 10
    assert fragment.lower() in detail.lower(), detail


# ---------------------------------------------------------------------------------------------
# POST /runs: success


def test_submit_answers_202_with_the_seed_body_and_creates_one_agentrun(
    http: httpx.Client, api: Any, cluster: ClusterThread, namespace: str
) -> None:
    response = submit(
        http,
        {
            "prompt": "Analyze the quarterly sales data",
            "timeout": 3600,
            "webhook_url": "https://example.com/callback",
            "session_id": "project-alpha",
        },
        **{"Idempotency-Key": "unique-key-123"},
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert set(body) == {"job_id", "status", "created_at", "poll_url", "stream_url"}
    assert body["status"] == "queued"
    assert re.fullmatch(r"run_[a-z2-7]{24}", body["job_id"])
    assert ISO_Z.match(body["created_at"])
    assert body["poll_url"] == f"{api.base_url}/api/v1/runs/{body['job_id']}"
    assert body["stream_url"] == body["poll_url"] + "/stream"
    assert response.headers["location"] == body["poll_url"]
    assert response.headers["retry-after"] == "2"

    run = get_agentrun(cluster, namespace, body["job_id"])
    assert run["metadata"]["name"] == names.run_name_for_key(namespace, "unique-key-123")
    assert run["spec"] == {
        "prompt": "Analyze the quarterly sales data",
        "agentFile": "agents.yaml",
        "framework": "praisonai",
        "timeoutSeconds": 3600,
        "webhookUrl": "https://example.com/callback",
        "sessionId": "project-alpha",
    }
    annotations = run["metadata"]["annotations"]
    assert annotations[names.ANNOTATION_IDEMPOTENCY_KEY] == "unique-key-123"
    assert annotations[names.ANNOTATION_SUBMITTED_BY] == "anonymous"
    assert annotations[names.ANNOTATION_FINGERPRINT].startswith("v1:")
    assert run["metadata"]["labels"][names.LABEL_SESSION] == names.session_label_value(
        "project-alpha"
    )
    assert len(list_agentruns(cluster, namespace)) == 1


def test_submit_without_key_makes_a_fresh_run_each_time(
    http: httpx.Client, cluster: ClusterThread, namespace: str
) -> None:
    ids = {submit(http).json()["job_id"] for _ in range(3)}
    assert len(ids) == 3
    assert len(list_agentruns(cluster, namespace)) == 3


def test_agent_yaml_replaces_the_default_agent_file(
    http: httpx.Client, cluster: ClusterThread, namespace: str
) -> None:
    yaml_text = "framework: praisonai\nroles: {}\n"
    response = submit(http, {"prompt": "x", "agent_yaml": yaml_text})
    assert response.status_code == 202, response.text
    spec = get_agentrun(cluster, namespace, response.json()["job_id"])["spec"]
    assert spec["agentYaml"] == yaml_text
    assert "agentFile" not in spec


def test_unknown_fields_are_ignored_and_empty_config_is_accepted(http: httpx.Client) -> None:
    response = submit(http, {"prompt": "x", "idempotency_scope": "global", "config": {}})
    assert response.status_code == 202, response.text


def test_public_base_url_is_used_for_links(make_api: Any) -> None:
    api = make_api(public_base_url="https://agents.example.com/")
    response = httpx.post(api.base_url + RUNS, json={"prompt": "x"}, timeout=10)
    assert response.status_code == 202
    job_id = response.json()["job_id"]
    assert response.json()["poll_url"] == f"https://agents.example.com/api/v1/runs/{job_id}"


# ---------------------------------------------------------------------------------------------
# POST /runs: refusals


def test_415_for_a_body_that_is_not_json(http: httpx.Client) -> None:
    response = http.post(RUNS, content=b"prompt=hello", headers={"Content-Type": "text/plain"})
    assert_error(response, 415, "application/json")
    response = http.post(RUNS, content=b'{"prompt": "x"}')
    assert_error(response, 415, "application/json")


def test_413_for_an_oversized_body_declared_or_chunked(
    make_api: Any, cluster: ClusterThread, namespace: str
) -> None:
    api = make_api(max_body_bytes=4096)
    big = b'{"prompt": "' + b"x" * 5000 + b'"}'
    with httpx.Client(base_url=api.base_url, timeout=10) as http:
        response = http.post(RUNS, content=big, headers={"Content-Type": "application/json"})
        assert_error(response, 413, "larger than 4096 bytes")

        def chunks() -> Any:
            for i in range(0, len(big), 1000):
                yield big[i : i + 1000]

        response = http.post(RUNS, content=chunks(), headers={"Content-Type": "application/json"})
        assert "content-length" not in response.request.headers
        assert_error(response, 413, "larger than")
    assert list_agentruns(cluster, namespace) == []


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b'{"prompt": "x"', "not valid json"),
        (b"[1, 2]", "json object"),
        (b'"just a string"', "json object"),
        (b"", "empty"),
        (b'{"prompt": NaN}', "not valid json"),
        (b"\xff\xfe", "utf-8"),
        (b"[" * 90_000 + b"]" * 90_000, "nested too deeply"),
        (b'{"a":' * 30_000 + b"1" + b"}" * 30_000, "nested too deeply"),
    ],
    ids=["truncated", "array", "string", "empty", "nan", "not-utf8", "deep-array", "deep-object"],
)
def test_400_for_malformed_json(http: httpx.Client, raw: bytes, fragment: str) -> None:
    response = http.post(RUNS, content=raw, headers={"Content-Type": "application/json"})
    assert_error(response, 400, fragment)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"prompt": ""},
        {"prompt": "   \n\t"},
        {"prompt": 42},
        {"prompt": None},
        {"prompt": ["x"]},
    ],
)
def test_400_for_a_missing_blank_or_non_string_prompt(
    http: httpx.Client, body: dict[str, Any]
) -> None:
    assert_error(submit(http, body), 400, "prompt")


@pytest.mark.parametrize("key", ["", "k" * 256, "clé-non-ascii", "tab\there", "nul\x7fdel"])
def test_400_for_an_invalid_idempotency_key_in_header_or_body(http: httpx.Client, key: str) -> None:
    response = http.post(
        RUNS,
        content=b'{"prompt": "x"}',
        headers={"Content-Type": "application/json", "Idempotency-Key": key.encode("utf-8")},  # type: ignore[dict-item]
    )
    assert_error(response, 400, "idempotency")
    assert_error(submit(http, {"prompt": "x", "idempotency_key": key}), 400, "idempotency")


def test_400_when_header_and_body_keys_differ(http: httpx.Client) -> None:
    response = submit(http, {"prompt": "x", "idempotency_key": "a"}, **{"Idempotency-Key": "b"})
    assert_error(response, 400, "differ")


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ({"webhook_url": "http://10.0.0.7/hook"}, "webhook_url"),
        ({"webhook_url": "http://127.0.0.1:8080/hook"}, "webhook_url"),
        ({"webhook_url": "http://[::ffff:127.0.0.1]/hook"}, "webhook_url"),
        ({"webhook_url": "https://internal.example.com/hook"}, "webhook_url"),
        ({"webhook_url": "https://svc.default.svc/hook"}, "webhook_url"),
        ({"webhook_url": "ftp://example.com/x"}, "webhook_url"),
        ({"webhook_url": 5}, "webhook_url"),
        ({"agent_file": "../secrets.yaml"}, ".."),
        ({"agent_file": "team/../../x.yaml"}, ".."),
        ({"agent_file": "/etc/agents.yaml"}, "absolute"),
        ({"agent_file": ""}, "agent_file"),
        ({"agent_file": "a.yaml", "agent_yaml": "roles: {}"}, "not both"),
        ({"framework": "crewai"}, "framework"),
        ({"framework": 1}, "framework"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": 86401}, "timeout"),
        ({"timeout": "60"}, "timeout"),
        ({"timeout": 1.5}, "timeout"),
        ({"timeout": True}, "timeout"),
        ({"session_id": "s" * 257}, "session_id"),
        ({"session_id": 7}, "session_id"),
        ({"agent_yaml": "a: " + "x" * 65536}, "agent_yaml"),
        ({"agent_yaml": {"roles": {}}}, "agent_yaml"),
        ({"recipe_name": "my-recipe"}, "not supported"),
        ({"recipe_config": {"a": 1}}, "not supported"),
        ({"config": {"model": "gpt"}}, "not supported"),
        ({"prompt": "é" * 40_000}, "64 KiB"),
    ],
)
def test_422_for_any_other_invalid_field(
    http: httpx.Client,
    cluster: ClusterThread,
    namespace: str,
    extra: dict[str, Any],
    fragment: str,
) -> None:
    response = submit(http, {"prompt": "x", **extra})
    assert_error(response, 422, fragment)
    assert list_agentruns(cluster, namespace) == []


def test_unresolvable_webhook_host_is_accepted_at_submit(http: httpx.Client) -> None:
    response = submit(http, {"prompt": "x", "webhook_url": "https://not-in-the-table.example.org/"})
    assert response.status_code == 202, response.text


def test_unicode_and_nul_bytes_survive_the_round_trip(
    http: httpx.Client, cluster: ClusterThread, namespace: str
) -> None:
    prompt = "héllo 世界 🚀 \u0000 nul and \u2028 line sep"
    response = submit(http, {"prompt": prompt, "session_id": "sess-ünï"})
    assert response.status_code == 202, response.text
    spec = get_agentrun(cluster, namespace, response.json()["job_id"])["spec"]
    assert spec["prompt"] == prompt
    got = http.get(f"{RUNS}/{response.json()['job_id']}").json()
    assert got["session_id"] == "sess-ünï"


def test_a_lone_surrogate_in_the_prompt_is_400(http: httpx.Client) -> None:
    response = http.post(
        RUNS,
        content=b'{"prompt": "bad \\ud800 text"}',
        headers={"Content-Type": "application/json"},
    )
    assert_error(response, 400, "unicode")


# ---------------------------------------------------------------------------------------------
# Idempotency


def test_seed_retry_loop_with_one_key_yields_one_run(
    http: httpx.Client, cluster: ClusterThread, namespace: str
) -> None:
    answers = [
        http.post(RUNS, json={"prompt": "Process data"}, headers={"Idempotency-Key": "op-1"})
        for _ in range(3)
    ]
    assert [a.status_code for a in answers] == [202, 200, 200]
    assert len({a.json()["job_id"] for a in answers}) == 1
    for replay in answers[1:]:
        assert replay.headers["idempotent-replayed"] == "true"
        assert set(replay.json()) == STATUS_KEYS
        assert replay.headers["location"] == answers[0].json()["poll_url"]
    assert len(list_agentruns(cluster, namespace)) == 1


def test_praisonai_client_body_fingerprints_like_the_seed_curl(http: httpx.Client) -> None:
    key = {"Idempotency-Key": "same-request"}
    first = submit(http, {"prompt": "Analyze", "session_id": "s1"}, **key)
    assert first.status_code == 202
    praisonai_style = {
        "prompt": "Analyze",
        "framework": "praisonai",
        "timeout": 3600,
        "session_id": "s1",
        "idempotency_key": "same-request",
    }
    second = submit(http, praisonai_style, **key)
    assert second.status_code == 200, second.text
    assert second.json()["job_id"] == first.json()["job_id"]


def test_body_key_alone_is_the_same_run_as_the_header_key(http: httpx.Client) -> None:
    first = submit(http, {"prompt": "x"}, **{"Idempotency-Key": "k-body"})
    second = submit(http, {"prompt": "x", "idempotency_key": "k-body"})
    assert second.status_code == 200
    assert second.json()["job_id"] == first.json()["job_id"]


def test_409_when_a_key_is_reused_with_a_different_request(
    http: httpx.Client, cluster: ClusterThread, namespace: str
) -> None:
    assert submit(http, {"prompt": "one"}, **{"Idempotency-Key": "k"}).status_code == 202
    response = submit(http, {"prompt": "two"}, **{"Idempotency-Key": "k"})
    assert_error(response, 409, "different request")
    assert len(list_agentruns(cluster, namespace)) == 1


def test_a_replay_reports_the_current_status(
    http: httpx.Client, cluster: ClusterThread, namespace: str
) -> None:
    job_id = submit(http, {"prompt": "x"}, **{"Idempotency-Key": "k2"}).json()["job_id"]
    finish(cluster, namespace, job_id)
    replay = submit(http, {"prompt": "x"}, **{"Idempotency-Key": "k2"})
    assert replay.status_code == 200
    assert replay.json()["status"] == "succeeded"
    assert replay.json()["retry_after"] is None


# ---------------------------------------------------------------------------------------------
# GET /runs/{id}, GET /runs


def test_status_object_of_a_queued_run(http: httpx.Client) -> None:
    job_id = submit(http, {"prompt": "x", "session_id": "s"}).json()["job_id"]
    body = http.get(f"{RUNS}/{job_id}").json()
    assert set(body) == STATUS_KEYS
    assert body["status"] == "queued"
    assert body["progress"] == {"percentage": 0.0, "current_step": None}
    assert body["retry_after"] == 2
    assert body["queue_position"] == 1
    assert body["session_id"] == "s"
    assert body["started_at"] is None
    assert body["error"] is None
    assert body["reason"] is None


def test_status_object_follows_the_operator(
    http: httpx.Client, cluster: ClusterThread, namespace: str
) -> None:
    job_id = submit(http).json()["job_id"]
    set_status(
        cluster,
        namespace,
        job_id,
        {
            "phase": "Running",
            "startedAt": "2026-01-01T00:00:00Z",
            "progress": {"percentage": 50, "currentStep": "Running agent"},
        },
    )
    body = _eventually_status(http, job_id, "running")
    assert body["retry_after"] == 5
    assert body["queue_position"] is None
    assert body["progress"] == {"percentage": 50.0, "current_step": "Running agent"}
    assert body["started_at"] == "2026-01-01T00:00:00Z"
    finish(
        cluster,
        namespace,
        job_id,
        phase="Failed",
        reason="timeout",
        message="The run exceeded its timeout of 3600 seconds.",
    )
    body = _eventually_status(http, job_id, "failed")
    assert body["reason"] == "timeout"
    assert "timeout" in body["error"]
    assert body["retry_after"] is None
    assert body["duration_seconds"] == 45.0
    assert body["completed_at"] == "2026-01-01T00:00:45Z"


def _eventually_status(http: httpx.Client, job_id: str, status: str) -> dict[str, Any]:
    """The cache follows the watch: allow it a moment (generous bound)."""
    import time

    deadline = time.monotonic() + 10
    while True:
        body: dict[str, Any] = http.get(f"{RUNS}/{job_id}").json()
        if body["status"] == status or time.monotonic() > deadline:
            assert body["status"] == status, body
            return body
        time.sleep(0.05)


def test_get_unknown_run_is_404(http: httpx.Client) -> None:
    assert_error(http.get(f"{RUNS}/run_doesnotexist"), 404, "no run")


def test_list_is_newest_first_filtered_and_paged(
    http: httpx.Client, cluster: ClusterThread, namespace: str
) -> None:
    import time

    ids = []
    for i in range(5):
        ids.append(
            submit(http, {"prompt": f"p{i}", "session_id": "a" if i % 2 else "b"}).json()["job_id"]
        )
        time.sleep(1.05)  # creationTimestamp has one-second resolution
    finish(cluster, namespace, ids[0])
    _eventually_status(http, ids[0], "succeeded")

    everything = http.get(RUNS).json()
    assert everything["total"] == 5
    assert [j["job_id"] for j in everything["jobs"]] == list(reversed(ids))
    assert everything["page"] == 1
    assert everything["page_size"] == 20

    page2 = http.get(RUNS, params={"page": 2, "page_size": 2}).json()
    assert [j["job_id"] for j in page2["jobs"]] == [ids[2], ids[1]]
    assert page2["total"] == 5

    queued = http.get(RUNS, params={"status": "queued"}).json()
    assert queued["total"] == 4
    assert [j["queue_position"] for j in queued["jobs"]] == [4, 3, 2, 1]
    succeeded = http.get(RUNS, params={"status": "succeeded"}).json()
    assert [j["job_id"] for j in succeeded["jobs"]] == [ids[0]]

    session_a = http.get(RUNS, params={"session_id": "a"}).json()
    assert [j["job_id"] for j in session_a["jobs"]] == [ids[3], ids[1]]


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"status": "done"}, "unknown status"),
        ({"page_size": 101}, "page_size"),
        ({"page_size": 0}, "page_size"),
        ({"page": 0}, "page"),
        ({"page": "x"}, "page"),
    ],
)
def test_list_refuses_bad_queries(
    http: httpx.Client, params: dict[str, Any], fragment: str
) -> None:
    assert_error(http.get(RUNS, params=params), 400, fragment)


# ---------------------------------------------------------------------------------------------
# GET /runs/{id}/result


def test_result_is_409_until_finished_then_the_full_result(
    http: httpx.Client, cluster: ClusterThread, namespace: str
) -> None:
    job_id = submit(http).json()["job_id"]
    assert_error(http.get(f"{RUNS}/{job_id}/result"), 409, "still queued")
    big = "line\n" * 2000  # larger than the 4 KiB excerpt
    store_result(cluster, namespace, job_id, big)
    finish(cluster, namespace, job_id, resultExcerpt=big[:100])
    response = http.get(f"{RUNS}/{job_id}/result")
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {
        "job_id",
        "status",
        "result",
        "error",
        "reason",
        "created_at",
        "started_at",
        "completed_at",
        "duration_seconds",
    }
    assert body["status"] == "succeeded"
    assert body["result"] == big
    assert body["duration_seconds"] == 45.0


def test_result_of_a_failed_run_without_result_object_is_null(
    http: httpx.Client, cluster: ClusterThread, namespace: str
) -> None:
    job_id = submit(http).json()["job_id"]
    finish(cluster, namespace, job_id, phase="Failed", reason="agent_error", message="boom")
    body = http.get(f"{RUNS}/{job_id}/result").json()
    assert body["status"] == "failed"
    assert body["result"] is None
    assert body["reason"] == "agent_error"
    assert body["error"] == "boom"


def test_result_of_unknown_run_is_404(http: httpx.Client) -> None:
    assert_error(http.get(f"{RUNS}/run_nope/result"), 404)


# ---------------------------------------------------------------------------------------------
# Cancel and delete


def test_cancel_a_queued_run_reads_cancelled_everywhere_at_once(
    http: httpx.Client, cluster: ClusterThread, namespace: str
) -> None:
    job_id = submit(http).json()["job_id"]
    response = http.post(f"{RUNS}/{job_id}/cancel")
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == STATUS_KEYS
    assert body["status"] == "cancelled"
    assert body["reason"] == "cancelled"
    assert body["retry_after"] is None
    assert get_agentrun(cluster, namespace, job_id)["spec"]["cancelRequested"] is True

    assert http.get(f"{RUNS}/{job_id}").json()["status"] == "cancelled"
    listed = http.get(RUNS, params={"status": "cancelled"}).json()
    assert [j["job_id"] for j in listed["jobs"]] == [job_id]
    assert http.get(RUNS, params={"status": "queued"}).json()["total"] == 0
    result = http.get(f"{RUNS}/{job_id}/result")
    assert result.status_code == 200
    assert result.json()["status"] == "cancelled"
    # cancelling again is harmless
    assert http.post(f"{RUNS}/{job_id}/cancel").status_code == 200
    # and a cancel-requested run may be deleted
    assert http.delete(f"{RUNS}/{job_id}").status_code == 204
    assert_error(http.get(f"{RUNS}/{job_id}"), 404)


def test_cancel_a_running_run_tests_its_phase(
    http: httpx.Client, cluster: ClusterThread, namespace: str
) -> None:
    job_id = submit(http).json()["job_id"]
    set_status(cluster, namespace, job_id, {"phase": "Running"})
    response = http.post(f"{RUNS}/{job_id}/cancel")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    assert get_agentrun(cluster, namespace, job_id)["status"]["phase"] == "Running"


@pytest.mark.parametrize("phase", ["Succeeded", "Failed", "Cancelled"])
def test_cancel_a_finished_run_is_409(
    http: httpx.Client, cluster: ClusterThread, namespace: str, phase: str
) -> None:
    job_id = submit(http).json()["job_id"]
    finish(cluster, namespace, job_id, phase=phase)
    assert_error(http.post(f"{RUNS}/{job_id}/cancel"), 409, "already finished")
    assert "cancelRequested" not in get_agentrun(cluster, namespace, job_id)["spec"]


def test_cancel_unknown_is_404(http: httpx.Client) -> None:
    assert_error(http.post(f"{RUNS}/run_nope/cancel"), 404)


def test_delete_refuses_a_live_run_then_deletes_a_finished_one(
    http: httpx.Client, cluster: ClusterThread, namespace: str
) -> None:
    job_id = submit(http).json()["job_id"]
    assert_error(http.delete(f"{RUNS}/{job_id}"), 409, "cancel it first")
    set_status(cluster, namespace, job_id, {"phase": "Running"})
    assert_error(http.delete(f"{RUNS}/{job_id}"), 409, "cancel it first")
    finish(cluster, namespace, job_id)
    response = http.delete(f"{RUNS}/{job_id}")
    assert response.status_code == 204
    assert response.content == b""
    assert list_agentruns(cluster, namespace) == []
    assert_error(http.get(f"{RUNS}/{job_id}"), 404)
    assert http.get(RUNS).json()["total"] == 0
    assert_error(http.delete(f"{RUNS}/{job_id}"), 404)


# ---------------------------------------------------------------------------------------------
# Backpressure


def test_503_with_retry_after_when_the_queue_is_full(
    make_api: Any, cluster: ClusterThread, namespace: str
) -> None:
    api = make_api(max_queued_runs=2, backpressure_retry_after_seconds=7)
    with httpx.Client(base_url=api.base_url, timeout=10) as http:
        first = submit(http, {"prompt": "a"}, **{"Idempotency-Key": "full-1"})
        assert submit(http, {"prompt": "b"}).status_code == 202
        refused = submit(http, {"prompt": "c"})
        assert_error(refused, 503, "queued runs")
        assert refused.headers["retry-after"] == "7"
        # a replay is still answered
        replay = submit(http, {"prompt": "a"}, **{"Idempotency-Key": "full-1"})
        assert replay.status_code == 200
        assert replay.json()["job_id"] == first.json()["job_id"]
        # a finished run frees a place
        finish(cluster, namespace, first.json()["job_id"])
        _eventually_status(http, first.json()["job_id"], "succeeded")
        assert submit(http, {"prompt": "d"}).status_code == 202
    assert len(list_agentruns(cluster, namespace)) == 3


# ---------------------------------------------------------------------------------------------
# Auth


def test_auth_tokens_names_and_signed_read_urls(
    make_api: Any, cluster: ClusterThread, namespace: str, tmp_path: Any
) -> None:
    (tmp_path / "ci-bot").write_text("secret-one\n")
    api = make_api(auth_enabled=True, tokens_dir=str(tmp_path), tokens={"laptop": "secret-two"})
    with httpx.Client(base_url=api.base_url, timeout=10) as http:
        refused = submit(http)
        assert_error(refused, 401, "Bearer")
        assert refused.headers["www-authenticate"].startswith("Bearer")
        assert_error(submit(http, Authorization="Bearer wrong"), 401)
        for call in (
            lambda: http.get(RUNS),
            lambda: http.get(f"{RUNS}/run_x"),
            lambda: http.get(f"{RUNS}/run_x/result"),
            lambda: http.post(f"{RUNS}/run_x/cancel"),
            lambda: http.delete(f"{RUNS}/run_x"),
        ):
            assert_error(call(), 401)

        created = submit(http, Authorization="Bearer secret-one")
        assert created.status_code == 202, created.text
        job_id = created.json()["job_id"]
        annotations = get_agentrun(cluster, namespace, job_id)["metadata"]["annotations"]
        assert annotations[names.ANNOTATION_SUBMITTED_BY] == "ci-bot"
        assert "secret" not in str(annotations)
        assert submit(http, **{"X-API-Key": "secret-two"}).status_code == 202

        poll_url = created.json()["poll_url"]
        assert "?token=" in poll_url
        assert "?token=" in created.json()["stream_url"]
        # the signed poll_url works without any header; a run made with one token is not
        # visible with another (scoping: tests/integration/api/test_api_scoping.py)
        assert httpx.get(poll_url, timeout=10).status_code == 200
        assert_error(http.get(f"{RUNS}/{job_id}", headers={"X-API-Key": "secret-two"}), 404)
        token = poll_url.split("?token=")[1]
        # the read token is run-scoped and read-only
        other = submit(http, Authorization="Bearer secret-one").json()["job_id"]
        assert_error(http.get(f"{RUNS}/{other}", params={"token": token}), 401)
        assert_error(http.post(f"{RUNS}/{job_id}/cancel", params={"token": token}), 401)
        assert_error(http.get(RUNS, params={"token": token}), 401)
        # health and liveness are public
        assert http.get("/livez").status_code == 200
        assert http.get("/health").status_code == 200


def test_auth_on_without_tokens_refuses_to_start(cluster: ClusterThread) -> None:
    from agentrun_api.app import create_app
    from agentrun_api.settings import APISettings

    with pytest.raises(ValueError, match="no API token"):
        create_app(APISettings(auth_enabled=True, kubeconfig=str(cluster.kubeconfig)))


# ---------------------------------------------------------------------------------------------
# Operational endpoints and error shapes


def test_health_and_livez(http: httpx.Client, namespace: str) -> None:
    health = http.get("/health")
    assert health.status_code == 200
    assert health.json()["status"] == "healthy"
    assert health.json()["namespace"] == namespace
    assert http.get("/livez").json() == {"status": "alive"}


def test_health_is_503_when_kubernetes_is_unreachable(make_api: Any, tmp_path: Any) -> None:
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    dead_port = sock.getsockname()[1]
    sock.close()
    kubeconfig = tmp_path / "dead-kubeconfig"
    kubeconfig.write_text(
        f"""apiVersion: v1
kind: Config
clusters: [{{name: dead, cluster: {{server: "http://127.0.0.1:{dead_port}"}}}}]
users: [{{name: u, user: {{token: x}}}}]
contexts: [{{name: c, context: {{cluster: dead, user: u, namespace: default}}}}]
current-context: c
"""
    )
    api = make_api(
        kubeconfig=str(kubeconfig), cache_sync_timeout_seconds=0.2, health_timeout_seconds=1
    )
    response = httpx.get(api.base_url + "/health", timeout=10)
    assert response.status_code == 503
    assert response.json()["kubernetes"] == "unreachable"
    assert httpx.get(api.base_url + "/livez", timeout=10).status_code == 200
    # a submit while Kubernetes is down is a retryable 503, not a 500
    refused = httpx.post(api.base_url + RUNS, json={"prompt": "x"}, timeout=10)
    assert_error(refused, 503, "retry")
    assert refused.headers["retry-after"]


def test_unknown_paths_and_methods_answer_json_detail(http: httpx.Client) -> None:
    assert_error(http.get("/api/v1/nothing"), 404, "no such endpoint")
    assert_error(http.put(f"{RUNS}/run_x"), 405, "not allowed")


def test_openapi_document_is_served(http: httpx.Client) -> None:
    schema = http.get("/schema/openapi.json").json()
    assert "/api/v1/runs" in schema["paths"]
    post = schema["paths"]["/api/v1/runs"]["post"]
    assert {"202", "200", "400", "409", "413", "415", "422", "503"} <= set(post["responses"])
    assert post["requestBody"]["content"]["application/json"]["schema"]["required"] == ["prompt"]


def test_metrics_count_requests_by_route_and_status(api: Any, http: httpx.Client) -> None:
    from prometheus_client import generate_latest

    submit(http)
    submit(http, {})
    http.get(f"{RUNS}/run_nope")
    text = generate_latest(api.app.state.metrics.registry).decode()
    assert (
        'agentrun_api_requests_total{method="POST",route="/api/v1/runs",status="202"} 1.0' in text
    )
    assert (
        'agentrun_api_requests_total{method="POST",route="/api/v1/runs",status="400"} 1.0' in text
    )
    assert 'route="/api/v1/runs/{job_id}",status="404"' in text
    assert "agentrun_api_runs_created_total 1.0" in text
    assert "agentrun_api_request_duration_seconds_bucket" in text


def test_cancel_rereads_when_the_run_moved_after_it_was_read(
    api: Any, http: httpx.Client, cluster: ClusterThread, namespace: str
) -> None:
    """The operator writes status between the API's read and its patch: the patch's test fails
    (422 from the apiserver), the API re-reads and decides again."""
    job_id = submit(http).json()["job_id"]
    name = names.run_name_for_job_id(job_id)
    repository = api.app.state.runs
    stale = api.call(repository.get(name))  # empty status: the guard tests resourceVersion
    set_status(cluster, namespace, job_id, {"phase": "Running"})
    real_get = repository.get
    reads: list[str] = []

    async def get_once_stale(run: str) -> dict[str, Any]:
        reads.append(run)
        return stale if len(reads) == 1 else await real_get(run)

    repository.get = get_once_stale
    try:
        patched = api.call(repository.cancel(name))
    finally:
        repository.get = real_get
    assert len(reads) == 2
    assert patched["spec"]["cancelRequested"] is True

    # and when it finished in between, the re-read answers "already finished"
    other = submit(http).json()["job_id"]
    other_name = names.run_name_for_job_id(other)
    set_status(cluster, namespace, other, {"phase": "Running"})
    stale = api.call(repository.get(other_name))
    finish(cluster, namespace, other)
    reads.clear()
    repository.get = get_once_stale
    try:
        from agentrun_api.runs_repository import AlreadyFinished

        with pytest.raises(AlreadyFinished):
            api.call(repository.cancel(other_name))
    finally:
        repository.get = real_get
    assert "cancelRequested" not in get_agentrun(cluster, namespace, other)["spec"]


def test_result_falls_back_to_a_whole_excerpt(
    http: httpx.Client, cluster: ClusterThread, namespace: str
) -> None:
    job_id = submit(http).json()["job_id"]
    finish(cluster, namespace, job_id, resultExcerpt="short answer", resultTruncated=False)
    assert http.get(f"{RUNS}/{job_id}/result").json()["result"] == "short answer"
    other = submit(http).json()["job_id"]
    finish(cluster, namespace, other, resultExcerpt="cut...", resultTruncated=True)
    assert http.get(f"{RUNS}/{other}/result").json()["result"] is None


def test_a_kubectl_made_run_is_served_under_its_own_name(
    http: httpx.Client, cluster: ClusterThread, namespace: str
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
    body = http.get(f"{RUNS}/nightly-report").json()
    assert body["job_id"] == "nightly-report"
    assert body["status"] == "queued"
    assert body["poll_url"].endswith("/api/v1/runs/nightly-report")
    listed = _eventually_listed(http, "nightly-report")
    assert listed["job_id"] == "nightly-report"
    assert http.post(f"{RUNS}/nightly-report/cancel").json()["status"] == "cancelled"


def _eventually_listed(http: httpx.Client, job_id: str) -> dict[str, Any]:
    import time

    deadline = time.monotonic() + 10
    while True:
        jobs = http.get(RUNS).json()["jobs"]
        found = [j for j in jobs if j["job_id"] == job_id]
        if found:
            return found[0]  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, jobs
        time.sleep(0.05)


def test_a_key_whose_run_is_being_deleted_is_409_then_reusable(
    http: httpx.Client, cluster: ClusterThread, namespace: str
) -> None:
    key = {"Idempotency-Key": "deleting"}
    job_id = submit(http, {"prompt": "x"}, **key).json()["job_id"]
    name = names.run_name_for_job_id(job_id)
    # a finalizer (as the operator's) keeps the run while it is being deleted
    patched = httpx.patch(
        agentrun_url(cluster, namespace, name),
        json={"metadata": {"finalizers": ["agentrun.dev/operator"]}},
        headers={"Content-Type": "application/merge-patch+json"},
        timeout=10,
    )
    assert patched.status_code == 200, patched.text
    finish(cluster, namespace, job_id)
    assert http.delete(f"{RUNS}/{job_id}").status_code == 204
    assert_error(http.get(f"{RUNS}/{job_id}"), 404)
    refused = submit(http, {"prompt": "x"}, **key)
    assert_error(refused, 409, "being deleted")
    assert refused.headers["retry-after"] == "2"
    released = httpx.patch(
        agentrun_url(cluster, namespace, name),
        json={"metadata": {"finalizers": None}},
        headers={"Content-Type": "application/merge-patch+json"},
        timeout=10,
    )
    assert released.status_code == 200, released.text
    again = submit(http, {"prompt": "x"}, **key)
    assert again.status_code == 202, again.text
    assert again.json()["job_id"] == job_id

"""End to end on the dev stack (emulated cluster, real operator and API processes, tiny runner):
runs submitted through POST /api/v1/runs with a webhook_url reach a local receiver, signed, for
success, failure, timeout and cancel; the API refuses a forbidden webhook_url with 422."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from agentrun_devcluster.system import DevSystem, SyncKube
from agentrun_webhooks.receiver import WebhookReceiver, payload_of

pytestmark = pytest.mark.slow

RUNS = "/apis/agentrun.dev/v1alpha1/namespaces/default/agentruns"


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    instance = WebhookReceiver().start()
    try:
        yield instance
    finally:
        instance.stop()


@pytest.fixture(scope="module")
def system(receiver: WebhookReceiver) -> Iterator[DevSystem]:
    env = {
        "AGENTRUN_OPERATOR_WEBHOOK__SIGNING_SECRETS": json.dumps([receiver.secret]),
        "AGENTRUN_OPERATOR_WEBHOOK__RETRY_SCHEDULE_SECONDS": "[0, 0.5, 0.5]",
        "AGENTRUN_OPERATOR_WEBHOOK__CHECK_INTERVAL_SECONDS": "0.2",
    }
    with DevSystem(operator_env_overrides=env) as s:
        kube = SyncKube(s.cluster.base_url)
        try:
            if (
                kube.get_or_none("/api/v1/namespaces/default/secrets/agentrun-llm-credentials")
                is None
            ):
                kube.create(
                    "/api/v1/namespaces/default/secrets",
                    {
                        "apiVersion": "v1",
                        "kind": "Secret",
                        "metadata": {"name": "agentrun-llm-credentials"},
                        "stringData": {"OPENAI_API_KEY": "sk-test-not-used"},
                    },
                )
        finally:
            kube.close()
        yield s


def submit(system: DevSystem, prompt: str, webhook_url: str, **extra: Any) -> str:
    response = httpx.post(
        f"{system.api_url}/api/v1/runs",
        json={"prompt": prompt, "webhook_url": webhook_url, **extra},
        timeout=30,
    )
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    return job_id


def delivered_state(kube: SyncKube, job_id: str) -> dict[str, Any] | None:
    run = kube.get(f"{RUNS}/{job_id.replace('run_', 'run-', 1)}")
    webhook: dict[str, Any] = (run.get("status") or {}).get("webhook") or {}
    return webhook if webhook.get("state") == "delivered" else None


def test_webhook_arrives_signed_for_success_failure_timeout_and_cancel(
    system: DevSystem, receiver: WebhookReceiver
) -> None:
    ok = submit(system, "hello echo", receiver.url_for("ok"))
    failed = submit(system, "fail", receiver.url_for("failed"))
    timed_out = submit(system, "sleep=30", receiver.url_for("timeout"), timeout=2)
    cancelled = submit(system, "sleep=30", receiver.url_for("cancel"))
    kube = SyncKube(system.cluster.base_url)
    try:
        name = cancelled.replace("run_", "run-", 1)
        kube.wait_for(
            "the run to start",
            lambda: (kube.get(f"{RUNS}/{name}").get("status") or {}).get("phase") == "Running",
            timeout=60,
        )
        response = httpx.post(f"{system.api_url}/api/v1/runs/{cancelled}/cancel", timeout=30)
        assert response.status_code == 200, response.text
        expected = {
            "ok": (ok, "succeeded", None),
            "failed": (failed, "failed", "agent_error"),
            "timeout": (timed_out, "failed", "timeout"),
            "cancel": (cancelled, "cancelled", "cancelled"),
        }
        for path, (job_id, status, reason) in expected.items():
            try:
                (item,) = receiver.wait_for(1, timeout=90, path=f"/hook/{path}")
            except AssertionError:
                raise AssertionError(system.logs()) from None
            assert item.verification_error is None, item.verification_error
            body = payload_of(item)
            assert body["job_id"] == job_id
            assert body["status"] == status
            assert body["reason"] == reason
            assert set(body) >= {"result", "error", "result_truncated", "result_url"}
            if status == "succeeded":
                assert body["result"] == "hello echo"
                assert body["error"] is None
            else:
                assert body["result"] is None
                assert body["error"]
            assert body["result_url"] == f"{system.api_url}/api/v1/runs/{job_id}/result"
            webhook = kube.wait_for(
                "delivered recorded", lambda job_id=job_id: delivered_state(kube, job_id)
            )
            assert webhook["id"] == item.headers["webhook-id"]
            assert webhook["attempts"] == 1
    finally:
        kube.close()


def test_api_refuses_forbidden_webhook_url_with_422(system: DevSystem) -> None:
    for url in (
        "http://10.0.0.1/hook",
        "ftp://hooks.example.com/",
        "http://user:pw@hooks.example.com/",
        "http://api.default.svc.cluster.local/",
        "http://[::ffff:10.0.0.1]/",
    ):
        response = httpx.post(
            f"{system.api_url}/api/v1/runs",
            json={"prompt": "x", "webhook_url": url},
            timeout=30,
        )
        assert response.status_code == 422, (url, response.text)
        assert "webhook_url" in response.json()["detail"]

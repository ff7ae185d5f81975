"""The operator's webhook handlers against the emulated cluster and a real receiver.

kopf runs ``kopf_app/webhook_operator.py`` (only the webhook handlers) in a subprocess, so it can
be killed at any moment. Runs are made terminal by patching their status directly, as the
operator's reconciler would (``status.webhook = {state: pending, id}`` in the terminal patch).
The retry schedule is compressed by configuration (AGENTRUN_OPERATOR_WEBHOOK__*), not mocks.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from agentrun_devcluster.system import (
    SyncKube,
    free_port,
    start_process,
    stop_process,
    wait_http_ok,
)
from agentrun_devcluster.testing import ClusterThread
from agentrun_webhooks.receiver import Answer, Received, WebhookReceiver, payload_of
from agentrun_webhooks.signing import new_webhook_id

pytestmark = pytest.mark.slow

APP = Path(__file__).parent / "kopf_app" / "webhook_operator.py"
RUNS = "/apis/agentrun.dev/v1alpha1/namespaces/default/agentruns"
RESULTS = "/apis/agentrun.dev/v1alpha1/namespaces/default/agentrunresults"
EVENTS = "/api/v1/namespaces/default/events"
PUBLIC_BASE_URL = "https://agents.example.com"
COMPLETED_AT = "2026-11-29T10:00:00Z"


class WebhookOperator:
    """The webhook handlers in a kopf subprocess, restartable and killable."""

    def __init__(
        self, cluster: ClusterThread, receiver: WebhookReceiver, workdir: Path, **env: str
    ) -> None:
        self.cluster = cluster
        self.log = workdir / "kopf.log"
        self.env = {
            "KUBECONFIG": str(cluster.kubeconfig),
            "AGENTRUN_OPERATOR_KUBECONFIG": str(cluster.kubeconfig),
            "AGENTRUN_OPERATOR_NAMESPACES": '["default"]',
            "AGENTRUN_OPERATOR_PUBLIC_BASE_URL": PUBLIC_BASE_URL,
            "AGENTRUN_OPERATOR_WEBHOOK_POLICY__ALLOW_LOOPBACK": "true",
            "AGENTRUN_OPERATOR_WEBHOOK__RETRY_SCHEDULE_SECONDS": "[0, 0.3, 0.3, 0.3]",
            "AGENTRUN_OPERATOR_WEBHOOK__JITTER_RATIO": "0",
            "AGENTRUN_OPERATOR_WEBHOOK__ATTEMPT_TIMEOUT_SECONDS": "1",
            "AGENTRUN_OPERATOR_WEBHOOK__CHECK_INTERVAL_SECONDS": "0.1",
            "AGENTRUN_OPERATOR_WEBHOOK__SIGNING_SECRETS": json.dumps([receiver.secret]),
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WebhookOperator:
        port = free_port()
        self.proc = start_process(
            [
                sys.executable,
                "-m",
                "kopf",
                "run",
                "--standalone",
                "--namespace",
                "default",
                f"--liveness=http://127.0.0.1:{port}/healthz",
                str(APP),
            ],
            self.env,
            self.log,
        )
        wait_http_ok(f"http://127.0.0.1:{port}/healthz", 60, self.proc, self.log)
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None:
            stop_process(self.proc, sig, timeout=10)
            self.proc = None

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-6000:] if self.log.exists() else ""


def _receiver() -> Iterator[WebhookReceiver]:
    instance = WebhookReceiver().start()
    try:
        yield instance
    finally:
        instance.stop()


def _kube(cluster: ClusterThread) -> Iterator[SyncKube]:
    client = SyncKube(cluster.base_url)
    try:
        yield client
    finally:
        client.close()


# One cluster, receiver and operator for the tests that never stop the operator (each uses its
# own run names and receiver path); the restart tests below get their own.
@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    yield from _receiver()


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterThread]:
    with ClusterThread() as c:
        yield c


@pytest.fixture(scope="module")
def kube(cluster: ClusterThread) -> Iterator[SyncKube]:
    yield from _kube(cluster)


@pytest.fixture(scope="module")
def operator(
    cluster: ClusterThread, receiver: WebhookReceiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WebhookOperator]:
    op = WebhookOperator(cluster, receiver, tmp_path_factory.mktemp("operator")).start()
    try:
        yield op
    finally:
        op.kill(signal.SIGTERM)


@pytest.fixture
def own_receiver() -> Iterator[WebhookReceiver]:
    yield from _receiver()


@pytest.fixture
def own_cluster() -> Iterator[ClusterThread]:
    with ClusterThread() as c:
        yield c


@pytest.fixture
def own_kube(own_cluster: ClusterThread) -> Iterator[SyncKube]:
    yield from _kube(own_cluster)


def make_finished_run(
    kube: SyncKube,
    name: str,
    url: str,
    *,
    phase: str = "Succeeded",
    reason: str | None = None,
    message: str | None = None,
    result: str | None = None,
    webhook_id: str | None = None,
    set_pending: bool = True,
    session_id: str | None = None,
) -> str:
    """Create an AgentRun and make it terminal the way the operator does; returns the id."""
    spec: dict[str, Any] = {"prompt": "do it", "webhookUrl": url}
    if session_id is not None:
        spec["sessionId"] = session_id
    created = kube.create(
        RUNS,
        {
            "apiVersion": "agentrun.dev/v1alpha1",
            "kind": "AgentRun",
            "metadata": {"name": name},
            "spec": spec,
        },
    )
    if result is not None:
        kube.create(
            RESULTS,
            {
                "apiVersion": "agentrun.dev/v1alpha1",
                "kind": "AgentRunResult",
                "metadata": {
                    "name": f"{name}-result",
                    "ownerReferences": [
                        {
                            "apiVersion": "agentrun.dev/v1alpha1",
                            "kind": "AgentRun",
                            "name": name,
                            "uid": created["metadata"]["uid"],
                            "controller": True,
                        }
                    ],
                },
                "spec": {
                    "runName": name,
                    "result": result,
                    "bytes": len(result.encode()),
                    "sha256": hashlib.sha256(result.encode()).hexdigest(),
                },
            },
        )
    webhook_id = webhook_id or new_webhook_id()
    status: dict[str, Any] = {
        "phase": phase,
        "completedAt": COMPLETED_AT,
        "durationSeconds": 12.5,
    }
    if reason is not None:
        status["reason"] = reason
    if message is not None:
        status["message"] = message
    if set_pending:
        status["webhook"] = {"state": "pending", "id": webhook_id}
    kube.merge_patch(f"{RUNS}/{name}/status", {"status": status})
    return webhook_id


def webhook_of(kube: SyncKube, name: str) -> dict[str, Any]:
    status = kube.get(f"{RUNS}/{name}").get("status") or {}
    return dict(status.get("webhook") or {})


def wait_state(kube: SyncKube, name: str, state: str, timeout: float = 30) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        webhook = webhook_of(kube, name)
        return webhook if webhook.get("state") == state else None

    result: dict[str, Any] = kube.wait_for(f"{name} webhook {state}", probe, timeout=timeout)
    return result


def event_reasons(kube: SyncKube, name: str) -> list[str]:
    return [
        e.get("reason", "")
        for e in kube.items(EVENTS)
        if (e.get("involvedObject") or {}).get("name") == name
    ]


def wait_event(kube: SyncKube, name: str, reason: str) -> list[str]:
    """Events are posted right after the status record: wait for them."""
    reasons: list[str] = kube.wait_for(
        f"{reason} event for {name}",
        lambda: (lambda found: found if reason in found else None)(event_reasons(kube, name)),
        timeout=10,
    )
    return reasons


def path_of(receiver: WebhookReceiver, name: str) -> tuple[str, str]:
    url = receiver.url_for(name)
    return url, httpx.URL(url).path


def assert_verified(items: list[Received]) -> None:
    for item in items:
        assert item.verification_error is None, item.verification_error
        assert item.verified == payload_of(item)


def test_each_terminal_state_is_delivered_signed(
    kube: SyncKube, receiver: WebhookReceiver, operator: WebhookOperator
) -> None:
    cases: Mapping[str, dict[str, Any]] = {
        "ok": {"phase": "Succeeded", "result": "the final answer", "session_id": "sess-1"},
        "broke": {"phase": "Failed", "reason": "agent_error", "message": "agent raised X"},
        "slow": {"phase": "Failed", "reason": "timeout", "message": "exceeded 5s timeout"},
        "stopped": {"phase": "Cancelled", "reason": "cancelled", "message": "cancelled"},
    }
    ids = {}
    for name, fields in cases.items():
        url, _ = path_of(receiver, name)
        ids[name] = make_finished_run(kube, name, url, **fields)
    for name in cases:
        state = wait_state(kube, name, "delivered")
        assert state["attempts"] == 1
        assert state["lastStatusCode"] == 204
        assert state["id"] == ids[name]
        assert state.get("deliveredAt")
        assert "nextAttemptAt" not in state
    by_path = {item.path.rsplit("/", 1)[-1]: item for item in receiver.requests()}
    assert set(by_path) == set(cases), operator.logs()
    assert_verified(list(by_path.values()))
    ok = payload_of(by_path["ok"])
    assert ok == {
        "job_id": "ok",
        "status": "succeeded",
        "result": "the final answer",
        "error": None,
        "reason": None,
        "session_id": "sess-1",
        "completed_at": COMPLETED_AT,
        "duration_seconds": 12.5,
        "result_truncated": False,
        "result_url": f"{PUBLIC_BASE_URL}/api/v1/runs/ok/result",
    }
    for name in ("broke", "slow", "stopped"):
        body = payload_of(by_path[name])
        assert body["status"] == cases[name]["phase"].lower()
        assert body["reason"] == cases[name]["reason"]
        assert body["error"] == cases[name]["message"]
        assert body["result"] is None
    for name in cases:
        assert by_path[name].headers["webhook-id"] == ids[name]
        wait_event(kube, name, "WebhookDelivered")


def test_long_result_is_truncated_in_the_webhook(
    kube: SyncKube, receiver: WebhookReceiver, operator: WebhookOperator
) -> None:
    url, path = path_of(receiver, "big")
    make_finished_run(kube, "big", url, result="r" * 100_000)
    (item,) = receiver.wait_for(1, path=path)
    assert len(item.body) <= 20_000
    body = payload_of(item)
    assert body["result_truncated"] is True
    assert "r" * 1000 in body["result"]
    assert body["result_url"].endswith("/api/v1/runs/big/result")
    assert_verified([item])


def test_retries_after_500_and_timeout_with_one_webhook_id(
    kube: SyncKube, receiver: WebhookReceiver, operator: WebhookOperator
) -> None:
    url, path = path_of(receiver, "flaky")
    receiver.script(Answer(status=500), Answer(delay_seconds=3), path=path)
    webhook_id = make_finished_run(kube, "flaky", url)
    state = wait_state(kube, "flaky", "delivered")
    items = receiver.wait_for(3, path=path)
    assert len(items) == 3
    assert [i.answered for i in items] == [500, 204, 204]  # the 2nd timed out before answering
    assert {i.headers["webhook-id"] for i in items} == {webhook_id}
    assert_verified(items)
    assert state["attempts"] == 3
    # schedule [0, 0.3, 0.3]: attempts are spaced at least by the configured delays
    assert items[1].at - items[0].at >= 0.25
    assert items[2].at - items[1].at >= 1.0  # the 1 s attempt timeout, then 0.3 s
    reasons = wait_event(kube, "flaky", "WebhookDelivered")
    assert reasons.count("WebhookAttemptFailed") == 2


def test_retry_after_is_honoured(
    kube: SyncKube, receiver: WebhookReceiver, operator: WebhookOperator
) -> None:
    url, path = path_of(receiver, "busy")
    receiver.script(Answer(status=503, headers={"Retry-After": "2"}), path=path)
    make_finished_run(kube, "busy", url)
    pending = kube.wait_for(
        "first attempt recorded", lambda: webhook_of(kube, "busy").get("attempts") == 1
    )
    assert pending
    state = webhook_of(kube, "busy")
    assert state["state"] == "pending"
    assert state["lastStatusCode"] == 503
    wait_state(kube, "busy", "delivered")
    first, second = receiver.wait_for(2, path=path)
    assert second.at - first.at >= 1.9  # not the schedule's 0.3 s


def test_gone_stops_retries(
    kube: SyncKube, receiver: WebhookReceiver, operator: WebhookOperator
) -> None:
    url, path = path_of(receiver, "gone")
    receiver.script(Answer(status=410), path=path)
    make_finished_run(kube, "gone", url, phase="Failed", reason="agent_error", message="x")
    state = wait_state(kube, "gone", "failed")
    assert state["attempts"] == 1
    assert state["lastStatusCode"] == 410
    assert "410" in state["lastError"]
    time.sleep(1.0)
    assert len(receiver.requests(path)) == 1
    reasons = wait_event(kube, "gone", "WebhookFailed")
    assert "WebhookAttemptFailed" in reasons


def test_schedule_exhausted_then_redelivered_by_annotation(
    kube: SyncKube, receiver: WebhookReceiver, operator: WebhookOperator, cluster: ClusterThread
) -> None:
    url, path = path_of(receiver, "down")
    receiver.script(*[Answer(status=502)] * 4, path=path)
    webhook_id = make_finished_run(kube, "down", url)
    state = wait_state(kube, "down", "failed")
    assert state["attempts"] == 4  # the schedule has four entries
    assert "gave up after 4 attempts" in state["lastError"]
    assert len(receiver.requests(path)) == 4
    # the receiver is fixed; the user asks for a redelivery
    kube.merge_patch(f"{RUNS}/down", {"metadata": {"annotations": {"agentrun.dev/redeliver": "1"}}})
    state = wait_state(kube, "down", "delivered")
    assert state["attempts"] == 1
    assert state["redeliverToken"] == "1"
    assert state["id"] == webhook_id  # same message, re-sent
    items = receiver.wait_for(5, path=path)
    assert items[-1].answered == 204
    assert_verified(items)
    wait_event(kube, "down", "WebhookRedelivery")
    # the same value again does nothing; a new one sends once more
    time.sleep(0.5)
    assert len(receiver.requests(path)) == 5
    subprocess.run(
        [
            "kubectl",
            "--kubeconfig",
            str(cluster.kubeconfig),
            "annotate",
            "agentrun",
            "down",
            "agentrun.dev/redeliver=2",
            "--overwrite",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    receiver.wait_for(6, path=path)
    assert wait_state(kube, "down", "delivered")["redeliverToken"] == "2"


def test_url_refused_at_delivery_fails_without_a_request(
    kube: SyncKube, receiver: WebhookReceiver, operator: WebhookOperator
) -> None:
    make_finished_run(kube, "private", "http://10.1.2.3/hook")
    state = wait_state(kube, "private", "failed")
    assert state["attempts"] == 1
    assert "not a publicly routable address" in state["lastError"]
    assert "lastStatusCode" not in state  # no request was made


def test_terminal_run_without_delivery_state_still_gets_its_webhook(
    kube: SyncKube, receiver: WebhookReceiver, operator: WebhookOperator
) -> None:
    url, path = path_of(receiver, "bare")
    make_finished_run(kube, "bare", url, set_pending=False)
    state = wait_state(kube, "bare", "delivered")
    assert state["id"].startswith("msg_")
    (item,) = receiver.wait_for(1, path=path)
    assert item.headers["webhook-id"] == state["id"]


def test_delete_drops_a_pending_delivery(
    own_kube: SyncKube, own_receiver: WebhookReceiver, tmp_path: Path, own_cluster: ClusterThread
) -> None:
    op = WebhookOperator(
        own_cluster,
        own_receiver,
        tmp_path,
        AGENTRUN_OPERATOR_WEBHOOK__RETRY_SCHEDULE_SECONDS="[0, 2, 2]",
    ).start()
    try:
        url, path = path_of(own_receiver, "dropme")
        own_receiver.script(Answer(status=500), path=path)
        make_finished_run(own_kube, "dropme", url)
        own_receiver.wait_for(1, path=path)
        own_kube.wait_for(
            "attempt recorded", lambda: webhook_of(own_kube, "dropme").get("attempts") == 1
        )
        own_kube.delete(f"{RUNS}/dropme")
        time.sleep(3.0)  # past the next attempt's time
        assert len(own_receiver.requests(path)) == 1
    finally:
        op.kill(signal.SIGTERM)


def test_operator_killed_mid_retry_resumes_the_schedule(
    own_kube: SyncKube, own_receiver: WebhookReceiver, tmp_path: Path, own_cluster: ClusterThread
) -> None:
    env = {"AGENTRUN_OPERATOR_WEBHOOK__RETRY_SCHEDULE_SECONDS": "[0, 4, 0.3]"}
    op = WebhookOperator(own_cluster, own_receiver, tmp_path, **env).start()
    try:
        url, path = path_of(own_receiver, "resume")
        own_receiver.script(Answer(status=500), path=path)
        webhook_id = make_finished_run(own_kube, "resume", url)
        own_receiver.wait_for(1, path=path)
        own_kube.wait_for(
            "attempt recorded", lambda: webhook_of(own_kube, "resume").get("attempts") == 1
        )
        state = webhook_of(own_kube, "resume")
        next_at = datetime.fromisoformat(state["nextAttemptAt"].replace("Z", "+00:00"))
        op.kill(signal.SIGKILL)
        op.start()
        state = wait_state(own_kube, "resume", "delivered")
        first, second = own_receiver.wait_for(2, path=path)
        assert state["attempts"] == 2
        assert second.headers["webhook-id"] == first.headers["webhook-id"] == webhook_id
        # the restarted operator waited for the recorded time, neither early nor from scratch
        assert second.wall >= next_at.timestamp() - 0.5
        assert second.wall - first.wall < 4 + 10
        assert_verified([first, second])
    finally:
        op.kill(signal.SIGTERM)


def test_at_least_once_across_restarts(
    own_kube: SyncKube, own_receiver: WebhookReceiver, tmp_path: Path, own_cluster: ClusterThread
) -> None:
    op = WebhookOperator(own_cluster, own_receiver, tmp_path).start()
    try:
        # 1) delivered and recorded: restarts never send it again
        url, path = path_of(own_receiver, "once")
        make_finished_run(own_kube, "once", url)
        wait_state(own_kube, "once", "delivered")
        # 2) the operator dies after the receiver got the request but before the 2xx came back
        slow_url, slow_path = path_of(own_receiver, "crash")
        own_receiver.script(Answer(delay_seconds=3), path=slow_path)
        crash_id = make_finished_run(own_kube, "crash", slow_url)
        own_receiver.wait_for(1, path=slow_path)
        op.kill(signal.SIGKILL)
        assert webhook_of(own_kube, "crash")["state"] == "pending"
        op.start()
        state = wait_state(own_kube, "crash", "delivered")
        items = own_receiver.wait_for(2, path=slow_path)
        assert {i.headers["webhook-id"] for i in items} == {crash_id}  # de-duplicable
        assert state["attempts"] == 1  # the unrecorded attempt is not counted
        op.kill(signal.SIGKILL)
        op.start()
        time.sleep(1.5)
        assert len(own_receiver.requests(path)) == 1
        assert len(own_receiver.requests(slow_path)) == 2
    finally:
        op.kill(signal.SIGTERM)
        with contextlib.suppress(Exception):
            print(op.logs())


def test_webhook_printer_column(
    kube: SyncKube, receiver: WebhookReceiver, operator: WebhookOperator, cluster: ClusterThread
) -> None:
    url, _ = path_of(receiver, "shown")
    make_finished_run(kube, "shown", url)
    wait_state(kube, "shown", "delivered")
    out = subprocess.run(
        ["kubectl", "--kubeconfig", str(cluster.kubeconfig), "get", "agentruns", "shown"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    header, row = out.strip().splitlines()[:2]
    if header.split() == ["NAME"]:
        pytest.skip("the emulator's server-side printing has no additionalPrinterColumns yet")
    # kubectl aligns columns; empty cells (e.g. SESSION) leave gaps, so cut by position
    start = header.index("WEBHOOK")
    rest = header[start + len("WEBHOOK") :]
    end = start + len("WEBHOOK") + (len(rest) - len(rest.lstrip())) if rest.strip() else None
    assert row[start:end].strip() == "delivered", out


def test_many_deliveries_survive_repeated_kills(
    own_kube: SyncKube, own_receiver: WebhookReceiver, tmp_path: Path, own_cluster: ClusterThread
) -> None:
    """Chaos: 20 runs whose receivers fail a random number of times, while the operator is
    SIGKILLed at random moments. Every delivery ends delivered, every request of a run carries
    that run's one webhook-id, and nothing is sent once all are recorded as delivered.
    Seed: AGENTRUN_CHAOS_SEED (printed)."""
    seed = int(os.environ.get("AGENTRUN_CHAOS_SEED") or random.randrange(1 << 30))
    print(f"AGENTRUN_CHAOS_SEED={seed}")
    rng = random.Random(seed)
    env = {"AGENTRUN_OPERATOR_WEBHOOK__RETRY_SCHEDULE_SECONDS": json.dumps([0] + [0.2] * 9)}
    op = WebhookOperator(own_cluster, own_receiver, tmp_path, **env).start()
    names = [f"chaos-{i}" for i in range(20)]
    ids: dict[str, str] = {}
    try:
        for batch in (names[:10], names[10:]):
            for name in batch:
                url, path = path_of(own_receiver, name)
                own_receiver.script(*[Answer(status=500)] * rng.randint(0, 3), path=path)
                ids[name] = make_finished_run(own_kube, name, url)
            time.sleep(rng.uniform(0.0, 0.8))  # mid-retries of this batch
            op.kill(signal.SIGKILL)
            op.start()
        for name in names:
            wait_state(own_kube, name, "delivered", timeout=60)
        settled = len(own_receiver.requests())
        time.sleep(1.5)
        assert len(own_receiver.requests()) == settled, "sent after being recorded delivered"
        for name in names:
            items = own_receiver.requests(f"/hook/{name}")
            assert items, name
            assert {i.headers["webhook-id"] for i in items} == {ids[name]}
            assert any(200 <= i.answered < 300 for i in items)
            assert_verified(items)
            assert webhook_of(own_kube, name)["attempts"] <= len(items)
    finally:
        op.kill(signal.SIGTERM)

"""WebhookDeliverer's decisions without a cluster: which events start, redeliver or drop a
delivery; a stale cache never causes a send; a record survives unrelated conflicts and yields
to a concurrent change of the delivery. The HTTP attempt is replaced by a recorder here; the
real one is covered over HTTP in tests/integration/webhooks/."""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from agentrun_kube.errors import Conflict, NotFound
from agentrun_operator import webhook_handlers
from agentrun_operator.settings import OperatorSettings
from agentrun_operator.webhook_handlers import WebhookDeliverer
from agentrun_webhooks.delivery import AttemptKind, AttemptOutcome
from prometheus_client import REGISTRY


class FakeKube:
    """An in-memory store of AgentRuns with resourceVersion checks, like the apiserver."""

    def __init__(self) -> None:
        self.runs: dict[str, dict[str, Any]] = {}
        self.rv = 0
        self.patches: list[dict[str, Any]] = []
        self.events: list[tuple[str, str]] = []
        self.conflicts_to_inject = 0
        self.custom = self

    def put(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.rv += 1
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.runs[obj["metadata"]["name"]] = obj
        return copy.deepcopy(obj)

    async def get_run(self, namespace: str, name: str) -> dict[str, Any]:
        if name not in self.runs:
            raise NotFound(404, "NotFound", name)
        return copy.deepcopy(self.runs[name])

    async def patch_run_status(
        self, namespace: str, name: str, status: dict[str, Any], *, resource_version: str | None
    ) -> dict[str, Any]:
        if name not in self.runs:
            raise NotFound(404, "NotFound", name)
        current = self.runs[name]
        if self.conflicts_to_inject:
            self.conflicts_to_inject -= 1
            self.put(current)  # someone else wrote meanwhile
            raise Conflict(409, "Conflict", "changed")
        if (
            resource_version is not None
            and resource_version != current["metadata"]["resourceVersion"]
        ):
            raise Conflict(409, "Conflict", "stale resourceVersion")
        self.patches.append(copy.deepcopy(status))
        merged = copy.deepcopy(current)
        merged.setdefault("status", {})
        for key, value in status.items():
            if isinstance(value, dict):
                target = merged["status"].setdefault(key, {})
                for k, v in value.items():
                    if v is None:
                        target.pop(k, None)
                    else:
                        target[k] = v
            else:
                merged["status"][key] = value
        return self.put(merged)

    async def post_event(
        self, run: Any, *, reason: str, message: str, type_: str = "Normal"
    ) -> None:
        self.events.append((reason, message))

    async def get_namespaced_custom_object(self, *args: Any) -> dict[str, Any]:
        return {"spec": {"result": "full result"}}


def run_obj(
    name: str = "run-a",
    phase: str | None = "Succeeded",
    webhook: dict[str, Any] | None = None,
    annotations: dict[str, str] | None = None,
    url: str | None = "https://hooks.example.com/h",
) -> dict[str, Any]:
    spec: dict[str, Any] = {"prompt": "p"}
    if url:
        spec["webhookUrl"] = url
    status: dict[str, Any] = {}
    if phase:
        status["phase"] = phase
        status["completedAt"] = "2026-11-29T10:00:00Z"
    if webhook is not None:
        status["webhook"] = webhook
    return {
        "apiVersion": "agentrun.dev/v1alpha1",
        "kind": "AgentRun",
        "metadata": {"name": name, "namespace": "default", "annotations": annotations or {}},
        "spec": spec,
        "status": status,
    }


class Recorder:
    def __init__(self, *outcomes: AttemptOutcome) -> None:
        self.outcomes = list(outcomes)
        self.calls: list[tuple[str, bytes, dict[str, str]]] = []

    async def __call__(self, url: str, body: bytes, headers: Any, *args: Any) -> AttemptOutcome:
        self.calls.append((url, body, dict(headers)))
        return (
            self.outcomes.pop(0)
            if self.outcomes
            else AttemptOutcome(kind=AttemptKind.DELIVERED, status_code=200)
        )


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    instance = Recorder()
    monkeypatch.setattr(webhook_handlers, "attempt_delivery", instance)
    return instance


def deliverer(kube: FakeKube, **webhook: Any) -> WebhookDeliverer:
    settings = OperatorSettings(
        webhook={"retry_schedule_seconds": [0, 0.05, 0.05], "jitter_ratio": 0, **webhook}
    )
    return WebhookDeliverer(kube, settings)  # type: ignore[arg-type]


async def test_running_runs_and_runs_without_url_are_ignored(recorder: Recorder) -> None:
    kube = FakeKube()
    d = deliverer(kube)
    for obj in (run_obj(phase="Running"), run_obj(phase=None), run_obj(url=None)):
        await d.on_event("MODIFIED", kube.put(obj))
    assert kube.patches == []
    assert d.pending_count() == 0


async def test_terminal_run_without_state_gets_a_pending_delivery(recorder: Recorder) -> None:
    kube = FakeKube()
    d = deliverer(kube)
    await d.on_event(None, kube.put(run_obj(phase="Failed")))
    (patch,) = kube.patches
    assert patch["webhook"]["state"] == "pending"
    assert patch["webhook"]["id"].startswith("msg_")


def sample(name: str, outcome: str) -> float:
    return REGISTRY.get_sample_value(name, {"outcome": outcome}) or 0.0


async def test_pending_delivery_is_sent_once_and_recorded(recorder: Recorder) -> None:
    attempts_before = sample("agentrun_operator_webhook_attempts_total", "delivered")
    deliveries_before = sample("agentrun_operator_webhook_deliveries_total", "delivered")
    kube = FakeKube()
    d = deliverer(kube)
    obj = kube.put(run_obj(webhook={"state": "pending", "id": "msg_1"}))
    await d.on_event("ADDED", obj)
    await d.on_event("MODIFIED", obj)  # a second event must not start a second task
    assert d.pending_count() == 1
    async with asyncio.timeout(5):
        await d.join()
    assert len(recorder.calls) == 1
    _, body, headers = recorder.calls[0]
    assert headers["webhook-id"] == "msg_1"
    assert b'"result":"full result"' in body
    state = kube.runs["run-a"]["status"]["webhook"]
    assert (state["state"], state["attempts"]) == ("delivered", 1)
    assert [r for r, _ in kube.events] == ["WebhookDelivered"]
    assert sample("agentrun_operator_webhook_attempts_total", "delivered") == attempts_before + 1
    assert (
        sample("agentrun_operator_webhook_deliveries_total", "delivered") == deliveries_before + 1
    )


async def test_retries_are_recorded_before_the_next_attempt(recorder: Recorder) -> None:
    recorder.outcomes = [
        AttemptOutcome(kind=AttemptKind.HTTP_ERROR, status_code=500, error="HTTP 500"),
        AttemptOutcome(kind=AttemptKind.TIMEOUT, error="timed out"),
    ]
    kube = FakeKube()
    d = deliverer(kube)
    await d.on_event("ADDED", kube.put(run_obj(webhook={"state": "pending", "id": "msg_2"})))
    async with asyncio.timeout(5):
        await d.join()
    assert [p["webhook"]["attempts"] for p in kube.patches] == [1, 2, 3]
    assert [p["webhook"]["state"] for p in kube.patches] == ["pending", "pending", "delivered"]
    assert [r for r, _ in kube.events] == [
        "WebhookAttemptFailed",
        "WebhookAttemptFailed",
        "WebhookDelivered",
    ]
    assert {h["webhook-id"] for _, _, h in recorder.calls} == {"msg_2"}


async def test_stale_cache_never_causes_a_send(recorder: Recorder) -> None:
    kube = FakeKube()
    d = deliverer(kube)
    stale = kube.put(run_obj(webhook={"state": "pending", "id": "msg_3"}))
    kube.put(run_obj(webhook={"state": "delivered", "id": "msg_3", "attempts": 1}))
    assert await d.deliver_once("default", "run-a") is not None
    assert recorder.calls == []
    await d.on_event("MODIFIED", stale)
    await asyncio.sleep(0.2)
    assert recorder.calls == []


async def test_not_due_yet_is_not_sent(recorder: Recorder) -> None:
    kube = FakeKube()
    d = deliverer(kube)
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    kube.put(
        run_obj(webhook={"state": "pending", "id": "m", "attempts": 1, "nextAttemptAt": later})
    )
    await d.deliver_once("default", "run-a")
    assert recorder.calls == []


async def test_record_survives_unrelated_conflicts(recorder: Recorder) -> None:
    kube = FakeKube()
    kube.conflicts_to_inject = 2
    d = deliverer(kube)
    kube.put(run_obj(webhook={"state": "pending", "id": "m4"}))
    new = await d.deliver_once("default", "run-a")
    assert new is not None
    assert kube.runs["run-a"]["status"]["webhook"]["state"] == "delivered"


async def test_record_yields_to_a_concurrent_redelivery(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    kube = FakeKube()
    d = deliverer(kube)
    kube.put(run_obj(webhook={"state": "pending", "id": "m5"}))

    async def attempt_while_reset(*args: Any) -> AttemptOutcome:
        # while the attempt is in flight, the delivery is reset by someone else
        kube.put(run_obj(webhook={"state": "pending", "id": "m5", "redeliverToken": "x"}))
        return AttemptOutcome(kind=AttemptKind.HTTP_ERROR, status_code=500)

    monkeypatch.setattr(webhook_handlers, "attempt_delivery", attempt_while_reset)
    current = await d.deliver_once("default", "run-a")
    assert current is not None
    assert (current.state.value, current.attempts, current.redeliver_token) == ("pending", 0, "x")
    assert kube.patches == []  # the outdated outcome was not written over the reset
    assert kube.runs["run-a"]["status"]["webhook"] == {
        "state": "pending",
        "id": "m5",
        "redeliverToken": "x",
    }


async def test_redeliver_annotation(recorder: Recorder) -> None:
    kube = FakeKube()
    d = deliverer(kube)
    delivered = {
        "state": "delivered",
        "id": "m6",
        "attempts": 2,
        "deliveredAt": "2026-11-29T10:00:01Z",
    }
    await d.on_event(
        "MODIFIED",
        kube.put(run_obj(webhook=delivered, annotations={"agentrun.dev/redeliver": "a"})),
    )
    state = kube.runs["run-a"]["status"]["webhook"]
    assert (state["state"], state["id"], state["attempts"]) == ("pending", "m6", 0)
    assert state["redeliverToken"] == "a"
    assert "deliveredAt" not in state
    assert [r for r, _ in kube.events] == ["WebhookRedelivery"]
    # the same value seen again: nothing new
    kube.patches.clear()
    await d.stop()
    d = deliverer(kube)
    done = {**delivered, "redeliverToken": "a"}
    await d.on_event(
        "MODIFIED", kube.put(run_obj(webhook=done, annotations={"agentrun.dev/redeliver": "a"}))
    )
    assert kube.patches == []
    # a new value while a delivery is pending: only recorded
    pending = {"state": "pending", "id": "m6", "redeliverToken": "a"}
    await d.on_event(
        "MODIFIED", kube.put(run_obj(webhook=pending, annotations={"agentrun.dev/redeliver": "b"}))
    )
    (patch,) = kube.patches
    assert (patch["webhook"]["state"], patch["webhook"]["redeliverToken"]) == ("pending", "b")
    await d.stop()


async def test_delete_cancels_the_delivery_task(recorder: Recorder) -> None:
    kube = FakeKube()
    d = deliverer(kube)
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    obj = kube.put(run_obj(webhook={"state": "pending", "id": "m", "nextAttemptAt": later}))
    await d.on_event("ADDED", obj)
    assert d.pending_count() == 1
    await d.on_event("DELETED", obj)
    await asyncio.sleep(0.05)
    assert d.pending_count() == 0
    assert recorder.calls == []

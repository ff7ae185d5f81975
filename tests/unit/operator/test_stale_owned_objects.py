"""A run name reused right after a DELETE never adopts the old run's objects (issue 11, defect
5): on every AlreadyExists the owner uid is checked; another owner's object is deleted (guarded by
its uid) and the create retried, with a log line and an Event. Runs are deleted Foreground."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from agentrun_contract.resource import AgentRun
from agentrun_operator.job_manifest import build_input_secret, build_job_manifest
from agentrun_operator.kube_io import Kube, StaleOwnedObject
from agentrun_operator.settings import OperatorSettings
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from .conftest import Raw

NEW_UID = "uid-new"
OLD_UID = "uid-old"


def run() -> AgentRun:
    return AgentRun.model_validate(
        {
            "apiVersion": "agentrun.dev/v1alpha1",
            "kind": "AgentRun",
            "metadata": {"name": "run-key", "namespace": "default", "uid": NEW_UID},
            "spec": {"prompt": "p"},
        }
    )


def owned_by(body: dict[str, Any], uid: str) -> dict[str, Any]:
    copy_ = copy.deepcopy(body)
    copy_["metadata"]["ownerReferences"][0]["uid"] = uid
    copy_["metadata"]["uid"] = f"obj-of-{uid}"
    return copy_


def already_exists() -> ApiException:
    exc = ApiException(status=409, reason="Conflict")
    exc.body = json.dumps({"reason": "AlreadyExists", "message": "already exists"})
    return exc


class FakeStore:
    """Jobs, Secrets and Events of one namespace; deletes honour uid preconditions."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.deletes: list[tuple[str, str, Any]] = []
        self.events: list[dict[str, Any]] = []

    def create(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        key = (kind, body["metadata"]["name"])
        if key in self.objects:
            raise already_exists()
        stored = copy.deepcopy(body)
        stored["metadata"].setdefault("uid", f"obj-of-{NEW_UID}")
        self.objects[key] = stored
        return stored

    def read(self, kind: str, name: str) -> dict[str, Any]:
        if (kind, name) not in self.objects:
            raise ApiException(status=404, reason="Not Found")
        return copy.deepcopy(self.objects[(kind, name)])

    def delete(self, kind: str, name: str, body: Any) -> None:
        self.deletes.append((kind, name, body))
        stored = self.objects.get((kind, name))
        if stored is None:
            raise ApiException(status=404, reason="Not Found")
        precondition = getattr(getattr(body, "preconditions", None), "uid", None)
        if precondition is not None and precondition != stored["metadata"]["uid"]:
            exc = ApiException(status=409, reason="Conflict")
            exc.body = json.dumps({"reason": "Conflict", "message": "uid precondition"})
            raise exc
        del self.objects[(kind, name)]


class FakeBatch:
    def __init__(self, store: FakeStore) -> None:
        self.store = store

    async def create_namespaced_job(self, namespace: str, body: Any, **_: Any) -> Raw:
        return Raw(self.store.create("Job", body))

    async def read_namespaced_job(self, name: str, namespace: str, **_: Any) -> Raw:
        return Raw(self.store.read("Job", name))

    async def delete_namespaced_job(self, name: str, namespace: str, body: Any = None) -> None:
        self.store.delete("Job", name, body)


class FakeCore:
    def __init__(self, store: FakeStore) -> None:
        self.store = store

    async def create_namespaced_secret(self, namespace: str, body: Any) -> None:
        self.store.create("Secret", body)

    async def read_namespaced_secret(self, name: str, namespace: str, **_: Any) -> Raw:
        return Raw(self.store.read("Secret", name))

    async def delete_namespaced_secret(self, name: str, namespace: str, body: Any = None) -> None:
        self.store.delete("Secret", name, body)

    async def create_namespaced_event(self, namespace: str, body: Any) -> None:
        self.store.events.append(body)


class FakeCustom:
    def __init__(self) -> None:
        self.deleted: list[Any] = []

    async def delete_namespaced_custom_object(self, *args: Any, body: Any = None) -> None:
        self.deleted.append(body)


@pytest.fixture
async def make_kube() -> AsyncIterator[Callable[[FakeStore], Kube]]:
    """A Kube whose Job, Secret, Event and custom-object calls go to a FakeStore."""
    apis: list[client.ApiClient] = []

    def make(store: FakeStore) -> Kube:
        api = client.ApiClient(client.Configuration())
        apis.append(api)
        result = Kube(api)
        result.batch = FakeBatch(store)
        result.core = FakeCore(store)
        result.custom = FakeCustom()
        return result

    yield make
    for api in apis:
        await api.close()


def settings() -> OperatorSettings:
    return OperatorSettings()


async def test_an_old_runs_job_is_replaced_never_adopted(
    make_kube: Callable[[FakeStore], Kube],
) -> None:
    store = FakeStore()
    manifest = build_job_manifest(run(), settings(), "nonce")
    store.objects[("Job", manifest["metadata"]["name"])] = owned_by(manifest, OLD_UID)
    job, created = await make_kube(store).create_job("default", manifest)
    assert created
    assert job["metadata"]["ownerReferences"][0]["uid"] == NEW_UID
    kind, _, options = store.deletes[0]
    assert kind == "Job"
    assert options.preconditions.uid == f"obj-of-{OLD_UID}"
    assert [e["reason"] for e in store.events] == ["StaleObjectReplaced"]
    assert store.events[0]["involvedObject"]["uid"] == NEW_UID


async def test_our_own_job_is_returned_after_a_restart(
    make_kube: Callable[[FakeStore], Kube],
) -> None:
    store = FakeStore()
    manifest = build_job_manifest(run(), settings(), "nonce")
    store.objects[("Job", manifest["metadata"]["name"])] = owned_by(manifest, NEW_UID)
    job, created = await make_kube(store).create_job("default", manifest)
    assert not created
    assert store.deletes == []
    assert job["metadata"]["ownerReferences"][0]["uid"] == NEW_UID


async def test_an_old_runs_input_secret_is_replaced_never_adopted(
    make_kube: Callable[[FakeStore], Kube],
) -> None:
    store = FakeStore()
    secret = build_input_secret(run())
    old = owned_by(secret, OLD_UID)
    old["stringData"] = {"prompt": "the OLD prompt"}
    store.objects[("Secret", secret["metadata"]["name"])] = old
    await make_kube(store).create_secret("default", secret)
    stored = store.objects[("Secret", secret["metadata"]["name"])]
    assert stored["metadata"]["ownerReferences"][0]["uid"] == NEW_UID
    assert stored["stringData"] == secret["stringData"]
    assert store.deletes
    assert store.deletes[0][0] == "Secret"


async def test_an_old_object_that_will_not_go_is_a_retryable_error(
    make_kube: Callable[[FakeStore], Kube],
) -> None:
    store = FakeStore()
    manifest = build_job_manifest(run(), settings(), "nonce")
    stuck = owned_by(manifest, OLD_UID)
    stuck["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"  # finalizers pending
    store.objects[("Job", manifest["metadata"]["name"])] = stuck

    async def no_wait(_: float) -> None:
        return None

    k = make_kube(store)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("agentrun_operator.kube_io.asyncio.sleep", no_wait)
        with pytest.raises(StaleOwnedObject) as raised:
            await k.create_job("default", manifest)
    assert raised.value.retryable
    assert store.objects[("Job", manifest["metadata"]["name"])] is stuck


async def test_runs_are_deleted_foreground(make_kube: Callable[[FakeStore], Kube]) -> None:
    store = FakeStore()
    k = make_kube(store)
    await k.delete_run("default", "run-key")
    assert isinstance(k.custom, FakeCustom)
    assert k.custom.deleted[0].propagation_policy == "Foreground"

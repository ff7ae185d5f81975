"""Leader election fails closed (issue 11, defect 3): transport errors never count as acquired,
renewals survive blips until the renew deadline, expiry is judged by locally observed time, and
a replica that lost the Lease starts no run task."""

from __future__ import annotations

import asyncio
import copy
import json
from typing import Any

import aiohttp
import pytest
from agentrun_operator.leader import LeaderElector, LeaseObserver, micro_time
from agentrun_operator.main import wait_for_lease
from agentrun_operator.reconciler import RunContext
from agentrun_operator.settings import LeaderElectionSettings, OperatorSettings
from kubernetes_asyncio.client.exceptions import ApiException

from .conftest import Raw

SKEWED_PAST = "2001-01-01T00:00:00.000000Z"
SKEWED_FUTURE = "2099-01-01T00:00:00.000000Z"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def lease(holder: str | None, renew: str, duration: int = 15) -> dict[str, Any]:
    return {
        "metadata": {"name": "l", "resourceVersion": "1"},
        "spec": {"holderIdentity": holder, "renewTime": renew, "leaseDurationSeconds": duration},
    }


def test_expiry_is_judged_by_our_clock_never_by_the_holders_renew_time() -> None:
    clock = FakeClock()
    observer = LeaseObserver("me", clock)
    # A holder whose clock is years behind: its renewTime alone would say "expired long ago".
    observer.observe(lease("other", SKEWED_PAST))
    assert not observer.is_free()
    clock.now += 14
    observer.observe(lease("other", SKEWED_PAST))  # unchanged record: no renewal seen
    assert not observer.is_free()
    clock.now += 2
    assert observer.is_free()
    # It renews (the record changes, whatever its clock says): valid again for a duration.
    observer.observe(lease("other", "2001-01-01T00:00:05.000000Z"))
    assert not observer.is_free()
    # A holder whose clock runs ahead does not stay leader forever once it stops renewing.
    observer.observe(lease("other", SKEWED_FUTURE))
    clock.now += 16
    assert observer.is_free()
    assert LeaseObserver("me", clock).observe(None) is None


def test_a_released_or_own_lease_is_free_at_once() -> None:
    observer = LeaseObserver("me", FakeClock())
    observer.observe(lease(None, SKEWED_FUTURE))
    assert observer.is_free()
    observer.observe(lease("me", SKEWED_FUTURE))
    assert observer.is_free()


class FakeCoordination:
    """The Lease API of an apiserver, with switchable transport failures."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.version = 0
        self.failing: BaseException | None = None
        self.writes: list[str] = []

    def _fail(self) -> None:
        if self.failing is not None:
            raise self.failing

    async def read_namespaced_lease(self, name: str, namespace: str, **_: Any) -> Raw:
        self._fail()
        if self.lease is None:
            raise ApiException(status=404, reason="Not Found")
        return Raw(self.lease)

    async def create_namespaced_lease(self, namespace: str, body: dict[str, Any]) -> None:
        self._fail()
        if self.lease is not None:
            exc = ApiException(status=409, reason="Conflict")
            exc.body = json.dumps({"reason": "AlreadyExists", "message": "exists"})
            raise exc
        self._store(body)

    async def replace_namespaced_lease(
        self, name: str, namespace: str, body: dict[str, Any]
    ) -> None:
        self._fail()
        if str(body["metadata"].get("resourceVersion")) != str(self.version):
            exc = ApiException(status=409, reason="Conflict")
            exc.body = json.dumps({"reason": "Conflict", "message": "stale"})
            raise exc
        self._store(body)

    def _store(self, body: dict[str, Any]) -> None:
        self.version += 1
        self.lease = copy.deepcopy(body)
        self.lease["metadata"]["resourceVersion"] = str(self.version)
        self.writes.append(str(body["spec"].get("holderIdentity")))


def elector(coordination: FakeCoordination, identity: str, **overrides: float) -> LeaderElector:
    settings = LeaderElectionSettings(
        **{"lease_duration_seconds": 1.5, "renew_seconds": 0.1, "retry_seconds": 0.02, **overrides}
    )
    result = LeaderElector(object(), settings, "default", identity)  # type: ignore[arg-type]
    result.coordination = coordination
    return result


TRANSPORT_FAILURES = [
    aiohttp.ClientConnectionError("connection refused"),
    aiohttp.ServerDisconnectedError(),
    TimeoutError(),
]


@pytest.mark.parametrize("failure", TRANSPORT_FAILURES, ids=lambda e: type(e).__name__)
async def test_acquire_retries_transport_errors_and_returns_only_with_the_lease(
    failure: BaseException,
) -> None:
    api = FakeCoordination()
    api.failing = failure
    candidate = elector(api, "me")
    task = asyncio.create_task(candidate.acquire())
    await asyncio.sleep(0.2)
    assert not task.done(), "acquire returned (or raised) without the Lease"
    assert not candidate.leading
    api.failing = None
    await asyncio.wait_for(task, 5)
    assert candidate.leading
    assert api.lease is not None
    assert api.lease["spec"]["holderIdentity"] == "me"


async def test_wait_for_lease_fails_closed_when_acquiring_crashes() -> None:
    api = FakeCoordination()
    candidate = elector(api, "me")

    async def crash() -> None:
        raise RuntimeError("boom")

    candidate.acquire = crash  # type: ignore[method-assign]
    assert await wait_for_lease(candidate, asyncio.Event()) is False


async def test_wait_for_lease_is_true_only_with_the_lease() -> None:
    api = FakeCoordination()
    candidate = elector(api, "me")
    assert await asyncio.wait_for(wait_for_lease(candidate, asyncio.Event()), 5) is True
    stop = asyncio.Event()
    stop.set()
    api.lease = lease("other", micro_time_now())
    api.version = int(api.lease["metadata"]["resourceVersion"])
    other = elector(api, "me-too")
    assert await asyncio.wait_for(wait_for_lease(other, stop), 5) is False


def micro_time_now() -> str:
    from datetime import UTC, datetime

    return micro_time(datetime.now(UTC))


async def test_hold_tolerates_a_blip_shorter_than_the_renew_deadline() -> None:
    api = FakeCoordination()
    leader = elector(api, "me", lease_duration_seconds=1.5, renew_seconds=0.1)
    await leader.acquire()
    hold = asyncio.create_task(leader.hold())
    await asyncio.sleep(0.2)
    api.failing = aiohttp.ServerDisconnectedError()
    await asyncio.sleep(0.6)  # the renew deadline is 1.4 s
    assert not hold.done(), "a short blip ended leadership"
    api.failing = None
    await asyncio.sleep(0.3)
    assert not hold.done()
    assert leader.leading
    hold.cancel()


async def test_hold_gives_up_at_the_renew_deadline_before_anyone_may_take_over() -> None:
    api = FakeCoordination()
    leader = elector(api, "me", lease_duration_seconds=1.0, renew_seconds=0.2)
    await leader.acquire()
    acquired_at = asyncio.get_running_loop().time()
    api.failing = aiohttp.ClientConnectionError("refused")
    await asyncio.wait_for(leader.hold(), 5)
    lost_after = asyncio.get_running_loop().time() - acquired_at
    assert not leader.leading
    # Given up at the deadline (duration - renew = 0.8 s), well before the 1.0 s lease ends.
    assert 0.7 <= lost_after < 1.0, lost_after


async def test_hold_returns_at_once_when_another_holder_is_seen() -> None:
    api = FakeCoordination()
    leader = elector(api, "me")
    await leader.acquire()
    assert api.lease is not None
    api.lease["spec"]["holderIdentity"] = "usurper"
    await asyncio.wait_for(leader.hold(), 2)
    assert not leader.leading


class NoCalls:
    """A Kubernetes client that must not be used."""

    def size_log_pool(self, _: int) -> None:
        return None

    async def close_log_pool(self) -> None:
        return None

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"a stopped operator called kube.{name}")


async def test_after_stop_no_run_task_acts() -> None:
    ctx = RunContext(OperatorSettings(), NoCalls())  # type: ignore[arg-type]
    await ctx.stop()
    body = {
        "metadata": {"name": "run-late", "namespace": "default", "resourceVersion": "5"},
        "spec": {"prompt": "p"},
    }
    ctx.observe_run(body, deleted=False)  # kopf still delivering events before it stops
    tasks = list(ctx.tasks.values())
    await asyncio.gather(*tasks)
    assert not ctx.tasks

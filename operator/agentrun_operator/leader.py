"""Lease-based leader election (coordination.k8s.io/v1): exactly one replica reconciles.

kopf's peering only pauses operators; it is not leader election. A replica runs kopf only while
it holds the Lease. The protocol is client-go's leaderelection, and so is its rule about time:
**no decision compares another replica's clock with ours.** A candidate records, on its own
monotonic clock, when it *observed* the Lease's record (holder, renewTime, transitions) change;
the holder's lease is expired only once ``leaseDurationSeconds`` have passed on our clock since
that observation. A holder's ``renewTime`` is only ever compared for equality.

- **acquire** fails closed: it returns only once this replica holds the Lease. A Lease is free
  when it has no holder, is ours, or was not renewed for a whole lease duration of our observing
  it. It is taken with an update guarded by its resourceVersion, so two candidates racing for
  it cannot both win (one gets 409 Conflict). API errors and transport errors (refused, reset,
  timed out) are logged and retried; none of them is ever taken for success.
- **hold** renews every ``renew_seconds`` (retrying every ``retry_seconds`` after a failure).
  Errors are tolerated until the renew deadline, ``lease_duration - renew`` seconds after the
  last successful renewal by our clock (measured from *before* that request was sent, so it
  errs early); past it, or as soon as another holder is seen, :meth:`LeaderElector.hold`
  returns: leadership is lost. Another replica can take over no earlier than one whole lease
  duration after it observed our last renewal, so the ``renew`` seconds in between are the time
  the caller has to stop acting (:mod:`agentrun_operator.main` cancels every run task before it
  stops kopf, then exits non-zero so Kubernetes restarts the replica as a fresh candidate).
- **release** on a clean shutdown (holder cleared), so another replica takes over at once.

Every Lease call has a timeout shorter than the renew interval: a half-open connection must not
hold a renewal past the deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from agentrun_kube.errors import (
    TRANSPORT_ERRORS,
    AlreadyExists,
    Conflict,
    KubeError,
    NotFound,
    from_api_exception,
    from_transport_error,
)
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from agentrun_operator.kube_io import read_json
from agentrun_operator.settings import LeaderElectionSettings

log = logging.getLogger("agentrun.operator")

Obj = dict[str, Any]


def default_identity() -> str:
    return f"{os.environ.get('HOSTNAME') or socket.gethostname()}-{secrets.token_hex(4)}"


def micro_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclasses.dataclass(frozen=True)
class LeaseRecord:
    """What identifies one renewal of a Lease (compared for equality, never as times)."""

    holder: str | None
    renew_time: str | None
    transitions: int
    duration_seconds: float

    @classmethod
    def of(cls, lease: Obj | None) -> LeaseRecord | None:
        if lease is None:
            return None
        spec = lease.get("spec") or {}
        return cls(
            holder=spec.get("holderIdentity") or None,
            renew_time=spec.get("renewTime") or spec.get("acquireTime"),
            transitions=int(spec.get("leaseTransitions") or 0),
            duration_seconds=float(spec.get("leaseDurationSeconds") or 0),
        )


class LeaseObserver:
    """Judges a Lease by when *this* process saw its record change (client-go's rule).

    ``clock`` is monotonic seconds (``time.monotonic`` in production; a fake in unit tests).
    """

    def __init__(self, identity: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.identity = identity
        self.clock = clock
        self.record: LeaseRecord | None = None
        self.observed_at = 0.0

    def observe(self, lease: Obj | None) -> LeaseRecord | None:
        """Note the Lease as just read; a changed record restarts its expiry on our clock."""
        record = LeaseRecord.of(lease)
        if record != self.record:
            self.record = record
            self.observed_at = self.clock()
        return record

    def is_free(self) -> bool:
        """May we take (or keep) the Lease as last observed?"""
        record = self.record
        if record is None or not record.holder or record.holder == self.identity:
            return True
        return self.clock() > self.observed_at + record.duration_seconds


class LeaderElector:
    """Acquire, hold and release one Lease (see the module docstring)."""

    def __init__(
        self,
        api: client.ApiClient,
        settings: LeaderElectionSettings,
        namespace: str,
        identity: str | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.coordination: Any = client.CoordinationV1Api(api)
        self.settings = settings
        self.namespace = namespace
        self.name = settings.lease_name
        self.identity = identity or settings.identity or default_identity()
        self.clock = clock
        self.observer = LeaseObserver(self.identity, clock)
        self.leading = False
        self.lease_uid: str | None = None
        self.renewed_at = 0.0
        """Our clock, just before the request of the last successful acquire or renewal."""

    @property
    def renew_deadline_seconds(self) -> float:
        """How long the leader keeps acting without a successful renewal."""
        return max(
            self.settings.lease_duration_seconds - self.settings.renew_seconds,
            self.settings.renew_seconds,
        )

    @property
    def call_timeout_seconds(self) -> float:
        return max(0.5, min(self.settings.renew_seconds, self.renew_deadline_seconds / 2))

    async def _lease_call(self, call: Any) -> Any:
        """Await one Lease call; every failure raised as a typed KubeError."""
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
            # races with the call's completion, and a cancelled acquire must stop.
            async with asyncio.timeout(self.call_timeout_seconds):
                return await call
        except ApiException as exc:
            raise from_api_exception(exc) from exc
        except TRANSPORT_ERRORS as exc:
            raise from_transport_error(exc) from exc

    async def _read(self) -> Obj | None:
        try:
            response = await self._lease_call(
                self.coordination.read_namespaced_lease(
                    self.name, self.namespace, _preload_content=False
                )
            )
            lease = await read_json(response)
            self.lease_uid = (lease.get("metadata") or {}).get("uid") or self.lease_uid
            return lease
        except NotFound:
            return None
        except TRANSPORT_ERRORS as exc:  # reading the body
            raise from_transport_error(exc) from exc

    async def _write(self, lease: Obj | None, *, take: bool) -> bool:
        """Create or update the Lease as ours; False when another writer won the race."""
        now = datetime.now(UTC)
        spec = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(self.settings.lease_duration_seconds)),
            "renewTime": micro_time(now),
        }
        try:
            if lease is None:
                body = {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": {**spec, "acquireTime": micro_time(now), "leaseTransitions": 0},
                }
                await self._lease_call(
                    self.coordination.create_namespaced_lease(self.namespace, body)
                )
                return True
            old = lease.get("spec") or {}
            new_spec = {**old, **spec}
            if take and old.get("holderIdentity") != self.identity:
                new_spec["acquireTime"] = micro_time(now)
                new_spec["leaseTransitions"] = int(old.get("leaseTransitions") or 0) + 1
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {
                    "name": self.name,
                    "namespace": self.namespace,
                    "resourceVersion": (lease.get("metadata") or {}).get("resourceVersion"),
                },
                "spec": new_spec,
            }
            await self._lease_call(
                self.coordination.replace_namespaced_lease(self.name, self.namespace, body)
            )
            return True
        except (Conflict, AlreadyExists):
            return False

    async def try_acquire(self) -> bool:
        """One attempt: True only if this replica now holds the Lease. Raises KubeError."""
        started = self.clock()
        lease = await self._read()
        self.observer.observe(lease)
        if not self.observer.is_free():
            return False
        if not await self._write(lease, take=True):
            return False
        self.leading = True
        self.renewed_at = started
        return True

    async def acquire(self) -> None:
        """Return once this replica holds the Lease; never on an error (fails closed)."""
        while True:
            try:
                if await self.try_acquire():
                    log.info("leader lease acquired", extra={"identity": self.identity})
                    return
            except KubeError as exc:
                log.warning(
                    "leader election: cannot reach the Lease (%s); retrying",
                    exc,
                    extra={"identity": self.identity},
                )
            await asyncio.sleep(self.settings.retry_seconds)

    async def renew(self) -> bool | None:
        """One renewal: True renewed, False taken over by another holder, None not renewed
        this time (a race or an error; retried until the deadline). Never raises KubeError."""
        started = self.clock()
        try:
            lease = await self._read()
            record = self.observer.observe(lease)
            if record is not None and record.holder != self.identity:
                log.error(
                    "leader lease taken over by %s",
                    record.holder,
                    extra={"identity": self.identity},
                )
                return False
            if await self._write(lease, take=False):
                self.renewed_at = started
                return True
        except KubeError as exc:
            log.warning(
                "leader lease renewal failed (%s); %.1f s left before giving up leadership",
                exc,
                self.renewed_at + self.renew_deadline_seconds - self.clock(),
                extra={"identity": self.identity},
            )
        return None

    async def hold(self) -> None:
        """Renew until leadership is lost; then return (the caller stops acting at once)."""
        pause = self.settings.renew_seconds
        while True:
            left = self.renewed_at + self.renew_deadline_seconds - self.clock()
            await asyncio.sleep(max(0.0, min(pause, left)))
            left = self.renewed_at + self.renew_deadline_seconds - self.clock()
            if left <= 0:
                log.error(
                    "leader lease not renewed for %.1f s: giving up leadership",
                    self.clock() - self.renewed_at,
                    extra={"identity": self.identity},
                )
                break
            outcome: bool | None = None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    outcome = await self.renew()
            if outcome is False:
                break
            pause = self.settings.renew_seconds if outcome else self.settings.retry_seconds
        self.leading = False

    async def release(self) -> None:
        """Give the Lease up (best effort) so another replica takes over at once."""
        if not self.leading:
            return
        self.leading = False
        try:
            lease = await self._read()
            if lease is None or (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            spec = dict(lease.get("spec") or {})
            spec["holderIdentity"] = None
            spec["renewTime"] = micro_time(datetime(1970, 1, 1, tzinfo=UTC))
            lease["spec"] = spec
            await self._lease_call(
                self.coordination.replace_namespaced_lease(self.name, self.namespace, lease)
            )
        except KubeError as exc:
            log.warning("leader lease not released: %s", exc, extra={"identity": self.identity})

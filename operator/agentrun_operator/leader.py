"""Lease-based leader election (coordination.k8s.io/v1): exactly one replica reconciles.

kopf's peering only pauses operators; it is not leader election. A replica runs kopf only while
it holds the Lease. Protocol (as client-go's leaderelection):

- acquire: the Lease is free when it has no holder, or its ``renewTime`` is older than
  ``leaseDurationSeconds``; take it with an update guarded by its resourceVersion, so two
  candidates racing for it cannot both win (one gets 409 Conflict);
- hold: renew every ``renew_seconds`` (guarded the same way). If the Lease was taken over, or no
  renewal succeeded for ``lease_duration - renew`` seconds (before anyone else may take it), the
  replica has lost leadership: :meth:`LeaderElector.hold` returns, and the process stops
  reconciling at once and exits non-zero, so Kubernetes restarts it as a fresh candidate;
- release on a clean shutdown (holder cleared), so another replica takes over without waiting.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from agentrun_kube.errors import AlreadyExists, Conflict, KubeError, NotFound, from_api_exception
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from agentrun_operator.kube_io import read_json
from agentrun_operator.run_status import parse_time
from agentrun_operator.settings import LeaderElectionSettings

log = logging.getLogger("agentrun.operator")


def default_identity() -> str:
    return f"{os.environ.get('HOSTNAME') or socket.gethostname()}-{secrets.token_hex(4)}"


def micro_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease_is_free(lease: dict[str, Any], identity: str, now: datetime) -> bool:
    """May ``identity`` take (or keep) this Lease at ``now``? Pure, for tests."""
    spec = lease.get("spec") or {}
    holder = spec.get("holderIdentity")
    if not holder or holder == identity:
        return True
    renewed = parse_time(spec.get("renewTime")) or parse_time(spec.get("acquireTime"))
    if renewed is None:
        return True
    duration = float(spec.get("leaseDurationSeconds") or 0)
    return now > renewed + timedelta(seconds=duration)


class LeaderElector:
    """Acquire, hold and release one Lease."""

    def __init__(
        self,
        api: client.ApiClient,
        settings: LeaderElectionSettings,
        namespace: str,
        identity: str | None = None,
    ) -> None:
        self.coordination: Any = client.CoordinationV1Api(api)
        self.settings = settings
        self.namespace = namespace
        self.name = settings.lease_name
        self.identity = identity or settings.identity or default_identity()
        self.leading = False

    async def _read(self) -> dict[str, Any] | None:
        try:
            response = await self.coordination.read_namespaced_lease(
                self.name, self.namespace, _preload_content=False
            )
            return await read_json(response)
        except ApiException as exc:
            error = from_api_exception(exc)
            if isinstance(error, NotFound):
                return None
            raise error from exc
        except NotFound:
            return None

    async def _write(self, lease: dict[str, Any] | None, *, take: bool) -> bool:
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
                await self.coordination.create_namespaced_lease(self.namespace, body)
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
            await self.coordination.replace_namespaced_lease(self.name, self.namespace, body)
            return True
        except ApiException as exc:
            error = from_api_exception(exc)
            if isinstance(error, (Conflict, AlreadyExists)):
                return False
            raise error from exc

    async def try_acquire(self) -> bool:
        lease = await self._read()
        if lease is not None and not lease_is_free(lease, self.identity, datetime.now(UTC)):
            return False
        won = await self._write(lease, take=True)
        self.leading = won
        return won

    async def acquire(self) -> None:
        """Return once this replica holds the Lease."""
        while True:
            try:
                if await self.try_acquire():
                    log.info("leader lease acquired", extra={"identity": self.identity})
                    return
            except KubeError as exc:
                log.warning("leader election: %s", exc)
            await asyncio.sleep(self.settings.retry_seconds)

    async def hold(self) -> None:
        """Renew until leadership is lost; then return (the caller stops reconciling)."""
        last_renewal = time.monotonic()
        deadline = max(
            self.settings.lease_duration_seconds - self.settings.renew_seconds,
            self.settings.renew_seconds,
        )
        while True:
            await asyncio.sleep(self.settings.renew_seconds)
            try:
                lease = await self._read()
                holder = ((lease or {}).get("spec") or {}).get("holderIdentity")
                if lease is not None and holder != self.identity:
                    log.error("leader lease taken over by %s", holder)
                    break
                if await self._write(lease, take=False):
                    last_renewal = time.monotonic()
                    continue
            except KubeError as exc:
                log.warning("leader lease renewal failed: %s", exc)
            if time.monotonic() - last_renewal > deadline:
                log.error("leader lease not renewed for %.1f s", time.monotonic() - last_renewal)
                break
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
            await self.coordination.replace_namespaced_lease(self.name, self.namespace, lease)
        except (ApiException, KubeError) as exc:
            log.warning("leader lease not released: %s", exc)

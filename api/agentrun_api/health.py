"""Readiness: can this process reach the Kubernetes API? Cheap and cached (``/health``)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from kubernetes_asyncio import client


@dataclass(frozen=True)
class Verdict:
    reachable: bool
    detail: str | None
    at: float


class KubeHealthProbe:
    """Asks ``/version`` with a short timeout; reuses a verdict for ``cache_seconds``.

    Concurrent probes share one call, so a burst of readiness checks makes one request.
    """

    def __init__(
        self, api_client: client.ApiClient, *, cache_seconds: float, timeout_seconds: float
    ) -> None:
        self._version = client.VersionApi(api_client)
        self._cache_seconds = cache_seconds
        self._timeout = timeout_seconds
        self._verdict: Verdict | None = None
        self._lock = asyncio.Lock()

    async def check(self) -> Verdict:
        verdict = self._verdict
        if verdict is not None and time.monotonic() - verdict.at < self._cache_seconds:
            return verdict
        async with self._lock:
            verdict = self._verdict
            if verdict is not None and time.monotonic() - verdict.at < self._cache_seconds:
                return verdict
            try:
                await asyncio.wait_for(
                    self._version.get_code(_request_timeout=self._timeout), self._timeout
                )
                verdict = Verdict(True, None, time.monotonic())
            except Exception as exc:  # any failure means "not reachable"
                verdict = Verdict(
                    False, f"Kubernetes API unreachable: {type(exc).__name__}", time.monotonic()
                )
            self._verdict = verdict
            return verdict

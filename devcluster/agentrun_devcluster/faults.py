"""Fault injection for the fake kubelet: make matching pods fail the way real clusters fail.

Rules match pods by labels (every selector pair must be present). Tests add them in-process
(``FaultInjector.add({"agentrun.dev/run": name}, Fault.EVICT)``) or over HTTP through the emulated
apiserver (``POST /_emulator/faults`` with ``{"selector": {...}, "fault": "evict"}``, optional
``"after_seconds"``; ``GET`` lists them; ``DELETE /_emulator/faults`` clears them all).

Faults (a missing Secret needs none: it is real, see kubelet.py):

- ``image_pull``: the container waits with ``ErrImagePull``, then ``ImagePullBackOff``, forever.
- ``unschedulable``: the pod stays Pending with ``PodScheduled=False`` reason ``Unschedulable``.
- ``evict``: once the container runs (plus ``after_seconds``), the pod gets the condition
  ``DisruptionTarget`` reason ``EvictionByEvictionAPI`` and is deleted with its grace period, as
  the eviction API does; the kubelet then terminates it and it ends in phase ``Failed``.
- ``oom_kill``: once the container runs (plus ``after_seconds``), its processes are SIGKILLed and
  it terminates with reason ``OOMKilled``, exit code 137.

Rules are evaluated when the kubelet reaches the matching step, so a rule added after a pod has
started still applies to ``evict``/``oom_kill`` (checked while it runs), not to scheduling.
"""

from __future__ import annotations

import enum
import json
import threading
from dataclasses import dataclass
from typing import Any

from aiohttp import web


class Fault(enum.StrEnum):
    IMAGE_PULL = "image_pull"
    UNSCHEDULABLE = "unschedulable"
    EVICT = "evict"
    OOM_KILL = "oom_kill"


@dataclass(frozen=True)
class FaultRule:
    selector: dict[str, str]
    fault: Fault
    after_seconds: float = 0.0

    def matches(self, labels: dict[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.selector.items())

    def to_json(self) -> dict[str, Any]:
        return {
            "selector": dict(self.selector),
            "fault": self.fault.value,
            "after_seconds": self.after_seconds,
        }


class FaultInjector:
    """Thread-safe set of fault rules (tests add rules from pytest's thread)."""

    def __init__(self) -> None:
        self._rules: list[FaultRule] = []
        self._lock = threading.Lock()

    def add(self, selector: dict[str, str], fault: Fault | str, after_seconds: float = 0.0) -> None:
        rule = FaultRule(dict(selector), Fault(fault), float(after_seconds))
        with self._lock:
            self._rules.append(rule)

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def rules(self) -> list[FaultRule]:
        with self._lock:
            return list(self._rules)

    def find(self, labels: dict[str, str] | None, fault: Fault) -> FaultRule | None:
        """The first rule for ``fault`` whose selector matches ``labels``."""
        labels = labels or {}
        for rule in self.rules():
            if rule.fault == fault and rule.matches(labels):
                return rule
        return None

    # HTTP: registered on the emulated apiserver with add_route

    def install_routes(self, server: Any) -> None:
        """Serve ``/_emulator/faults`` (GET, POST, DELETE) on an EmulatedAPIServer."""
        server.add_route("GET", "/_emulator/faults", self._http_list)
        server.add_route("POST", "/_emulator/faults", self._http_add)
        server.add_route("DELETE", "/_emulator/faults", self._http_clear)

    async def _http_list(self, request: web.Request) -> web.Response:
        return web.json_response({"rules": [r.to_json() for r in self.rules()]})

    async def _http_add(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read())
            selector = body["selector"]
            if not isinstance(selector, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in selector.items()
            ):
                raise ValueError("selector must be an object of string labels")
            fault = Fault(body["fault"])
            after = float(body.get("after_seconds", 0.0))
        except (ValueError, KeyError, TypeError) as exc:
            choices = ", ".join(f.value for f in Fault)
            return web.json_response(
                {
                    "error": f"bad fault rule: {exc}. Send "
                    f'{{"selector": {{"label": "value"}}, "fault": one of {choices}}}'
                },
                status=400,
            )
        self.add(selector, fault, after)
        return web.json_response({"rules": [r.to_json() for r in self.rules()]}, status=201)

    async def _http_clear(self, request: web.Request) -> web.Response:
        self.clear()
        return web.json_response({"rules": []})

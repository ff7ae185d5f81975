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

The same endpoint switches the apiserver's own faults (apiserver/faults.py: ``log_cut``,
``log_disconnect``, ``drop``, ``hang``, ``stall``, ``throttle``, ``server_error``, ``restart``,
``compact``): ``POST /_emulator/faults`` with ``{"fault": "throttle", "rate": 0.5, "times": 3}``
(any :class:`~agentrun_devcluster.apiserver.faults.APIFaultRule` field) adds a request fault;
``{"fault": "restart", "down_seconds": 1}`` restarts the apiserver (202: it happens right after
the answer); ``{"fault": "compact", "delete_jobs": {"label": "value"}}`` compacts (200, with the
deleted Jobs); ``{"fault": "chaos", "faults": "all", "seed": 1, "rate": 0.02, ...}`` starts random
mode (:class:`~agentrun_devcluster.apiserver.faults.ChaosConfig` fields). ``GET`` adds
``api_rules``, ``chaos`` and ``fired`` (counts per fault); ``DELETE`` clears these too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import json
import random
import threading
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from agentrun_devcluster.apiserver.faults import (
    ACTION_FAULTS,
    APIFault,
    APIFaultRule,
    ChaosConfig,
    parse_fault_list,
)


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
        self._server: Any = None
        self._actions: set[asyncio.Task[Any]] = set()

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
        self._server = server
        server.add_route("GET", "/_emulator/faults", self._http_list)
        server.add_route("POST", "/_emulator/faults", self._http_add)
        server.add_route("DELETE", "/_emulator/faults", self._http_clear)

    def _listing(self) -> dict[str, Any]:
        body: dict[str, Any] = {"rules": [r.to_json() for r in self.rules()]}
        if self._server is not None:
            body.update(self._server.faults.to_json())
        return body

    async def _http_list(self, request: web.Request) -> web.Response:
        return web.json_response(self._listing())

    async def _http_add(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read())
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
        except ValueError as exc:
            return web.json_response({"error": f"bad fault rule: {exc}"}, status=400)
        name = body.get("fault")
        if self._server is not None and (name == "chaos" or name in set(APIFault)):
            return await self._http_add_api_fault(body)
        try:
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
        return web.json_response(self._listing(), status=201)

    async def _http_add_api_fault(self, body: dict[str, Any]) -> web.Response:
        server = self._server
        params = {k: v for k, v in body.items() if k != "fault"}
        try:
            if body["fault"] == "chaos":
                config = chaos_config(
                    parse_fault_list(str(params.pop("faults", "all"))),
                    seed=params.pop("seed", None),
                    **params,
                )
                server.start_chaos(config)
                return web.json_response(self._listing(), status=201)
            fault = APIFault(body["fault"])
            if fault == APIFault.RESTART:
                down = float(params.get("down_seconds", 1.0))
                # After this answer is sent: a restart drops this connection too.
                task = asyncio.create_task(_after(0.05, server.restart(down)))
                self._actions.add(task)
                task.add_done_callback(self._actions.discard)
                return web.json_response({"restarting": True, "down_seconds": down}, status=202)
            if fault == APIFault.COMPACT:
                selector = params.get("delete_jobs")
                if selector is not None and not (
                    isinstance(selector, dict)
                    and all(isinstance(k, str) and isinstance(v, str) for k, v in selector.items())
                ):
                    raise ValueError("delete_jobs must be an object of string labels")
                deleted = await server.compact(selector)
                return web.json_response({"deleted_jobs": deleted})
            rule_fields = {f.name for f in dataclasses.fields(APIFaultRule)} - {"fault", "fired"}
            unknown = set(params) - rule_fields
            if unknown:
                raise ValueError(
                    f"unknown field(s) {sorted(unknown)}; known: {sorted(rule_fields)}"
                )
            server.faults.add(fault, **params)
        except (ValueError, TypeError, KeyError) as exc:
            return web.json_response({"error": f"bad fault: {exc}"}, status=400)
        return web.json_response(self._listing(), status=201)

    async def _http_clear(self, request: web.Request) -> web.Response:
        self.clear()
        if self._server is not None:
            self._server.faults.clear()
            self._server.stop_chaos()
        return web.json_response(self._listing())


async def _after(delay: float, action: Any) -> None:
    await asyncio.sleep(delay)
    await action


def chaos_config(
    faults: frozenset[APIFault], seed: int | None = None, **params: Any
) -> ChaosConfig:
    """A :class:`ChaosConfig`; a random seed when none is given (print ``config.seed``)."""
    if seed is None:
        seed = random.SystemRandom().randrange(1 << 31)
    return ChaosConfig(faults=faults, seed=int(seed), **params)


__all__ = [
    "ACTION_FAULTS",
    "APIFault",
    "ChaosConfig",
    "Fault",
    "FaultInjector",
    "FaultRule",
    "chaos_config",
    "parse_fault_list",
]

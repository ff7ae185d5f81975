"""Faults of the apiserver itself: what a real cluster's control plane does to its clients.

The emulated apiserver is polite by default. An :class:`APIFaultInjector` (every
:class:`~.server.EmulatedAPIServer` has one, ``server.faults``, inactive until given rules) makes
it throw, to every client whose bearer token is not a system token (:data:`SYSTEM_TOKEN`: the
fake kubelet and Job controller, which stand for cluster components, and test checkers):

Request faults (a rule fires on a fraction ``rate`` of the requests it matches, at most ``times``
times):

- ``log_cut``: a pod-log follow is cut in the middle of an HTTP chunk (after ``after_bytes``
  bytes of log), and the connection is closed: the client reads a partial line, then "payload
  not completed" (aiohttp ``ClientPayloadError``).
- ``log_disconnect``: a pod-log follow ends cleanly (terminating chunk) after ``after_bytes``
  bytes while the container still runs, and the server closes the connection, as an apiserver
  or kubelet going away gracefully does: the client sees an ordinary end of the log.
- ``drop``: the connection is closed before any answer (aiohttp ``ServerDisconnectedError``).
- ``hang``: the request is held open and answered nothing (a half-open connection) for
  ``seconds``, then the connection is reset.
- ``stall``: a watch (after its first events) or a pod-log follow (after ``after_bytes``)
  goes silent while its connection stays open (a half-open stream: a NAT or load balancer
  that forgot it), for ``seconds``, then the connection is reset.
- ``throttle``: a write (POST/PUT/PATCH/DELETE) is refused with 429 ``TooManyRequests`` and
  ``Retry-After: <retry_after>`` (API Priority and Fairness), and not applied.
- ``server_error``: a write is refused with 500 ``InternalError``, and not applied.

Actions (the server does them at once: :meth:`.server.EmulatedAPIServer.restart` and
:meth:`.server.EmulatedAPIServer.compact`):

- ``restart``: every client connection is dropped (in-flight requests, watches, log follows),
  new connections are reset for ``down_seconds``, objects are kept, and the watch history is
  gone (a watch resuming from an earlier resourceVersion gets 410 Gone, as from a restarted
  apiserver's fresh watch cache).
- ``compact``: open watches end, Jobs matching ``delete_jobs`` (a label selector) are deleted,
  then history is compacted, so clients resume into 410 Gone and must relist to notice what
  went away in the gap.

Random mode (:class:`ChaosConfig`, ``agentrun dev --faults``): each client request gets a request
fault that applies to it with probability ``rate``; restarts and compactions come at random
intervals of mean ``interval_seconds``. All choices come from one ``random.Random(seed)``.
"""

from __future__ import annotations

import enum
import random
import re
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

SYSTEM_TOKEN = "agentrun-emulator-system"
"""Bearer token of clients that faults never hit (the in-process kubelet and Job controller,
test checkers). Everything else, the operator and the API included, gets the faults."""

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class APIFault(enum.StrEnum):
    LOG_CUT = "log_cut"
    LOG_DISCONNECT = "log_disconnect"
    DROP = "drop"
    HANG = "hang"
    STALL = "stall"
    THROTTLE = "throttle"
    SERVER_ERROR = "server_error"
    RESTART = "restart"
    COMPACT = "compact"


REQUEST_FAULTS = frozenset(
    {
        APIFault.LOG_CUT,
        APIFault.LOG_DISCONNECT,
        APIFault.DROP,
        APIFault.HANG,
        APIFault.STALL,
        APIFault.THROTTLE,
        APIFault.SERVER_ERROR,
    }
)
ACTION_FAULTS = frozenset({APIFault.RESTART, APIFault.COMPACT})
LOG_FAULTS = frozenset({APIFault.LOG_CUT, APIFault.LOG_DISCONNECT})
WRITE_FAULTS = frozenset({APIFault.THROTTLE, APIFault.SERVER_ERROR})


@dataclass(frozen=True)
class RequestInfo:
    """What a fault rule looks at: the client's method and path, and the kind of request."""

    method: str
    path: str
    log_follow: bool = False
    watch: bool = False

    @property
    def write(self) -> bool:
        return self.method in WRITE_METHODS


def applies(fault: APIFault, info: RequestInfo) -> bool:
    """Whether ``fault`` can happen to this request at all (log faults only to log follows,
    429/500 only to writes)."""
    if fault in LOG_FAULTS:
        return info.log_follow
    if fault in WRITE_FAULTS:
        return info.write
    if fault == APIFault.STALL:
        return info.log_follow or info.watch
    return fault in REQUEST_FAULTS


@dataclass
class APIFaultRule:
    """One request fault: fires on a fraction ``rate`` of the requests it matches."""

    fault: APIFault
    rate: float = 1.0
    times: int | None = None
    """At most this many firings (None: no limit)."""
    path: str | None = None
    """A regular expression searched in the request path (None: every path)."""
    methods: frozenset[str] | None = None
    """Only these HTTP methods (None: any the fault applies to)."""
    seconds: float = 30.0
    """``hang``, ``stall``: how long the request is held before its connection is reset."""
    retry_after: int = 1
    """``throttle``: the Retry-After header and details.retryAfterSeconds."""
    after_bytes: int = 0
    """Log faults and ``stall`` of a log: bytes of log the client gets before the fault."""
    fired: int = 0

    def __post_init__(self) -> None:
        self.fault = APIFault(self.fault)
        if self.fault not in REQUEST_FAULTS:
            raise ValueError(
                f"{self.fault.value} is an action, not a request fault: call the server's "
                f"{self.fault.value}() (or POST it to /_emulator/faults)"
            )
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"rate must be between 0 and 1, not {self.rate}")
        if self.path is not None:
            re.compile(self.path)

    def matches(self, info: RequestInfo) -> bool:
        if not applies(self.fault, info):
            return False
        if self.times is not None and self.fired >= self.times:
            return False
        if self.methods is not None and info.method not in self.methods:
            return False
        return self.path is None or re.search(self.path, info.path) is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "fault": self.fault.value,
            "rate": self.rate,
            "times": self.times,
            "path": self.path,
            "methods": sorted(self.methods) if self.methods is not None else None,
            "seconds": self.seconds,
            "retry_after": self.retry_after,
            "after_bytes": self.after_bytes,
            "fired": self.fired,
        }


@dataclass(frozen=True)
class ChaosConfig:
    """Random faults (``agentrun dev --faults``): which, how often, and the seed."""

    faults: frozenset[APIFault]
    seed: int
    rate: float = 0.02
    """Probability that a client request gets one of the enabled request faults."""
    log_rate: float | None = None
    """Probability for a pod-log follow (None: ``rate``): a run has one follow and many
    writes, so log faults need their own rate to be seen often."""
    interval_seconds: float = 20.0
    """Mean seconds between two actions (restart, compact), exponentially distributed."""
    hang_seconds: float = 20.0
    down_seconds: float = 1.0
    retry_after: int = 1
    max_log_bytes: int = 2048
    """Log faults cut or end after a random 0 to this many bytes."""

    @property
    def request_faults(self) -> list[APIFault]:
        return sorted(f for f in self.faults if f in REQUEST_FAULTS)

    @property
    def actions(self) -> list[APIFault]:
        return sorted(f for f in self.faults if f in ACTION_FAULTS)

    def describe(self) -> str:
        names = ",".join(sorted(f.value for f in self.faults))
        log_rate = f" log_rate={self.log_rate}" if self.log_rate is not None else ""
        return (
            f"faults={names} seed={self.seed} rate={self.rate}{log_rate} "
            f"interval={self.interval_seconds}s hang={self.hang_seconds}s "
            f"down={self.down_seconds}s"
        )


def parse_fault_list(text: str) -> frozenset[APIFault]:
    """``"log_cut,restart"`` or ``"all"`` -> the set of faults; a clear error for unknown names."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["all"]:
        return frozenset(APIFault)
    chosen = set()
    for name in names:
        try:
            chosen.add(APIFault(name))
        except ValueError:
            choices = ", ".join(f.value for f in APIFault)
            raise ValueError(f"unknown fault {name!r}: choose from all, {choices}") from None
    if not chosen:
        raise ValueError("no fault named: give a comma-separated list, or all")
    return frozenset(chosen)


@dataclass
class _Chaos:
    config: ChaosConfig
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.config.seed)


class APIFaultInjector:
    """Rules of request faults, random mode, and counts of what fired (thread-safe: tests add
    rules from pytest's thread while the server runs on its own loop)."""

    def __init__(self, system_tokens: frozenset[str] = frozenset({SYSTEM_TOKEN})) -> None:
        self.system_tokens = system_tokens
        self._rules: list[APIFaultRule] = []
        self._chaos: _Chaos | None = None
        self._lock = threading.Lock()
        self._rng = random.Random()
        self.fired: Counter[str] = Counter()
        #: The latest faults fired, oldest first: (time.time(), fault, method, path); restarts
        #: and compactions have an empty method and path.
        self.history: deque[tuple[float, str, str, str]] = deque(maxlen=20_000)

    def add(self, fault: APIFault | str, **params: Any) -> APIFaultRule:
        """Add a request fault rule (see :class:`APIFaultRule` for ``params``)."""
        if "methods" in params and params["methods"] is not None:
            params["methods"] = frozenset(m.upper() for m in params["methods"])
        rule = APIFaultRule(APIFault(fault), **params)
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self) -> None:
        """Remove every rule and stop random mode (counts stay)."""
        with self._lock:
            self._rules.clear()
            self._chaos = None

    def rules(self) -> list[APIFaultRule]:
        with self._lock:
            return list(self._rules)

    def set_chaos(self, config: ChaosConfig | None) -> None:
        with self._lock:
            self._chaos = _Chaos(config) if config is not None else None

    @property
    def chaos(self) -> ChaosConfig | None:
        chaos = self._chaos
        return chaos.config if chaos is not None else None

    def chaos_rng(self) -> random.Random | None:
        chaos = self._chaos
        return chaos.rng if chaos is not None else None

    def is_system(self, authorization: str | None) -> bool:
        token = (authorization or "").removeprefix("Bearer ").strip()
        return token in self.system_tokens

    def count(self, fault: APIFault) -> None:
        with self._lock:
            self.fired[fault.value] += 1
            self.history.append((time.time(), fault.value, "", ""))

    def pick(self, info: RequestInfo) -> APIFaultRule | None:
        """The fault this client request gets, if any (counted as fired)."""
        with self._lock:
            for rule in self._rules:
                if rule.matches(info) and (rule.rate >= 1.0 or self._rng.random() < rule.rate):
                    rule.fired += 1
                    self.fired[rule.fault.value] += 1
                    self.history.append((time.time(), rule.fault.value, info.method, info.path))
                    return rule
            chaos = self._chaos
            if chaos is None:
                return None
            cfg = chaos.config
            candidates = [f for f in cfg.request_faults if applies(f, info)]
            rate = cfg.log_rate if info.log_follow and cfg.log_rate is not None else cfg.rate
            if not candidates or chaos.rng.random() >= rate:
                return None
            fault = chaos.rng.choice(candidates)
            self.fired[fault.value] += 1
            self.history.append((time.time(), fault.value, info.method, info.path))
            return APIFaultRule(
                fault,
                seconds=cfg.hang_seconds,
                retry_after=cfg.retry_after,
                after_bytes=chaos.rng.randrange(0, cfg.max_log_bytes + 1),
                fired=1,
            )

    def to_json(self) -> dict[str, Any]:
        chaos = self.chaos
        with self._lock:
            return {
                "api_rules": [r.to_json() for r in self._rules],
                "chaos": chaos.describe() if chaos is not None else None,
                "fired": dict(self.fired),
            }

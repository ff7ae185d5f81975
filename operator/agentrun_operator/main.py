"""``agentrun operator``: settings, health and metrics servers, leader election, then kopf.

Order at start-up: read the settings once; serve ``/livez`` (process alive) and ``/health``
(the Kubernetes API answers) on ``health_port`` and Prometheus metrics on ``metrics_port``; wait
for the leader Lease (if enabled); then run kopf with this package's handlers and the webhook
delivery handlers (:mod:`agentrun_operator.webhook_handlers`). A replica never reconciles
without the Lease:

- kopf starts only after :meth:`LeaderElector.acquire` *returned* (it retries every error and
  never returns without the Lease; a crash in it exits non-zero, never reconciles);
- losing the Lease first cancels every run task and webhook delivery (no new one starts), then
  stops kopf, and exits with code 1, so Kubernetes restarts the replica as a fresh candidate.

Every Kubernetes call of this process has a client-side timeout (settings ``kube_*``), and its
User-Agent names the replica's identity, so each write can be traced to one replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import sys
import time
from datetime import UTC, datetime
from typing import Any

import kopf
from agentrun_kube.client import ClientTimeouts, load_api_client
from aiohttp import web
from prometheus_client import start_http_server

from agentrun_operator import metrics
from agentrun_operator.kube_io import Kube
from agentrun_operator.leader import LeaderElector, default_identity
from agentrun_operator.reconciler import RunContext
from agentrun_operator.retention import retention_loop
from agentrun_operator.settings import OperatorSettings, load_settings

log = logging.getLogger("agentrun.operator")

_STANDARD_RECORD_FIELDS = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}
_KOPF_INTERNAL_FIELDS = {"settings", "k8s_skip", "k8s_ref"}
"""kopf attaches these to its per-object log records; they are not log fields."""


class JsonFormatter(logging.Formatter):
    """One JSON object per line; fields passed with ``extra=`` (run id, phase...) included."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key in _KOPF_INTERNAL_FIELDS:
                continue
            if key not in _STANDARD_RECORD_FIELDS and not key.startswith("_"):
                data[key] = (
                    value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
                )
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("kopf").setLevel(max(logging.getLevelName(level), logging.INFO))
    # kopf logs every successful event handler call per object at INFO: noise (and CPU) for
    # an operator whose handlers run on every watch event.
    logging.getLogger("kopf.objects").setLevel(
        logging.DEBUG if level == "DEBUG" else logging.WARNING
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


async def start_health_server(settings: OperatorSettings, kube: Kube) -> web.AppRunner:
    """``/livez``: the process is alive (no Kubernetes call). ``/health``: the API answers."""

    async def livez(_: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def health(_: web.Request) -> web.Response:
        try:
            await asyncio.wait_for(kube.core.get_api_resources(), 5)
        except Exception as exc:
            return web.json_response({"status": "unhealthy", "error": str(exc)}, status=503)
        return web.json_response({"status": "healthy", "leader": bool(metrics.LEADER._value.get())})

    app = web.Application()
    app.router.add_get("/livez", livez)
    app.router.add_get("/health", health)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.health_host, settings.health_port)
    await site.start()
    return runner


async def operate(settings: OperatorSettings) -> int:
    """The whole operator process; returns the exit code."""
    if settings.kubeconfig:
        os.environ["KUBECONFIG"] = settings.kubeconfig  # kopf's login reads it
    api = await load_api_client(settings.kubeconfig, timeouts=client_timeouts(settings))
    identity = settings.leader_election.identity or default_identity()
    api.user_agent = f"agentrun-operator/{identity}"
    kube = Kube(api)
    health = await start_health_server(settings, kube)
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.health_host)
    lag = asyncio.create_task(measure_loop_lag(), name="loop-lag")
    gc.callbacks.append(GCPauseRecorder())

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)

    elector: LeaderElector | None = None
    exit_code = 0
    try:
        if settings.leader_election.enabled:
            elector = LeaderElector(
                api, settings.leader_election, settings.lease_namespace, identity
            )
            if not await wait_for_lease(elector, stop):
                return 0 if stop.is_set() else 1
            await kube.post_event_about(
                {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "name": elector.name,
                    "uid": elector.lease_uid,
                },
                elector.namespace,
                reason="LeaderElection",
                message=f"{elector.identity} became leader",
                type_="Normal",
            )
        metrics.LEADER.set(1)
        exit_code = await reconcile(settings, kube, elector, stop)
    finally:
        lag.cancel()
        metrics.LEADER.set(0)
        if elector is not None:
            await elector.release()
        await health.cleanup()
        await api.close()
    return exit_code


LOOP_LAG_INTERVAL_SECONDS = 0.1


async def measure_loop_lag(interval: float = LOOP_LAG_INTERVAL_SECONDS) -> None:
    """Observe :data:`metrics.EVENT_LOOP_LAG` until cancelled: how much later than asked a
    sleep of ``interval`` returns is how long the loop was busy with something else."""
    loop = asyncio.get_running_loop()
    while True:
        asked = loop.time() + interval
        await asyncio.sleep(interval)
        metrics.EVENT_LOOP_LAG.observe(max(0.0, loop.time() - asked))


class GCPauseRecorder:
    """A :data:`gc.callbacks` entry that observes each collection's pause in
    :data:`metrics.GC_PAUSE` (by generation)."""

    def __init__(self) -> None:
        self.started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
        else:
            pause = time.perf_counter() - self.started
            metrics.GC_PAUSE.labels(str(info.get("generation", "?"))).observe(pause)


def client_timeouts(settings: OperatorSettings) -> ClientTimeouts:
    return ClientTimeouts(
        request_seconds=settings.kube_request_timeout_seconds,
        connect_seconds=settings.kube_connect_timeout_seconds,
        stream_read_seconds=settings.watch_server_timeout_seconds + 30.0,
    )


async def wait_for_lease(elector: LeaderElector, stop: asyncio.Event) -> bool:
    """True only once ``elector.acquire()`` returned normally (this replica holds the Lease);
    False when asked to stop first or when acquiring failed (logged): fail closed."""
    acquire = asyncio.create_task(elector.acquire(), name="lease-acquire")
    stopping = asyncio.create_task(stop.wait(), name="stop")
    try:
        await asyncio.wait({acquire, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if not acquire.done():
        acquire.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await acquire
        return False
    if acquire.cancelled():
        return False
    error = acquire.exception()
    if error is not None:
        log.error(
            "leader election failed: not reconciling",
            exc_info=error,
            extra={"identity": elector.identity},
        )
        return False
    return elector.leading


async def reconcile(
    settings: OperatorSettings, kube: Kube, elector: LeaderElector | None, stop: asyncio.Event
) -> int:
    """Run kopf (and retention) until stopped or the Lease is lost."""
    import agentrun_operator.handlers  # noqa: F401  (registers the kopf handlers)
    from agentrun_operator import webhook_handlers

    deliverer = webhook_handlers.WebhookDeliverer(kube, settings)
    webhook_handlers.configure(deliverer)

    ctx = RunContext(settings, kube)
    kopf_stop = asyncio.Event()
    kopf_task = asyncio.create_task(
        kopf.operator(
            standalone=True,
            clusterwide=settings.cluster_wide,
            namespaces=[] if settings.cluster_wide else settings.namespaces,
            memo=kopf.Memo(ctx=ctx, settings=settings),
            stop_flag=kopf_stop,
        ),
        name="kopf",
    )
    retention = asyncio.create_task(
        retention_loop(kube, settings, lambda: datetime.now(UTC)), name="retention"
    )
    watchers: set[asyncio.Task[Any]] = {kopf_task, asyncio.create_task(stop.wait())}
    hold: asyncio.Task[None] | None = None
    if elector is not None:
        hold = asyncio.create_task(elector.hold(), name="lease")
        watchers.add(hold)
    await asyncio.wait(watchers, return_when=asyncio.FIRST_COMPLETED)
    exit_code = 0
    if hold is not None and hold.done():
        log.error(
            "leadership lost: stopping reconciliation and exiting",
            extra={"identity": elector.identity if elector else None},
        )
        exit_code = 1
    # Stop acting first (run tasks, deliveries, retention: no new one starts), then kopf.
    retention.cancel()
    await ctx.stop()
    await deliverer.stop()
    kopf_stop.set()
    try:
        await asyncio.wait_for(kopf_task, 15)
    except (TimeoutError, asyncio.CancelledError):
        kopf_task.cancel()
    except Exception as exc:
        log.error("kopf ended with %s", exc)
        exit_code = exit_code or 1
    if hold is not None and not hold.done():
        hold.cancel()
    await webhook_handlers.shutdown()
    return exit_code


def run_operator() -> int:
    """Entry point of ``agentrun operator``."""
    settings = load_settings()
    configure_logging(settings.log_level)
    return asyncio.run(operate(settings))

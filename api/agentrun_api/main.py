"""``agentrun api``: serve the HTTP API with uvicorn and metrics on their own port.

With ``workers`` > 1 the port is bound once and shared by that many worker processes (the kernel
spreads connections). Each worker is a whole API process: its own app, run cache and stream hub
(one transcript watch per streamed run per worker) and its metrics on ``metrics_port + index``.
The parent only supervises: it forwards SIGTERM/SIGINT, and if a worker exits on its own it stops
the others and exits 1, so Kubernetes restarts the pod whole.

Shutdown (SIGTERM/SIGINT): ``app.state.shutting_down`` is set first, so open SSE streams end
cleanly and new ones are refused (:mod:`agentrun_api.streaming` watches it); then uvicorn stops
accepting, gives open requests ``shutdown_grace_seconds``, and runs the lifespan's teardown.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import multiprocessing
import multiprocessing.connection
import os
import secrets
import signal
import socket
import sys
from collections.abc import MutableMapping
from types import FrameType
from typing import Any, cast

import uvicorn
from prometheus_client import start_http_server

from agentrun_api.settings import APISettings, load_settings

READ_TOKEN_KEY_ENV = "AGENTRUN_API_READ_TOKEN_KEY"

log = logging.getLogger("agentrun.api")

_STD_RECORD_KEYS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
}


class JSONLineFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, event and the record's extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STD_RECORD_KEYS:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONLineFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


GC_YOUNG_THRESHOLD = 20_000
"""Allocations between young-generation collections in a serving process (Python's default
is 700)."""


class _APIServer(uvicorn.Server):
    """uvicorn, with ``app.state.shutting_down`` set as soon as a stop signal arrives."""

    def __init__(self, config: uvicorn.Config, shutting_down: asyncio.Event) -> None:
        super().__init__(config)
        self._shutting_down = shutting_down
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: Any = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        # Everything built at start-up (the app, the Kubernetes client's models, the run
        # cache's first list) lives as long as the process: move it out of the cyclic GC's
        # reach. Otherwise each full collection walks it all, and a burst of connections
        # (many short-lived objects) triggers several, each stalling every stream.
        gc.freeze()
        # And collect the young generation every GC_YOUNG_THRESHOLD allocations, not 700: a
        # burst of 1,000 streams otherwise ran ~550 young and 4 full collections (1.2 s of GC
        # for three bursts in bench_stream; 0.55 s with this).
        _, middle, old = gc.get_threshold()
        gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._shutting_down.set)
        log.info("stop signal received; draining", extra={"signal": sig})
        super().handle_exit(sig, frame)
        # uvicorn re-raises captured signals after shutdown (so the process dies of SIGTERM);
        # a SIGTERM that completed a graceful shutdown is a clean exit: 0.
        if sig == signal.SIGTERM and sig in self._captured_signals:
            self._captured_signals.remove(sig)


def build_server(settings: APISettings, *, metrics_port: int | None = None) -> _APIServer:
    """The server of one API process; ``metrics_port`` overrides ``settings.metrics_port``
    (a worker's own port)."""
    # Imported here: a workers' parent only supervises and never loads the app (~100 MiB).
    from agentrun_api.app import create_app

    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        workers=1,
        lifespan="on",
        log_config=None,
        access_log=False,
        # Proxy headers are read by the app, trusted only from settings.trusted_proxy_cidrs
        # (agentrun_api.proxy_headers); uvicorn's own would trust 127.0.0.1 regardless.
        proxy_headers=False,
        # h11, not httptools: httptools refuses a header value with a control character (an
        # Idempotency-Key with DEL) before the app sees it, with a text/plain 400 instead of
        # the API's JSON error. It would save ~15% of the CPU per connection (bench_stream).
        # The event loop is uvloop when installed (the api extra installs it).
        http="h11",
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds),
    )
    port = settings.metrics_port if metrics_port is None else metrics_port
    if port:
        start_http_server(port, addr=settings.host, registry=app.state.metrics.registry)
    return _APIServer(config, app.state.shutting_down)


def _serve(
    settings: APISettings,
    *,
    sockets: list[socket.socket] | None = None,
    metrics_port: int | None = None,
) -> int:
    """Run one API process until stopped: 0 after a clean shutdown, 1 if it never started, 2
    for a configuration a person must fix."""
    try:
        server = build_server(settings, metrics_port=metrics_port)
    except ValueError as exc:
        log.error("cannot start", extra={"error": str(exc)})
        return 2
    server.run(sockets)
    return 0 if server.started else 1


def run_api() -> int:
    """Serve until stopped; the exit code is 0 after a clean shutdown."""
    settings = load_settings()
    configure_logging(settings.log_level)
    log.info(
        "agentrun api starting",
        extra={
            "port": settings.port,
            "namespace": settings.namespace,
            "auth": settings.auth_enabled,
            "workers": settings.workers,
        },
    )
    code = _serve(settings) if settings.workers == 1 else run_workers(settings)
    log.info("agentrun api stopped", extra={"exit_code": code})
    return code


def worker_metrics_port(settings: APISettings, index: int) -> int:
    """Worker ``index``'s metrics port: ``metrics_port + index`` (0 stays off)."""
    return settings.metrics_port + index if settings.metrics_port else 0


def _worker_main(index: int, listener: socket.socket) -> None:
    """A worker process: the whole API, serving the parent's listening socket."""
    settings = load_settings()
    configure_logging(settings.log_level)
    log.info(
        "api worker started",
        extra={
            "worker": index,
            "pid": os.getpid(),
            "metrics_port": worker_metrics_port(settings, index),
        },
    )
    sys.exit(
        _serve(settings, sockets=[listener], metrics_port=worker_metrics_port(settings, index))
    )


def share_read_token_key(settings: APISettings, environ: MutableMapping[str, str]) -> None:
    """With no read-token signing key configured, draw one for all workers (in ``environ``,
    which spawned workers inherit): else each worker would draw its own, and a read token
    signed by one would be refused by the others."""
    signing, _ = settings.read_token_keys()
    if signing is None:
        environ[READ_TOKEN_KEY_ENV] = secrets.token_urlsafe(32)


def run_workers(settings: APISettings) -> int:
    """Bind the port once, serve it from ``settings.workers`` processes, and supervise them.

    A stop signal is forwarded to every worker (each drains its streams and exits 0). A worker
    that exits without one stops the others and the parent exits 1: a partly serving pod would
    look healthy while refusing its share of connections.
    """
    share_read_token_key(settings, os.environ)
    listener = uvicorn.Config(
        "agentrun_api.app:create_app", host=settings.host, port=settings.port
    ).bind_socket()
    # spawn, not fork: each worker builds its event loop, Kubernetes client and threads afresh.
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_worker_main, args=(index, listener), name=f"agentrun-api-{index}")
        for index in range(settings.workers)
    ]
    stopping = False

    def forward(sig: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        log.info("stop signal received; stopping workers", extra={"signal": sig})
        for worker in workers:
            if worker.pid is not None and worker.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGTERM)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    failed = False
    try:
        for worker in workers:
            worker.start()
        listener.close()  # the workers hold it now
        running = {worker.sentinel: worker for worker in workers}
        while running:
            for sentinel in multiprocessing.connection.wait(list(running)):
                worker = running.pop(cast(int, sentinel))
                worker.join()
                if worker.exitcode != 0 or not stopping:
                    failed = True
                if not stopping:
                    log.error(
                        "api worker exited; stopping the others",
                        extra={"worker": worker.name, "exit_code": worker.exitcode},
                    )
                    forward(signal.SIGTERM, None)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(run_api())

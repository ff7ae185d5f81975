"""``agentrun api``: serve the HTTP API with uvicorn (one worker) and metrics on their own port.

Shutdown (SIGTERM/SIGINT): ``app.state.shutting_down`` is set first, so open SSE streams end
cleanly and new ones are refused (:mod:`agentrun_api.streaming` watches it); then uvicorn stops
accepting, gives open requests ``shutdown_grace_seconds``, and runs the lifespan's teardown.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import signal
import socket
import sys
from types import FrameType
from typing import Any

import uvicorn
from prometheus_client import start_http_server

from agentrun_api.app import create_app
from agentrun_api.settings import APISettings, load_settings

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

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._shutting_down.set)
        log.info("stop signal received; draining", extra={"signal": sig})
        super().handle_exit(sig, frame)
        # uvicorn re-raises captured signals after shutdown (so the process dies of SIGTERM);
        # a SIGTERM that completed a graceful shutdown is a clean exit: 0.
        if sig == signal.SIGTERM and sig in self._captured_signals:
            self._captured_signals.remove(sig)


def build_server(settings: APISettings) -> _APIServer:
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
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds),
    )
    if settings.metrics_port:
        start_http_server(
            settings.metrics_port, addr=settings.host, registry=app.state.metrics.registry
        )
    return _APIServer(config, app.state.shutting_down)


def run_api() -> int:
    """Serve until stopped; the exit code is 0 after a clean shutdown."""
    settings = load_settings()
    configure_logging(settings.log_level)
    try:
        server = build_server(settings)
    except ValueError as exc:  # a configuration a person must fix
        log.error("cannot start", extra={"error": str(exc)})
        return 2
    log.info(
        "agentrun api starting",
        extra={
            "port": settings.port,
            "namespace": settings.namespace,
            "auth": settings.auth_enabled,
        },
    )
    server.run()
    log.info("agentrun api stopped")
    return 0 if server.started else 1


if __name__ == "__main__":
    raise SystemExit(run_api())

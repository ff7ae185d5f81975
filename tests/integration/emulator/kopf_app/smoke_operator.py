"""A tiny kopf operator for the emulator smoke test (run with ``kopf run``, never imported)."""

from __future__ import annotations

import logging
from typing import Any

import kopf


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.StatusProgressStorage(field="status.kopf.progress")
    settings.persistence.diffbase_storage = kopf.StatusDiffBaseStorage(field="status.kopf.diffbase")
    settings.persistence.finalizer = "agentrun.dev/smoke"
    settings.peering.standalone = True
    settings.watching.server_timeout = 5
    settings.posting.level = logging.INFO


@kopf.on.create("agentrun.dev", "v1alpha1", "agentruns")
def created(name: str, spec: dict[str, Any], logger: logging.Logger, **_: Any) -> None:
    # One line per invocation: the test counts them. (No result: the CRD's structural schema
    # would prune ``status.created``, as a real apiserver does.)
    print(f"SMOKE-CREATE-HANDLER {name} {spec.get('prompt')}", flush=True)


@kopf.on.update("agentrun.dev", "v1alpha1", "agentruns", field="spec.cancelRequested")
def cancel_requested(name: str, new: Any, **_: Any) -> None:
    print(f"SMOKE-UPDATE-HANDLER {name} {new}", flush=True)


@kopf.on.delete("agentrun.dev", "v1alpha1", "agentruns")
def deleted(name: str, **_: Any) -> None:
    print(f"SMOKE-DELETE-HANDLER {name}", flush=True)

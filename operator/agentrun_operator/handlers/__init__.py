"""kopf handlers (thin): watch events only wake the per-run tasks of
:mod:`agentrun_operator.reconciler`, which hold the logic.

Only ``on.event`` handlers: they keep no handler progress and need no finalizer (deleting an
AgentRun cascades to its Job, pod, Secret, transcript and result through ownerReferences). kopf's
own bookkeeping, for handlers that do keep some (the webhook delivery handlers), is stored in
``status.kopf`` (see :func:`configure`), never in annotations.

The handlers read the shared :class:`~agentrun_operator.reconciler.RunContext` from kopf's
``memo`` (``memo.ctx``), set by :func:`agentrun_operator.main.run_operator`.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Mapping
from typing import Any

import kopf
from agentrun_contract import names
from agentrun_contract.resource import GROUP, PLURAL, VERSION

from agentrun_operator.reconciler import RunContext

RUN_SELECTOR = {names.LABEL_RUN: kopf.PRESENT}
WATCH_SELECTORS = (("batch/v1", "jobs"), ("v1", "pods"))
"""The resources (as the handlers name them) watched with the ``agentrun.dev/run`` selector."""
KOPF_WORKERS = 200
KOPF_WORKER_IDLE_SECONDS = 0.5
KOPF_LIST_PAGE = 500
GC_YOUNG_THRESHOLD = 10_000


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    """kopf settings: bookkeeping in status (large specs never hit the annotation limit; the
    CRD preserves status.kopf), sensible watch timeouts, no kopf-logged Events below WARNING."""
    ours = memo["settings"]
    settings.persistence.progress_storage = kopf.StatusProgressStorage(field="status.kopf.progress")
    settings.persistence.diffbase_storage = kopf.StatusDiffBaseStorage(field="status.kopf.diffbase")
    settings.persistence.finalizer = names.FINALIZER
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = ours.watch_server_timeout_seconds
    settings.watching.client_timeout = ours.watch_server_timeout_seconds + 30
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60
    # Server-side selectors: only agentrun's Pods and Jobs are listed and watched (the
    # handlers' ``labels=`` filter only after every object in the namespace was received).
    for selector in WATCH_SELECTORS:
        settings.watching.label_selectors[selector] = names.LABEL_RUN
    # A listing of 10,000 AgentRuns (start-up, a relist) must not become 10,000 workers ready
    # at once on the loop that also renews the Lease: at most KOPF_WORKERS objects are handled
    # at a time (the watch stream waits meanwhile), and a worker idle for KOPF_WORKER_IDLE
    # seconds frees its place (kopf's 5 s would hold places long after their event).
    settings.queueing.worker_limit = KOPF_WORKERS
    settings.queueing.idle_timeout = KOPF_WORKER_IDLE_SECONDS
    # Listed in pages: the first list of 10,000 AgentRuns is never decoded all at once.
    settings.watching.chunk_size = KOPF_LIST_PAGE
    # Everything created so far (modules, settings) is never garbage: leave it out of every
    # collection. kopf leaves each watch event's body in reference cycles (its Body and Patch
    # views), so a young collection mostly frees event garbage and its pause grows with the
    # threshold: about 100 ms of CPU at 50,000 while 10,000 runs start, on the loop that
    # renews the Lease. GC_YOUNG_THRESHOLD keeps each pause short; the older generations are
    # collected rarely (10,000 runs keep hundreds of thousands of long-lived objects).
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 50, 100)


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """The kubeconfig ($KUBECONFIG) when given, else the in-cluster service account."""
    info: kopf.ConnectionInfo | None = kopf.login_with_kubeconfig(**kwargs)
    if info is None:
        info = kopf.login_with_service_account(**kwargs)
    return info


@kopf.on.event(GROUP, VERSION, PLURAL)
async def agentrun_event(*, type: str, body: kopf.Body, memo: Any, **_: Any) -> None:
    ctx: RunContext = memo["ctx"]
    ctx.observe_run(dict(body), deleted=type == "DELETED")


@kopf.on.event("batch/v1", "jobs", labels=RUN_SELECTOR)
async def job_event(
    *,
    type: str,
    body: kopf.Body,
    namespace: str | None,
    labels: Mapping[str, str],
    memo: Any,
    **_: Any,
) -> None:
    ctx: RunContext = memo["ctx"]
    ctx.observe_owned(
        namespace or "default",
        labels[names.LABEL_RUN],
        job=dict(body),
        deleted=type == "DELETED",
        job_event=True,
        listing=type is None,  # kopf's convention for objects from a (re)list
    )


@kopf.on.event("v1", "pods", labels=RUN_SELECTOR)
async def pod_event(
    *, namespace: str | None, labels: Mapping[str, str], memo: Any, **_: Any
) -> None:
    ctx: RunContext = memo["ctx"]
    ctx.observe_owned(namespace or "default", labels[names.LABEL_RUN], job_event=False)

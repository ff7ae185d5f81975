"""The operator's side of webhook delivery: kopf handlers (thin) over :class:`WebhookDeliverer`.

How a delivery goes (shared/CONTRACT.md, "Webhook"):

1. When a run with ``spec.webhookUrl`` becomes terminal, the operator's reconciler sets
   ``status.webhook = {state: pending, id: <webhook-id>}`` in the same status patch (as a safety
   net, :meth:`WebhookDeliverer.on_event` sets it too if a terminal run lacks it).
2. ``on.event`` sees every AgentRun event (the initial listing after a start included) and keeps
   one asyncio task per pending delivery. The task waits until the attempt is due
   (``nextAttemptAt``; a fresh delivery is due at once), re-reads the run from the apiserver
   (never acting on a stale cache), sends one attempt, and records its outcome in
   ``status.webhook`` *before* planning the next one (a merge patch guarded by the
   resourceVersion it read; a concurrent change of the delivery, e.g. a redelivery, wins).
3. Every failed attempt posts a Warning Event; the final outcome posts WebhookDelivered or
   WebhookFailed; ``agentrun_operator_webhook_*`` counters count attempts and deliveries.

Guarantee: at least once. A pending delivery survives restarts (its state is in etcd and the
start-up listing re-creates its task, resuming the schedule at ``nextAttemptAt``); a delivery
recorded as delivered is never sent again (each attempt re-reads the run first); a crash between
the receiver's 2xx and the record causes one more attempt with the same ``webhook-id``.

Redelivery: ``kubectl annotate agentrun NAME agentrun.dev/redeliver=<new value> --overwrite``
re-sends the webhook of a finished run: a new pending delivery, attempts from zero, with the
*same* webhook-id (Standard Webhooks: the id names the message, and a re-sent message keeps
it). A redeliver value already seen (``status.webhook.redeliverToken``) does nothing; a value
that arrives while a delivery is still pending is only recorded.

Deleting a run cancels its delivery task: a DELETE of a finished run drops its pending webhook.

No kopf daemon or timer is used: kopf puts a finalizer on every object a daemon or timer
matches, and a finalizer would make DELETE wait for the operator.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import kopf
from agentrun_contract import names
from agentrun_contract.resource import (
    GROUP,
    PLURAL,
    RESULT_PLURAL,
    TERMINAL_PHASES,
    VERSION,
    AgentRun,
    Phase,
    WebhookDelivery,
    WebhookState,
)
from agentrun_kube.errors import Conflict, KubeError, NotFound, from_api_exception
from agentrun_webhooks.delivery import (
    AttemptKind,
    AttemptOutcome,
    attempt_delivery,
    due_at,
    pending_delivery,
    plan_after_attempt,
    redelivery,
)
from agentrun_webhooks.payload import build_webhook_payload
from agentrun_webhooks.policy import Resolver
from agentrun_webhooks.signing import InvalidSigningSecret, load_signing_secrets, sign_headers
from kubernetes_asyncio.client.exceptions import ApiException
from prometheus_client import Counter, Histogram

from agentrun_operator.kube_io import Kube
from agentrun_operator.settings import OperatorSettings

log = logging.getLogger("agentrun.operator.webhooks")

WEBHOOK_ATTEMPTS: Final = Counter(
    "agentrun_operator_webhook_attempts_total",
    "Webhook delivery attempts, by outcome (delivered, http_error, gone, redirect, timeout, "
    "connect_error, unresolved, refused, config_error).",
    ["outcome"],
)
WEBHOOK_DELIVERIES: Final = Counter(
    "agentrun_operator_webhook_deliveries_total",
    "Webhook deliveries that reached a final state, by outcome (delivered, failed).",
    ["outcome"],
)
WEBHOOK_ATTEMPT_SECONDS: Final = Histogram(
    "agentrun_operator_webhook_attempt_seconds",
    "Duration of one webhook delivery attempt.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30, 60),
)

RECORD_RETRY_SECONDS: Final = (0.2, 0.5, 1, 2, 5, 10)
"""Backoff of the status write that records an attempt, when the apiserver is unavailable."""

Key = tuple[str, str]
_TERMINAL_PHASE_VALUES: Final = frozenset(p.value for p in TERMINAL_PHASES)


def _delivery_fields(state: WebhookDelivery) -> dict[str, Any]:
    """``status.webhook`` as a merge patch: absent fields are sent as null, so they are
    cleared (e.g. ``nextAttemptAt`` once delivered)."""
    return state.model_dump(by_alias=True, mode="json")


def _same_delivery(a: WebhookDelivery | None, b: WebhookDelivery | None) -> bool:
    """True when ``a`` and ``b`` are the same step of the same delivery (nobody else changed it)."""
    if a is None or b is None:
        return a is b
    return (a.id, a.state, a.attempts, a.redeliver_token) == (
        b.id,
        b.state,
        b.attempts,
        b.redeliver_token,
    )


def _host_of(url: str | None) -> str:
    """The host of a webhook URL, for logs and Events (never the path or query: they may
    carry a receiver's token)."""
    if not url:
        return "(none)"
    try:
        import httpx

        return httpx.URL(url).host or "(invalid)"
    except Exception:
        return "(invalid)"


@dataclass
class _Tracked:
    task: asyncio.Task[None]
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    body: dict[str, Any] = field(default_factory=dict)


class WebhookDeliverer:
    """One per operator process: tracks pending deliveries and sends them."""

    def __init__(
        self,
        kube: Kube,
        settings: OperatorSettings,
        *,
        resolver: Resolver | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.kube = kube
        self.settings = settings
        self.resolver = resolver
        self.rng = rng or random.Random()
        self._tracked: dict[Key, _Tracked] = {}
        self._semaphore = asyncio.Semaphore(settings.webhook.max_concurrent_deliveries)
        self._stopping = False

    # ------------------------------------------------------------------ watch events
    async def on_event(self, event_type: str | None, obj: Mapping[str, Any]) -> None:
        """Called for every AgentRun watch event (``None`` for the initial listing)."""
        metadata = obj.get("metadata") or {}
        key: Key = (str(metadata.get("namespace") or "default"), str(metadata.get("name")))
        if event_type == "DELETED" or metadata.get("deletionTimestamp"):
            self._forget(key, "the run is being deleted")
            return
        # Cheap checks on the raw object first: most events are of running runs.
        phase = (obj.get("status") or {}).get("phase")
        if phase not in _TERMINAL_PHASE_VALUES or not (obj.get("spec") or {}).get("webhookUrl"):
            return
        try:
            run = AgentRun.model_validate(obj)
        except ValueError as exc:
            log.warning("webhook: unreadable AgentRun %s/%s: %s", key[0], key[1], exc)
            return
        if not run.phase.is_terminal or run.spec.webhook_url is None:
            return
        state = run.status.webhook
        if state is None:
            await self._start_delivery(run)
            return
        token = run.metadata.annotations.get(names.ANNOTATION_REDELIVER)
        if token is not None and token != state.redeliver_token:
            await self._redeliver(run, state, token)
            return
        if state.state is WebhookState.PENDING and not self._stopping:
            self._track(key, dict(obj))

    def _track(self, key: Key, body: dict[str, Any]) -> None:
        tracked = self._tracked.get(key)
        if tracked is not None and not tracked.task.done():
            tracked.body = body
            tracked.wake.set()
            return
        # A context of its own: created from a kopf handler, the task would otherwise keep
        # kopf's context variables (the event's body, patch, logger) alive while it retries.
        task = asyncio.create_task(
            self._run_delivery(key),
            name=f"webhook {key[0]}/{key[1]}",
            context=contextvars.Context(),
        )
        self._tracked[key] = _Tracked(task=task, body=body)

    def _forget(self, key: Key, why: str) -> None:
        tracked = self._tracked.pop(key, None)
        if tracked is not None and not tracked.task.done():
            log.info("webhook: delivery of %s/%s dropped: %s", key[0], key[1], why)
            tracked.task.cancel()

    async def _start_delivery(self, run: AgentRun) -> None:
        """Safety net: a terminal run with a webhook_url but no delivery state gets one."""
        await self._write_if_unchanged(run, pending_delivery())

    async def _redeliver(self, run: AgentRun, state: WebhookDelivery, token: str) -> None:
        if state.state is WebhookState.PENDING:
            new = state.model_copy(update={"redeliver_token": token})  # already on its way
        else:
            new = redelivery(state, token)
        written = await self._write_if_unchanged(run, new)
        if written and state.state is not WebhookState.PENDING:
            await self.kube.post_event(
                run,
                reason="WebhookRedelivery",
                message=f"webhook {new.id} will be sent again (redeliver={token})",
            )

    async def _write_if_unchanged(self, run: AgentRun, new: WebhookDelivery) -> bool:
        """Write ``new`` as status.webhook if the run is still the version the decision was
        made on. A terminal run may see no further event, so an unavailable apiserver is
        retried here rather than left to a later event."""
        namespace = run.metadata.namespace or "default"
        delays = list(RECORD_RETRY_SECONDS)
        while True:
            try:
                await self.kube.patch_run_status(
                    namespace,
                    run.metadata.name,
                    {"webhook": _delivery_fields(new)},
                    resource_version=run.metadata.resource_version,
                )
                return True
            except (Conflict, NotFound):
                return False  # changed meanwhile: its own event decides again
            except KubeError as exc:
                if not exc.retryable or not delays:
                    raise
                await asyncio.sleep(delays.pop(0))

    # ------------------------------------------------------------------ delivery task
    async def _run_delivery(self, key: Key) -> None:
        namespace, name = key
        failures = 0
        seen_body: dict[str, Any] | None = None
        due: datetime | None = None
        try:
            while not self._stopping:
                tracked = self._tracked.get(key)
                if tracked is None:
                    return
                tracked.wake.clear()
                if tracked.body is not seen_body:  # parse only what changed, not every wake
                    seen_body = tracked.body
                    run = AgentRun.model_validate(seen_body)
                    state = run.status.webhook
                    if state is None or state.state is not WebhookState.PENDING:
                        return
                    due = due_at(state, run.status.completed_at, self.settings.webhook)
                wait = (due - datetime.now(UTC)).total_seconds() if due is not None else 0.0
                if wait > 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(
                            min(wait, self.settings.webhook.check_interval_seconds)
                        ):
                            await tracked.wake.wait()
                    continue
                try:
                    recorded = await self.deliver_once(namespace, name)
                    failures = 0
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    # The apiserver could not be read or written (or an unexpected error): the
                    # attempt, if one was made, is not recorded, so it will be made again, with
                    # the same webhook-id.
                    failures += 1
                    backoff = min(30.0, 0.5 * 2**failures)
                    log.warning(
                        "webhook: %s/%s: %s; retrying in %.1fs", namespace, name, exc, backoff
                    )
                    await asyncio.sleep(backoff)
                    continue
                tracked = self._tracked.get(key)
                if tracked is None or recorded is None:
                    return
                if recorded.state is not WebhookState.PENDING:
                    # A redelivery whose event arrived during the attempt is the next job.
                    seen = AgentRun.model_validate(tracked.body).status.webhook
                    if (
                        seen is not None
                        and seen.state is WebhookState.PENDING
                        and seen.redeliver_token != recorded.redeliver_token
                    ):
                        continue
                    return
                # Continue from what was recorded, even before its watch event arrives.
                body = dict(tracked.body)
                body["status"] = {
                    **(body.get("status") or {}),
                    "webhook": _delivery_fields(recorded),
                }
                tracked.body = body
        finally:
            current = self._tracked.get(key)
            if current is not None and current.task is asyncio.current_task():
                del self._tracked[key]

    async def deliver_once(self, namespace: str, name: str) -> WebhookDelivery | None:
        """If the run's delivery is pending and due (read fresh from the apiserver), send one
        attempt and record it. Returns the delivery as it now stands (the recorded state, or
        a newer one that superseded it); None when the run or its delivery is gone."""
        try:
            raw = await self.kube.get_run(namespace, name)
        except NotFound:
            return None
        run = AgentRun.model_validate(raw)
        state = run.status.webhook
        if state is None or state.state is not WebhookState.PENDING:
            return state
        now = datetime.now(UTC)
        due = due_at(state, run.status.completed_at, self.settings.webhook)
        if due is not None and due > now:
            return state
        url = run.spec.webhook_url
        if url is None:
            outcome = AttemptOutcome(kind=AttemptKind.REFUSED, error="the run has no webhookUrl")
        else:
            outcome = await self._attempt(run, state, url)
        new = plan_after_attempt(state, outcome, self.settings.webhook, datetime.now(UTC), self.rng)
        written, current = await self._record(run, raw, state, new)
        if written:
            WEBHOOK_ATTEMPTS.labels(outcome=outcome.kind.value).inc()
            await self._report(run, new, outcome)
        return current

    async def _attempt(self, run: AgentRun, state: WebhookDelivery, url: str) -> AttemptOutcome:
        result = await self._read_result(run) if run.phase is Phase.SUCCEEDED else None
        body = build_webhook_payload(
            run,
            result,
            self.settings.public_base_url,
            max_bytes=self.settings.webhook.max_payload_bytes,
        )
        try:
            secrets = await asyncio.to_thread(load_signing_secrets, self.settings.webhook)
        except (InvalidSigningSecret, OSError) as exc:
            log.error("webhook: signing secrets unusable: %s", exc)
            return AttemptOutcome(kind=AttemptKind.CONFIG_ERROR, error=f"not sent: {exc}")
        headers = sign_headers(state.id, body, secrets, datetime.now(UTC))
        async with self._semaphore:
            loop = asyncio.get_running_loop()
            started = loop.time()
            outcome = await attempt_delivery(
                url,
                body,
                headers,
                self.settings.webhook_policy,
                self.settings.webhook,
                self.resolver,
            )
            WEBHOOK_ATTEMPT_SECONDS.observe(loop.time() - started)
        log.info(
            "webhook attempt",
            extra={
                "run": run.metadata.name,
                "webhook_id": state.id,
                "attempt": state.attempts + 1,
                "host": _host_of(url),
                "outcome": outcome.kind.value,
                "status_code": outcome.status_code,
            },
        )
        return outcome

    async def _read_result(self, run: AgentRun) -> str | None:
        """The full result from the run's AgentRunResult (None if there is none)."""
        try:
            obj = await self.kube.custom.get_namespaced_custom_object(
                GROUP,
                VERSION,
                run.metadata.namespace or "default",
                RESULT_PLURAL,
                names.result_name(run.metadata.name),
            )
        except ApiException as exc:
            error = from_api_exception(exc)
            if isinstance(error, NotFound):
                return None
            raise error from exc
        result = (obj.get("spec") or {}).get("result")
        return result if isinstance(result, str) else None

    async def _record(
        self,
        run: AgentRun,
        raw: Mapping[str, Any],
        expected: WebhookDelivery,
        new: WebhookDelivery,
    ) -> tuple[bool, WebhookDelivery | None]:
        """Write ``new`` as status.webhook unless the delivery changed since ``raw`` was read.

        Returns (written, the delivery as it now stands). Retries through conflicts caused by
        unrelated writes, and through an unavailable apiserver for a while (then raises: the
        attempt is made again, with the same webhook-id)."""
        namespace = run.metadata.namespace or "default"
        resource_version = (raw.get("metadata") or {}).get("resourceVersion")
        delays = list(RECORD_RETRY_SECONDS)
        while True:
            try:
                await self.kube.patch_run_status(
                    namespace,
                    run.metadata.name,
                    {"webhook": _delivery_fields(new)},
                    resource_version=resource_version,
                )
                return True, new
            except NotFound:
                return False, None
            except Conflict:
                try:
                    current = AgentRun.model_validate(
                        await self.kube.get_run(namespace, run.metadata.name)
                    )
                except NotFound:
                    return False, None
                if not _same_delivery(current.status.webhook, expected):
                    return False, current.status.webhook  # e.g. a redelivery reset it: it wins
                resource_version = current.metadata.resource_version
            except KubeError as exc:
                if not exc.retryable or not delays:
                    raise
                await asyncio.sleep(delays.pop(0))

    async def _report(self, run: AgentRun, new: WebhookDelivery, outcome: AttemptOutcome) -> None:
        if new.state is WebhookState.DELIVERED:
            WEBHOOK_DELIVERIES.labels(outcome="delivered").inc()
            await self.kube.post_event(
                run,
                reason="WebhookDelivered",
                message=f"webhook {new.id} delivered (HTTP {outcome.status_code}) "
                f"after {new.attempts} attempt(s)",
            )
            return
        await self.kube.post_event(
            run,
            reason="WebhookAttemptFailed",
            message=f"webhook {new.id} attempt {new.attempts} failed: {new.last_error}",
            type_="Warning",
        )
        if new.state is WebhookState.FAILED:
            WEBHOOK_DELIVERIES.labels(outcome="failed").inc()
            await self.kube.post_event(
                run,
                reason="WebhookFailed",
                message=f"webhook {new.id} not delivered after {new.attempts} attempt(s); "
                f"send it again with: kubectl annotate agentrun {run.metadata.name} "
                f"{names.ANNOTATION_REDELIVER}=<new value> --overwrite",
                type_="Warning",
            )

    # ------------------------------------------------------------------ lifecycle
    def pending_count(self) -> int:
        return sum(1 for t in self._tracked.values() if not t.task.done())

    async def join(self) -> None:
        """Wait until no delivery is pending in this process (tests, and draining)."""
        while tasks := [t.task for t in self._tracked.values() if not t.task.done()]:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def stop(self) -> None:
        """Cancel every delivery task (on shutdown or when leadership is lost). Unrecorded
        attempts are made again by the next leader, with the same webhook-id."""
        self._stopping = True
        tasks = [t.task for t in self._tracked.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tracked.clear()


# ---------------------------------------------------------------------------- process wiring

_deliverer: WebhookDeliverer | None = None
_owned_api: Any = None
_lock: asyncio.Lock | None = None


def configure(deliverer: WebhookDeliverer | None) -> None:
    """Use this deliverer (the operator's main builds it from its settings and client);
    without it the handlers build one from ``load_settings()`` on first use."""
    global _deliverer
    _deliverer = deliverer


async def get_deliverer() -> WebhookDeliverer:
    global _deliverer, _owned_api, _lock
    if _deliverer is not None:
        return _deliverer
    if _lock is None:
        _lock = asyncio.Lock()
    async with _lock:
        if _deliverer is None:
            from agentrun_kube.client import load_api_client

            from agentrun_operator.settings import load_settings

            settings = load_settings()
            _owned_api = await load_api_client(settings.kubeconfig)
            _deliverer = WebhookDeliverer(Kube(_owned_api), settings)
    return _deliverer


async def shutdown() -> None:
    """Stop deliveries and close a client this module created."""
    global _deliverer, _owned_api
    if _deliverer is not None:
        await _deliverer.stop()
        _deliverer = None
    if _owned_api is not None:
        await _owned_api.close()
        _owned_api = None


async def on_agentrun_event(event: Mapping[str, Any], **_: Any) -> None:
    """kopf ``on.event``: hand every AgentRun event to the deliverer."""
    obj = event.get("object")
    if isinstance(obj, Mapping):
        deliverer = await get_deliverer()
        await deliverer.on_event(event.get("type"), obj)


async def on_cleanup(**_: Any) -> None:
    """kopf ``on.cleanup``: stop the delivery tasks with the operator."""
    await shutdown()


def register(registry: kopf.OperatorRegistry) -> None:
    """Register the webhook handlers on ``registry`` (done for kopf's default registry on
    import; call it for a custom registry)."""
    kopf.on.event(GROUP, VERSION, PLURAL, id="webhook-delivery", registry=registry)(
        on_agentrun_event
    )
    kopf.on.cleanup(id="webhook-cleanup", registry=registry)(on_cleanup)


register(kopf.get_default_registry())

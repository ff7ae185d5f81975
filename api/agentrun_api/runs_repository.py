"""AgentRun create / get / cancel / delete, and the run's result, through the Kubernetes API.

The API creates AgentRuns and sets ``spec.cancelRequested``; it never writes status
(shared/CONTRACT.md, "Who writes what"). Errors are agentrun_kube's typed errors.

Cancel is an atomic JSON patch: a ``test`` that the run is still where we read it, then
``add /spec/cancelRequested``. While the run has a phase, the test is on ``/status/phase`` (the
operator may move it; a non-terminal phase is all that matters). A run whose status is still
empty has no ``/status/phase`` to test, so the test is on ``/metadata/resourceVersion``: nothing
changed since the read. A failed test is a Conflict (the real apiserver answers 422 "test
operation failed"; agentrun_kube maps it to Conflict): re-read and decide again.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
from agentrun_contract import names
from agentrun_contract.resource import (
    API_VERSION,
    GROUP,
    KIND,
    PLURAL,
    RESULT_PLURAL,
    VERSION,
    AgentRunSpec,
)
from agentrun_kube.errors import (
    Conflict,
    KubeError,
    NotFound,
    Unavailable,
    from_api_exception,
)
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from agentrun_api.records import RunRecord, record_from_object
from agentrun_api.submission import SubmitRequest

log = logging.getLogger("agentrun.api.runs")

CANCEL_ATTEMPTS = 5
T = TypeVar("T")


async def kube_call(call: Awaitable[T]) -> T:
    """Await a kubernetes_asyncio call; every failure becomes a typed agentrun_kube error
    (no connection and timeouts are a retryable Unavailable)."""
    try:
        return await call
    except ApiException as exc:
        raise from_api_exception(exc) from exc
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise Unavailable(0, type(exc).__name__, str(exc)) from exc


def is_failed_patch_test(error: KubeError) -> bool:
    """A JSON-patch ``test`` that did not hold (or a stale resourceVersion): agentrun_kube maps
    the apiserver's 422 "testing value ... failed" to Conflict."""
    return isinstance(error, Conflict)


class AlreadyFinished(Exception):
    """Cancel of a run that has already ended."""

    def __init__(self, record: RunRecord) -> None:
        super().__init__(f"run {record.name} already finished")
        self.record = record


def build_agentrun(
    name: str,
    request: SubmitRequest,
    fingerprint: str,
    submitted_by: str,
    *,
    submitter_label: str | None = None,
) -> dict[str, Any]:
    """The AgentRun object to create for a validated request. ``submitter_label`` (with auth
    on) scopes the run to its token (label ``agentrun.dev/submitter``)."""
    spec = AgentRunSpec(
        prompt=request.prompt,
        agent_file=request.agent_file,
        agent_yaml=request.agent_yaml,
        framework=request.framework,
        timeout_seconds=request.timeout,
        webhook_url=request.webhook_url,
        session_id=request.session_id,
    )
    labels = {names.LABEL_MANAGED_BY: names.MANAGED_BY}
    if request.session_id is not None:
        labels[names.LABEL_SESSION] = names.session_label_value(request.session_id)
    if submitter_label is not None:
        labels[names.LABEL_SUBMITTER] = submitter_label
    annotations = {
        names.ANNOTATION_FINGERPRINT: fingerprint,
        names.ANNOTATION_SUBMITTED_BY: submitted_by,
    }
    if request.idempotency_key is not None:
        annotations[names.ANNOTATION_IDEMPOTENCY_KEY] = request.idempotency_key
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": spec.to_k8s(),
    }


def cancel_patch(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """The atomic JSON patch that requests cancel of ``obj`` as read (see module docstring).

    It also tests ``/metadata/uid``: a run deleted and re-created under the same name since the
    read (another incarnation, maybe another token's) is never cancelled by mistake.
    """
    status = obj.get("status") or {}
    phase = status.get("phase")
    if phase:
        guard = {"op": "test", "path": "/status/phase", "value": phase}
    else:
        guard = {
            "op": "test",
            "path": "/metadata/resourceVersion",
            "value": obj["metadata"]["resourceVersion"],
        }
    same_run = {"op": "test", "path": "/metadata/uid", "value": obj["metadata"]["uid"]}
    return [same_run, guard, {"op": "add", "path": "/spec/cancelRequested", "value": True}]


class RunsRepository:
    """AgentRuns of one namespace."""

    def __init__(self, api_client: client.ApiClient, namespace: str) -> None:
        self.namespace = namespace
        self._api = client.CustomObjectsApi(api_client)

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create; raises AlreadyExists when the name (the key's run) exists."""
        created: dict[str, Any] = await kube_call(
            self._api.create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, body)
        )
        return created

    async def get(self, name: str) -> dict[str, Any]:
        """The AgentRun as stored; raises NotFound."""
        obj: dict[str, Any] = await kube_call(
            self._api.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)
        )
        return obj

    async def cancel(
        self, name: str, visible: Callable[[RunRecord], bool] | None = None
    ) -> dict[str, Any]:
        """Set spec.cancelRequested while the run is not terminal; returns the patched object.

        Raises NotFound (also when ``visible`` refuses the run as read), or AlreadyFinished (the
        caller answers 409). A cancel of a run already cancel-requested is a no-op that
        succeeds (idempotent).
        """
        for _ in range(CANCEL_ATTEMPTS):
            obj = await self.get(name)
            record = record_from_object(obj)
            if visible is not None and not visible(record):
                raise NotFound(404, "NotFound", f"run {name} is not visible to the caller")
            if record.stored_phase.is_terminal:
                raise AlreadyFinished(record)
            if record.cancel_requested:
                return obj
            try:
                patched: dict[str, Any] = await kube_call(
                    self._api.patch_namespaced_custom_object(
                        GROUP,
                        VERSION,
                        self.namespace,
                        PLURAL,
                        name,
                        cancel_patch(obj),  # a list body is sent as application/json-patch+json
                    )
                )
            except KubeError as error:
                if not is_failed_patch_test(error):
                    raise
                log.debug("cancel guard failed; re-reading", extra={"run": name})
                continue
            return patched
        raise Conflict(409, "Conflict", f"run {name} kept changing while being cancelled")

    async def delete(self, name: str, uid: str | None = None) -> None:
        """Delete the run; its Job, pod, input, transcript and result go with it (owner refs).

        Foreground: the run keeps a deletionTimestamp until everything it owns is gone, so a new
        run under the same Idempotency-Key (409 + Retry-After meanwhile) can never meet the old
        run's Job or input Secret. Raises NotFound; with ``uid``, Conflict when the run under
        that name is another incarnation (a delete precondition)."""
        preconditions = client.V1Preconditions(uid=uid) if uid else None
        await kube_call(
            self._api.delete_namespaced_custom_object(
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                name,
                body=client.V1DeleteOptions(
                    propagation_policy="Foreground", preconditions=preconditions
                ),
            )
        )

    async def get_result(self, name: str) -> str | None:
        """The full result from the run's AgentRunResult, or None if there is none."""
        try:
            obj: dict[str, Any] = await kube_call(
                self._api.get_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, RESULT_PLURAL, names.result_name(name)
                )
            )
        except NotFound:
            return None
        spec: dict[str, Any] = obj.get("spec") or {}
        result = spec.get("result")
        return result if isinstance(result, str) else None

    async def list_page(
        self, *, resource_version: str | None = None, limit: int = 500, cont: str | None = None
    ) -> dict[str, Any]:
        """One page of the namespace's AgentRuns (the run cache lists through this)."""
        kwargs: dict[str, Any] = {"limit": limit}
        if cont:
            kwargs["_continue"] = cont
        if resource_version is not None:
            kwargs["resource_version"] = resource_version
        page: dict[str, Any] = await kube_call(
            self._api.list_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, **kwargs
            )
        )
        return page

    async def watch_response(self, resource_version: str, timeout_seconds: int) -> Any:
        """An open watch (raw aiohttp response, JSON lines) from ``resource_version``."""
        return await kube_call(
            self._api.list_namespaced_custom_object(
                GROUP,
                VERSION,
                self.namespace,
                PLURAL,
                watch=True,
                resource_version=resource_version,
                timeout_seconds=timeout_seconds,
                allow_watch_bookmarks=True,
                _preload_content=False,
            )
        )

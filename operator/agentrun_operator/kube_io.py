"""The operator's Kubernetes calls, typed and in one place (kubernetes_asyncio).

Every call maps ApiException to :mod:`agentrun_kube.errors`, so callers decide on retryable vs
final errors without knowing the client. Patches of custom objects are merge patches.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, Final

import aiohttp
from agentrun_contract import names
from agentrun_contract.resource import (
    API_VERSION,
    GROUP,
    PLURAL,
    RESULT_KIND,
    RESULT_PLURAL,
    TRANSCRIPT_KIND,
    TRANSCRIPT_PLURAL,
    VERSION,
    AgentRun,
    AgentRunResultSpec,
    AgentRunTranscriptSpec,
)
from agentrun_kube.client import TimeoutApiClient
from agentrun_kube.errors import (
    TRANSPORT_ERRORS,
    AlreadyExists,
    KubeError,
    NotFound,
    Unavailable,
    from_api_exception,
    from_transport_error,
)
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from agentrun_operator import metrics
from agentrun_operator.job_manifest import owned_metadata

log = logging.getLogger("agentrun.operator")

MERGE_PATCH: Final = "application/merge-patch+json"
Obj = dict[str, Any]


async def read_json(response: Any) -> Obj:
    """The JSON body of a raw (``_preload_content=False``) response; errors raised typed (the
    client does not raise on its own for raw responses)."""
    try:
        if response.status >= 400:
            exc = ApiException(status=response.status, reason=response.reason)
            exc.body = await response.text()
            raise from_api_exception(exc)
        try:
            data: Obj = await response.json()
        except TRANSPORT_ERRORS as exc:
            raise from_transport_error(exc) from exc
        return data
    finally:
        response.release()


STALE_RETRY_ATTEMPTS: Final = 20
STALE_RETRY_SECONDS: Final = 0.25


class StaleOwnedObject(Unavailable):
    """An object with the name we create belongs to another (older, deleted) owner of the same
    name, and is still going away: retry later. Never adopted."""


def owner_uid(obj: Obj) -> str | None:
    """The uid of the object's controller ownerReference (else its first one), if any."""
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    for ref in refs:
        if ref.get("controller"):
            return str(ref.get("uid"))
    return str(refs[0].get("uid")) if refs else None


def is_stale_copy(existing: Obj, wanted: Obj) -> bool:
    """Does ``existing`` (met on AlreadyExists) belong to another owner than ``wanted`` would?
    A name reused right after a DELETE meets the old run's objects until they are collected."""
    want = owner_uid(wanted)
    return want is not None and owner_uid(existing) != want


class RequestCounter:
    """Counts API requests (for the benchmark's requests-per-run figure)."""

    def __init__(self) -> None:
        self.count = 0


RESERVED_CONNECTIONS: Final = 4
"""Connections of the control pool that run traffic never takes: the leader Lease's renewals
and the health check (which use the same client directly) always find one free."""


class Kube:
    """Thin typed wrappers over the calls the operator makes.

    Two connection pools, so a hundred open log follows can never freeze status patches, Job
    deletes or the Lease (each follow holds its connection for the run's whole life):

    - the control pool, ``api`` (shared with leader election): every call but log follows, at
      most its size minus :data:`RESERVED_CONNECTIONS` at once;
    - the log-follow pool, a second client over the same configuration, sized by
      :meth:`size_log_pool` (the configured concurrency), opened on the first follow and closed
      by :meth:`close_log_pool`.
    """

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        # Typed as Any: the generated client's annotations do not know the private
        # ``_content_type``/``_preload_content`` options nor plain-dict bodies, both of which it
        # supports.
        self.core: Any = client.CoreV1Api(api)
        self.batch: Any = client.BatchV1Api(api)
        self.custom: Any = client.CustomObjectsApi(api)
        self.requests = RequestCounter()
        pool = getattr(api.configuration, "connection_pool_maxsize", None)
        self._control_slots = (
            asyncio.Semaphore(max(1, int(pool) - RESERVED_CONNECTIONS)) if pool else None
        )
        self.log_pool_size = 0
        """Connections of the log-follow pool; 0: no limit."""
        self._log_api: client.ApiClient | None = None
        self._log_core: Any = None

    def size_log_pool(self, connections: int) -> None:
        """Size the log-follow pool (0: no limit); takes effect when it next opens."""
        self.log_pool_size = max(0, connections)

    def _log_follow_core(self) -> Any:
        """The CoreV1Api of the log-follow pool (opened on first use)."""
        if self._log_core is None:
            configuration = copy.deepcopy(self.api.configuration)
            configuration.connection_pool_maxsize = self.log_pool_size  # aiohttp: 0 = no limit
            if isinstance(self.api, TimeoutApiClient):
                self._log_api = TimeoutApiClient(configuration, self.api.timeouts)
            else:
                self._log_api = client.ApiClient(configuration=configuration)
            self._log_core = client.CoreV1Api(self._log_api)
        return self._log_core

    async def close_log_pool(self) -> None:
        """Close the log-follow pool (no follow may be open); it reopens on the next follow."""
        log_api, self._log_api, self._log_core = self._log_api, None, None
        if log_api is not None:
            await log_api.close()

    async def _call(self, coro: Any, *, control: bool = True) -> Any:
        """Await one API call with typed errors; ``control`` calls wait for a control-pool slot
        (a raw response's body is read just after, briefly over the limit)."""
        slots = self._control_slots if control else None
        if slots is not None:
            try:
                await slots.acquire()
            except BaseException:
                coro.close()  # cancelled while waiting: the request was never sent
                raise
        self.requests.count += 1
        metrics.API_REQUESTS.inc()
        try:
            return await coro
        except ApiException as exc:
            raise from_api_exception(exc) from exc
        except TRANSPORT_ERRORS as exc:
            # Refused, reset, cut mid-body or timed out: retryable, like a 503.
            raise from_transport_error(exc) from exc
        finally:
            if slots is not None:
                slots.release()

    # -- AgentRuns
    async def get_run(self, namespace: str, name: str) -> Obj:
        result: Obj = await self._call(
            self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        )
        return result

    async def list_runs(self, namespace: str) -> list[Obj]:
        result = await self._call(
            self.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
        )
        return list(result.get("items") or [])

    async def patch_run_status(
        self, namespace: str, name: str, status: Obj, *, resource_version: str | None = None
    ) -> Obj:
        """Merge-patch ``status``; with ``resource_version`` the patch fails with Conflict if the
        run changed meanwhile (used for terminal transitions, so a cancel is never overtaken)."""
        body: Obj = {"status": status}
        if resource_version is not None:
            body["metadata"] = {"resourceVersion": resource_version}
        result: Obj = await self._call(
            self.custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, name, body, _content_type=MERGE_PATCH
            )
        )
        return result

    async def patch_run_labels(self, namespace: str, name: str, labels: dict[str, str]) -> None:
        await self._call(
            self.custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                name,
                {"metadata": {"labels": labels}},
                _content_type=MERGE_PATCH,
            )
        )

    async def delete_run(self, namespace: str, name: str) -> None:
        """Delete with propagationPolicy Foreground: the run stays (with its
        deletionTimestamp) until its Job, pod, Secret, transcript and result are gone, so a
        new run of the same name (the same Idempotency-Key) never meets them."""
        with contextlib.suppress(NotFound):
            await self._call(
                self.custom.delete_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    namespace,
                    PLURAL,
                    name,
                    body=client.V1DeleteOptions(propagation_policy="Foreground"),
                )
            )

    # -- input Secret and Job
    async def create_secret(self, namespace: str, body: Obj) -> None:
        """Create the run's input Secret. One that already exists is ours (created before a
        restart; the run's input never changes) only if it is owned by this run's uid; an older
        run's Secret of the same name is deleted and the create retried."""
        name = body["metadata"]["name"]
        for _ in range(STALE_RETRY_ATTEMPTS):
            try:
                await self._call(self.core.create_namespaced_secret(namespace, body))
                return
            except AlreadyExists:
                with contextlib.suppress(NotFound):
                    response = await self._call(
                        self.core.read_namespaced_secret(name, namespace, _preload_content=False)
                    )
                    existing = await read_json(response)
                    if not is_stale_copy(existing, body):
                        return
                    await self._replace_stale(namespace, "Secret", existing, body)
        raise self._still_stale(namespace, "Secret", name)

    async def create_job(self, namespace: str, body: Obj) -> tuple[Obj, bool]:
        """Create the Job; if this run's Job already exists (a replay), return it.

        A Job of the same name owned by another uid (an older run of the same name, deleted
        moments ago) is never adopted: it is deleted and the create retried; if it is still
        there after a few seconds, :class:`StaleOwnedObject` (retryable) is raised.

        Returns (job, created)."""
        name = body["metadata"]["name"]
        for _ in range(STALE_RETRY_ATTEMPTS):
            try:
                created = await self._call(
                    self.batch.create_namespaced_job(namespace, body, _preload_content=False)
                )
                return await read_json(created), True
            except AlreadyExists:
                existing = await self.get_job(namespace, name)
                if existing is None:
                    continue  # deleted meanwhile: create again
                if not is_stale_copy(existing, body):
                    return existing, False
                await self._replace_stale(namespace, "Job", existing, body)
        raise self._still_stale(namespace, "Job", name)

    async def _replace_stale(self, namespace: str, kind: str, existing: Obj, wanted: Obj) -> None:
        """Delete ``existing`` (another owner's object with the name ``wanted`` needs), guarded
        by its uid so a newer object is never deleted; say so in the log and an Event."""
        meta = existing.get("metadata") or {}
        name = str(meta.get("name"))
        if not meta.get("deletionTimestamp"):
            message = (
                f"{kind} {name} belongs to an earlier run of the same name (owner uid "
                f"{owner_uid(existing)}); deleting it before creating this run's own"
            )
            log.warning(
                "stale owned object replaced",
                extra={"run": _owner_name(wanted), "kind": kind, "object": name},
            )
            await self.post_event_about(
                _owner_ref(wanted), namespace, reason="StaleObjectReplaced", message=message
            )
            options = client.V1DeleteOptions(
                propagation_policy="Background",
                preconditions=client.V1Preconditions(uid=meta.get("uid")),
            )
            with contextlib.suppress(NotFound, KubeError):
                if kind == "Job":
                    await self._call(
                        self.batch.delete_namespaced_job(name, namespace, body=options)
                    )
                elif kind == "Secret":
                    await self._call(
                        self.core.delete_namespaced_secret(name, namespace, body=options)
                    )
                else:
                    plural = RESULT_PLURAL if kind == RESULT_KIND else TRANSCRIPT_PLURAL
                    await self._call(
                        self.custom.delete_namespaced_custom_object(
                            GROUP, VERSION, namespace, plural, name, body=options
                        )
                    )
        await asyncio.sleep(STALE_RETRY_SECONDS)

    @staticmethod
    def _still_stale(namespace: str, kind: str, name: str) -> StaleOwnedObject:
        return StaleOwnedObject(
            409,
            "StaleObject",
            f"{kind} {namespace}/{name} still belongs to an earlier run of the same name; "
            "waiting for it to be deleted",
        )

    async def get_job(self, namespace: str, name: str) -> Obj | None:
        try:
            response = await self._call(
                self.batch.read_namespaced_job(name, namespace, _preload_content=False)
            )
            return await read_json(response)
        except NotFound:
            return None

    async def list_jobs(self, namespace: str, selector: str) -> list[Obj]:
        response = await self._call(
            self.batch.list_namespaced_job(
                namespace, label_selector=selector, _preload_content=False
            )
        )
        data = await read_json(response)
        return list(data.get("items") or [])

    async def delete_job(self, namespace: str, name: str) -> None:
        """Delete with propagationPolicy Background: a Job's default would orphan its pods."""
        with contextlib.suppress(NotFound):
            await self._call(
                self.batch.delete_namespaced_job(
                    name,
                    namespace,
                    body=client.V1DeleteOptions(propagation_policy="Background"),
                )
            )

    async def list_pods(self, namespace: str, selector: str) -> list[Obj]:
        response = await self._call(
            self.core.list_namespaced_pod(
                namespace, label_selector=selector, _preload_content=False
            )
        )
        data = await read_json(response)
        return list(data.get("items") or [])

    async def stream_pod_log(
        self,
        namespace: str,
        pod: str,
        container: str,
        *,
        since_seconds: int | None,
        read_timeout: float | None = None,
        final: bool = True,
    ) -> AsyncIterator[str]:
        """Follow the container's log with timestamps, one decoded line at a time.

        Ends when the container ends (or the server closes the stream). A stream silent for
        ``read_timeout`` seconds raises ``TimeoutError``; a connection cut mid-stream raises
        aiohttp's ``ClientPayloadError``/``ServerDisconnectedError``: the caller resumes.
        A last line without its newline is yielded only if ``final`` (the container had ended
        when the stream opened): otherwise it may be half a line cut by a closing server, to
        be read whole on resume."""
        kwargs: Obj = {
            "container": container,
            "follow": True,
            "timestamps": True,
            "_preload_content": False,
        }
        if read_timeout is not None:
            kwargs["_request_timeout"] = aiohttp.ClientTimeout(
                total=None, sock_connect=read_timeout, sock_read=read_timeout
            )
        if since_seconds is not None:
            kwargs["since_seconds"] = since_seconds
        response = await self._call(
            self._log_follow_core().read_namespaced_pod_log(pod, namespace, **kwargs),
            control=False,
        )
        if response.status >= 400:
            await read_json(response)  # raises the typed error
        buffer = b""
        try:
            async for piece in response.content.iter_any():
                buffer += piece
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    yield line.decode("utf-8", errors="replace")
            if buffer and final:
                yield buffer.decode("utf-8", errors="replace")
        finally:
            response.release()

    # -- events
    async def list_events(self, namespace: str, kind: str, name: str, uid: str | None) -> list[Obj]:
        """The core/v1 Events about one object (field selector on ``involvedObject``; the uid
        keeps a deleted and re-created namesake's Events out)."""
        selector = f"involvedObject.kind={kind},involvedObject.name={name}"
        if uid:
            selector += f",involvedObject.uid={uid}"
        response = await self._call(
            self.core.list_namespaced_event(
                namespace, field_selector=selector, _preload_content=False
            )
        )
        data = await read_json(response)
        return list(data.get("items") or [])

    async def post_event(
        self, run: AgentRun, *, reason: str, message: str, type_: str = "Normal"
    ) -> None:
        """A core/v1 Event about the run (best effort: an Event is never worth failing for)."""
        await self.post_event_about(
            {
                "apiVersion": API_VERSION,
                "kind": "AgentRun",
                "name": run.metadata.name,
                "uid": run.metadata.uid,
            },
            run.metadata.namespace or "default",
            reason=reason,
            message=message,
            type_=type_,
        )

    async def post_event_about(
        self,
        involved: Obj,
        namespace: str,
        *,
        reason: str,
        message: str,
        type_: str = "Warning",
    ) -> None:
        """A core/v1 Event about ``involved`` (apiVersion, kind, name, uid); best effort."""
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{involved.get('name')}.{uuid.uuid4().hex[:12]}",
                "namespace": namespace,
            },
            "involvedObject": {
                "apiVersion": involved.get("apiVersion"),
                "kind": involved.get("kind"),
                "name": involved.get("name"),
                "namespace": namespace,
                "uid": involved.get("uid"),
            },
            "reason": reason,
            "message": message[:1024],
            "type": type_,
            "source": {"component": "agentrun-operator"},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "reportingComponent": "agentrun-operator",
        }
        try:
            await self._call(self.core.create_namespaced_event(namespace, body))
        except KubeError as exc:
            log.debug("event not posted: %s", exc)

    # -- owned objects: transcript chunks and the result
    async def list_chunks(self, namespace: str, run_name: str) -> list[AgentRunTranscriptSpec]:
        result = await self._call(
            self.custom.list_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                TRANSCRIPT_PLURAL,
                label_selector=f"{names.LABEL_RUN}={run_name}",
            )
        )
        return [
            AgentRunTranscriptSpec.model_validate(item.get("spec") or {})
            for item in result.get("items") or []
        ]

    async def put_chunk(
        self, run: AgentRun, chunk: AgentRunTranscriptSpec, *, create: bool
    ) -> None:
        namespace = run.metadata.namespace or "default"
        name = (
            names.transcript_gap_name(run.metadata.name)
            if chunk.gap
            else names.transcript_chunk_name(run.metadata.name, chunk.index)
        )
        spec = chunk.to_k8s()
        if create:
            body = {
                "apiVersion": API_VERSION,
                "kind": TRANSCRIPT_KIND,
                "metadata": owned_metadata(run, name, "transcript"),
                "spec": spec,
            }
            if await self._create_owned(namespace, TRANSCRIPT_PLURAL, TRANSCRIPT_KIND, body):
                return
            # else: this run's own chunk, written just before a restart: replace it below
        await self._call(
            self.custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                TRANSCRIPT_PLURAL,
                name,
                {"spec": spec},
                _content_type=MERGE_PATCH,
            )
        )

    async def delete_chunk(self, run: AgentRun, index: int) -> None:
        with contextlib.suppress(NotFound):
            await self._call(
                self.custom.delete_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    run.metadata.namespace or "default",
                    TRANSCRIPT_PLURAL,
                    names.transcript_chunk_name(run.metadata.name, index),
                )
            )

    async def put_result(self, run: AgentRun, result: str) -> None:
        namespace = run.metadata.namespace or "default"
        name = names.result_name(run.metadata.name)
        spec = AgentRunResultSpec(
            run_name=run.metadata.name,
            result=result,
            bytes=len(result.encode()),
            sha256=hashlib.sha256(result.encode()).hexdigest(),
        ).to_k8s()
        body = {
            "apiVersion": API_VERSION,
            "kind": RESULT_KIND,
            "metadata": owned_metadata(run, name, "result"),
            "spec": spec,
        }
        if not await self._create_owned(namespace, RESULT_PLURAL, RESULT_KIND, body):
            await self._call(
                self.custom.patch_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    namespace,
                    RESULT_PLURAL,
                    name,
                    {"spec": spec},
                    _content_type=MERGE_PATCH,
                )
            )

    async def get_result(self, namespace: str, run_name: str, run_uid: str | None) -> str | None:
        """The stored result of this run (an AgentRunResult owned by ``run_uid``), else None."""
        try:
            obj: Obj = await self._call(
                self.custom.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, RESULT_PLURAL, names.result_name(run_name)
                )
            )
        except NotFound:
            return None
        if run_uid is not None and owner_uid(obj) != run_uid:
            return None
        result = (obj.get("spec") or {}).get("result")
        return result if isinstance(result, str) else None

    async def _create_owned(self, namespace: str, plural: str, kind: str, body: Obj) -> bool:
        """Create a custom object owned by a run: True if created, False if this run's own
        copy already exists (the caller then updates it). Another owner's copy (an earlier run
        of the same name) is deleted and the create retried."""
        name = body["metadata"]["name"]
        for _ in range(STALE_RETRY_ATTEMPTS):
            try:
                await self._call(
                    self.custom.create_namespaced_custom_object(
                        GROUP, VERSION, namespace, plural, body
                    )
                )
                return True
            except AlreadyExists:
                try:
                    existing: Obj = await self._call(
                        self.custom.get_namespaced_custom_object(
                            GROUP, VERSION, namespace, plural, name
                        )
                    )
                except NotFound:
                    continue
                if not is_stale_copy(existing, body):
                    return False
                await self._replace_stale(namespace, kind, existing, body)
        raise self._still_stale(namespace, kind, name)


def _owner_ref(body: Obj) -> Obj:
    """The controller ownerReference of an object we are about to create (the run)."""
    refs = (body.get("metadata") or {}).get("ownerReferences") or [{}]
    ref: Obj = next((r for r in refs if r.get("controller")), refs[0])
    return ref


def _owner_name(body: Obj) -> str | None:
    name = _owner_ref(body).get("name")
    return names.job_id_for_run_name(str(name)) if name else None


class KubeChunkStore:
    """:class:`agentrun_operator.transcript.ChunkStore` over the run's AgentRunTranscripts."""

    def __init__(self, kube: Kube, run: AgentRun) -> None:
        self.kube = kube
        self.run = run

    async def list_chunks(self) -> list[AgentRunTranscriptSpec]:
        return await self.kube.list_chunks(
            self.run.metadata.namespace or "default", self.run.metadata.name
        )

    async def put_chunk(self, chunk: AgentRunTranscriptSpec, *, create: bool) -> None:
        await self.kube.put_chunk(self.run, chunk, create=create)

    async def delete_chunk(self, index: int) -> None:
        await self.kube.delete_chunk(self.run, index)

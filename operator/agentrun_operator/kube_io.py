"""The operator's Kubernetes calls, typed and in one place (kubernetes_asyncio).

Every call maps ApiException to :mod:`agentrun_kube.errors`, so callers decide on retryable vs
final errors without knowing the client. Patches of custom objects are merge patches.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, Final

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
from agentrun_kube.errors import AlreadyExists, KubeError, NotFound, from_api_exception
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
        data: Obj = await response.json()
        return data
    finally:
        response.release()


class RequestCounter:
    """Counts API requests (for the benchmark's requests-per-run figure)."""

    def __init__(self) -> None:
        self.count = 0


class Kube:
    """Thin typed wrappers over the calls the operator makes."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        # Typed as Any: the generated client's annotations do not know the private
        # ``_content_type``/``_preload_content`` options nor plain-dict bodies, both of which it
        # supports.
        self.core: Any = client.CoreV1Api(api)
        self.batch: Any = client.BatchV1Api(api)
        self.custom: Any = client.CustomObjectsApi(api)
        self.requests = RequestCounter()

    async def _call(self, coro: Any) -> Any:
        self.requests.count += 1
        metrics.API_REQUESTS.inc()
        try:
            return await coro
        except ApiException as exc:
            raise from_api_exception(exc) from exc

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
        with contextlib.suppress(NotFound):
            await self._call(
                self.custom.delete_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    namespace,
                    PLURAL,
                    name,
                    body=client.V1DeleteOptions(propagation_policy="Background"),
                )
            )

    # -- input Secret and Job
    async def create_secret(self, namespace: str, body: Obj) -> None:
        # AlreadyExists: created before a restart; the run's input never changes.
        with contextlib.suppress(AlreadyExists):
            await self._call(self.core.create_namespaced_secret(namespace, body))

    async def create_job(self, namespace: str, body: Obj) -> tuple[Obj, bool]:
        """Create the Job; if it already exists (a replay), return the existing one.

        Returns (job, created)."""
        try:
            created = await self._call(
                self.batch.create_namespaced_job(namespace, body, _preload_content=False)
            )
            return await read_json(created), True
        except AlreadyExists:
            existing = await self.get_job(namespace, body["metadata"]["name"])
            if existing is None:
                raise
            return existing, False

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
        self, namespace: str, pod: str, container: str, *, since_seconds: int | None
    ) -> AsyncIterator[str]:
        """Follow the container's log with timestamps, one decoded line at a time.

        Ends when the container ends (or the server closes the stream)."""
        kwargs: Obj = {
            "container": container,
            "follow": True,
            "timestamps": True,
            "_preload_content": False,
        }
        if since_seconds is not None:
            kwargs["since_seconds"] = since_seconds
        response = await self._call(self.core.read_namespaced_pod_log(pod, namespace, **kwargs))
        if response.status >= 400:
            await read_json(response)  # raises the typed error
        buffer = b""
        try:
            async for piece in response.content.iter_any():
                buffer += piece
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    yield line.decode("utf-8", errors="replace")
            if buffer:
                yield buffer.decode("utf-8", errors="replace")
        finally:
            response.release()

    # -- events
    async def post_event(
        self, run: AgentRun, *, reason: str, message: str, type_: str = "Normal"
    ) -> None:
        """A core/v1 Event about the run (best effort: an Event is never worth failing for)."""
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{run.metadata.name}.{uuid.uuid4().hex[:12]}",
                "namespace": run.metadata.namespace,
            },
            "involvedObject": {
                "apiVersion": API_VERSION,
                "kind": "AgentRun",
                "name": run.metadata.name,
                "namespace": run.metadata.namespace,
                "uid": run.metadata.uid,
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
            await self._call(self.core.create_namespaced_event(run.metadata.namespace, body))
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
            try:
                await self._call(
                    self.custom.create_namespaced_custom_object(
                        GROUP, VERSION, namespace, TRANSCRIPT_PLURAL, body
                    )
                )
                return
            except AlreadyExists:
                pass  # written just before a restart: replace it below
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
        try:
            await self._call(
                self.custom.create_namespaced_custom_object(
                    GROUP, VERSION, namespace, RESULT_PLURAL, body
                )
            )
        except AlreadyExists:
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

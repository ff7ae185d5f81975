"""What each route does, over the repository, the run cache and the auth settings.

Routes (app.py) stay a few lines: they read the request and call one method here. Every refusal
is a :class:`SubmissionError` (status code + a sentence a person can act on).

Idempotency keys live exactly as long as their run: the key is the AgentRun's name (derived from
namespace + key, and the submitting token's name with auth on: each token has its own key space),
so once the run is deleted (DELETE, or retention cleanup) the same key makes a new run. Replays
compare the stored fingerprint annotation, never the body's bytes.

Scoping (auth on): every method takes the :class:`Caller`; a run the caller may not see is
answered exactly as a missing one (404), never 403.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from agentrun_contract import names
from agentrun_contract.resource import Phase
from agentrun_kube.errors import AlreadyExists, Conflict, NotFound
from agentrun_webhooks.policy import Resolver, WebhookURLRefused, check_webhook_url

from agentrun_api.auth import ANONYMOUS, Authenticator, Caller
from agentrun_api.fingerprint import request_fingerprint
from agentrun_api.listing import parse_list_query, select_page
from agentrun_api.metrics import APIMetrics
from agentrun_api.records import RunRecord, record_from_object
from agentrun_api.run_cache import RunCache
from agentrun_api.runs_repository import AlreadyFinished, RunsRepository, build_agentrun
from agentrun_api.schemas import RunListView, RunResultView, RunStatusView, SubmitAccepted
from agentrun_api.settings import APISettings
from agentrun_api.status_view import (
    RETRY_AFTER_QUEUED,
    accepted_view,
    result_view,
    run_links,
    status_view,
)
from agentrun_api.submission import (
    SubmissionError,
    SubmitRequest,
    decode_json_object,
    parse_submission,
)

log = logging.getLogger("agentrun.api")

CREATE_ATTEMPTS = 3


def whole_excerpt(obj: dict[str, Any]) -> str | None:
    """``status.resultExcerpt`` when it is the whole result (not truncated): a fallback for a
    run whose AgentRunResult object is missing."""
    status = obj.get("status") or {}
    excerpt = status.get("resultExcerpt")
    if isinstance(excerpt, str) and status.get("resultTruncated") is not True:
        return excerpt
    return None


def not_found(job_id: str) -> SubmissionError:
    return SubmissionError(
        404, f"No run {job_id!r} in this namespace; check the job_id (it may have been deleted)."
    )


@dataclass(frozen=True)
class Submitted:
    """The outcome of POST /runs: a new run (202) or a replay (200)."""

    replayed: bool
    accepted: SubmitAccepted | None
    status: RunStatusView | None
    poll_url: str
    retry_after: int


class RunService:
    def __init__(
        self,
        settings: APISettings,
        repository: RunsRepository,
        cache: RunCache,
        auth: Authenticator,
        metrics: APIMetrics,
        webhook_resolver: Resolver | None = None,
    ) -> None:
        self.settings = settings
        self.repository = repository
        self.cache = cache
        self.auth = auth
        self.metrics = metrics
        self.webhook_resolver = webhook_resolver

    # ---- views ------------------------------------------------------------------------------

    def base_url(self, request_base_url: str) -> str:
        return (self.settings.public_base_url or request_base_url).rstrip("/")

    def view(self, record: RunRecord, base_url: str) -> RunStatusView:
        links = run_links(base_url, record.job_id, self.auth.read_token_for(record))
        return status_view(record, links, self.cache.queue_position(record.name))

    async def find(self, job_id: str) -> RunRecord | None:
        """The run, from the cache, else (read-your-writes) from a direct GET; None if there is
        none (or it is being deleted)."""
        name = names.run_name_for_job_id(job_id)
        record = self.cache.get(name)
        if record is not None and not record.deleting:
            return record
        try:
            obj = await self.repository.get(name)
        except NotFound:
            return None
        record = record_from_object(obj)
        return None if record.deleting else record

    async def visible_record(self, job_id: str, caller: Caller) -> RunRecord:
        """The run if ``caller`` may see it; else the 404 of a missing run."""
        record = await self.find(job_id)
        if record is None or not caller.may_see(record):
            raise not_found(job_id)
        return record

    # ---- POST /runs ------------------------------------------------------------------------

    async def parse(self, body: bytes, header_key: str | None) -> SubmitRequest:
        request = parse_submission(
            decode_json_object(body),
            header_key=header_key,
            frameworks=self.settings.frameworks,
            timeout_max=self.settings.timeout_max_seconds,
        )
        if request.webhook_url is not None:
            try:
                await check_webhook_url(
                    request.webhook_url,
                    self.settings.webhook_policy,
                    resolver=self.webhook_resolver,
                    at_submit=True,
                )
            except WebhookURLRefused as exc:
                raise SubmissionError(422, exc.message) from exc
        return request

    async def _replay(
        self, name: str, fingerprint: str, request: SubmitRequest, base_url: str, caller: Caller
    ) -> Submitted | None:
        """The replay answer for an existing run, 409 for a different request (or a run the
        caller may not see: never reveal it), None if gone."""
        try:
            obj = await self.repository.get(name)
        except NotFound:
            return None
        metadata = obj.get("metadata") or {}
        if not caller.may_see(record_from_object(obj)):
            raise SubmissionError(
                409,
                f"Idempotency-Key {request.idempotency_key!r} is taken by a run you cannot see; "
                "use a new key.",
            )
        if metadata.get("deletionTimestamp"):
            raise SubmissionError(
                409,
                f"The run for Idempotency-Key {request.idempotency_key!r} is being deleted; "
                "retry in a few seconds to start a new run with this key.",
                retry_after=2,
            )
        annotations = metadata.get("annotations") or {}
        if annotations.get(names.ANNOTATION_FINGERPRINT) != fingerprint:
            raise SubmissionError(
                409,
                f"Idempotency-Key {request.idempotency_key!r} was already used with a different "
                "request; use a new key, or resend exactly the original request.",
            )
        record = self.cache.upsert(obj)
        view = self.view(record, base_url)
        self.metrics.runs_replayed.inc()
        return Submitted(
            replayed=True,
            accepted=None,
            status=view,
            poll_url=view.poll_url,
            retry_after=view.retry_after or RETRY_AFTER_QUEUED,
        )

    def _admission_full(self) -> bool:
        limit = self.settings.max_queued_runs
        return limit > 0 and self.cache.queued_count() >= limit

    async def submit(
        self, body: bytes, header_key: str | None, caller: Caller, request_base_url: str
    ) -> Submitted:
        request = await self.parse(body, header_key)
        fingerprint = request_fingerprint(request)
        base_url = self.base_url(request_base_url)
        submitted_by = caller.token_name or ANONYMOUS
        key_scope = submitted_by if self.auth.scoped else None
        submitter_label = caller.submitter_label if self.auth.scoped else None
        name = names.run_name_for_key(self.settings.namespace, request.idempotency_key, key_scope)
        if self._admission_full():
            # A replay of an existing key is answered even when admission is full.
            if request.idempotency_key is not None:
                replay = await self._replay(name, fingerprint, request, base_url, caller)
                if replay is not None:
                    return replay
            wait = self.settings.backpressure_retry_after_seconds
            raise SubmissionError(
                503,
                f"Too many queued runs ({self.settings.max_queued_runs} or more); retry after "
                f"{wait} seconds.",
                retry_after=wait,
            )
        for _ in range(CREATE_ATTEMPTS):
            body_obj = build_agentrun(
                name, request, fingerprint, submitted_by, submitter_label=submitter_label
            )
            try:
                created: dict[str, Any] = await self.repository.create(body_obj)
            except AlreadyExists:
                if request.idempotency_key is None:
                    # a random name collided (never in practice): draw another
                    name = names.run_name_for_key(self.settings.namespace, None)
                    continue
                replay = await self._replay(name, fingerprint, request, base_url, caller)
                if replay is not None:
                    return replay
                continue  # deleted between the create and the read: create again
            record = self.cache.upsert(created)
            self.metrics.runs_created.inc()
            log.info(
                "run created",
                extra={"run": record.name, "submitted_by": submitted_by},
            )
            links = run_links(base_url, record.job_id, self.auth.read_token_for(record))
            return Submitted(
                replayed=False,
                accepted=accepted_view(record, links),
                status=None,
                poll_url=links.poll_url,
                retry_after=RETRY_AFTER_QUEUED,
            )
        raise SubmissionError(
            503, "The run could not be created because it kept changing; retry the request."
        )

    # ---- reads -----------------------------------------------------------------------------

    async def status(self, job_id: str, caller: Caller, request_base_url: str) -> RunStatusView:
        record = await self.visible_record(job_id, caller)
        return self.view(record, self.base_url(request_base_url))

    def list(
        self,
        status: str | None,
        session_id: str | None,
        page: int | None,
        page_size: int | None,
        caller: Caller,
        request_base_url: str,
    ) -> RunListView:
        query = parse_list_query(status, session_id, page, page_size)
        chosen = select_page(
            self.cache.newest_first(),
            query,
            newest_first=True,
            visible=None if caller.sees_all else caller.may_see,
        )
        base_url = self.base_url(request_base_url)
        return RunListView(
            jobs=[self.view(r, base_url) for r in chosen.records],
            total=chosen.total,
            page=query.page,
            page_size=query.page_size,
        )

    async def result(self, job_id: str, caller: Caller) -> RunResultView:
        # The result is read fresh: the cache may trail the operator's final write.
        name = names.run_name_for_job_id(job_id)
        try:
            obj = await self.repository.get(name)
        except NotFound:
            raise not_found(job_id) from None
        record = record_from_object(obj)
        if record.deleting or not caller.may_see(record):
            raise not_found(job_id)
        if not record.is_finished:
            raise SubmissionError(
                409,
                f"Run {job_id} is still {record.effective_phase.api_status}; its result is "
                f"available once it finishes (poll GET /api/v1/runs/{job_id}).",
            )
        result: str | None = None
        if record.effective_phase is not Phase.CANCELLED:
            result = await self.repository.get_result(name)
            if result is None:
                result = whole_excerpt(obj)
        return result_view(record, result)

    # ---- writes ----------------------------------------------------------------------------

    async def cancel(self, job_id: str, caller: Caller, request_base_url: str) -> RunStatusView:
        name = names.run_name_for_job_id(job_id)
        try:
            obj = await self.repository.cancel(
                name, visible=None if caller.sees_all else caller.may_see
            )
        except NotFound:
            raise not_found(job_id) from None
        except AlreadyFinished as exc:
            raise SubmissionError(
                409,
                f"Run {job_id} already finished as {exc.record.effective_phase.api_status}; "
                "there is nothing to cancel.",
            ) from exc
        record = self.cache.upsert(obj)
        log.info("run cancel requested", extra={"run": name})
        return self.view(record, self.base_url(request_base_url))

    async def delete(self, job_id: str, caller: Caller) -> None:
        name = names.run_name_for_job_id(job_id)
        try:
            obj = await self.repository.get(name)
        except NotFound:
            raise not_found(job_id) from None
        record = record_from_object(obj)
        if not caller.may_see(record):
            raise not_found(job_id)
        if not record.is_finished:
            raise SubmissionError(
                409,
                f"Run {job_id} is still {record.effective_phase.api_status}; cancel it first "
                f"(POST /api/v1/runs/{job_id}/cancel), then delete it.",
            )
        try:
            # The uid precondition: never delete another incarnation re-created since the read.
            await self.repository.delete(name, uid=record.uid)
        except (NotFound, Conflict):
            raise not_found(job_id) from None
        self.cache.remove(name, record.uid)
        log.info("run deleted", extra={"run": name})

"""The run cache's event handling and the cancel patch, without a cluster."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from typing import Any

import pytest
from agentrun_api.listing import queue_positions
from agentrun_api.run_cache import RunCache
from agentrun_api.runs_repository import build_agentrun, cancel_patch
from agentrun_api.submission import SubmitRequest
from agentrun_contract import names
from agentrun_kube.errors import Gone, KubeError


def obj(
    name: str, rv: str, uid: str = "u1", phase: str | None = None, **spec: Any
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "uid": uid,
            "resourceVersion": rv,
            "creationTimestamp": "2026-01-01T00:00:00Z",
        },
        "spec": {"prompt": "p", **spec},
        "status": {"phase": phase} if phase else {},
    }


def cache() -> RunCache:
    return RunCache(repository=None)  # type: ignore[arg-type]


def test_events_add_modify_delete_and_keep_positions_current() -> None:
    c = cache()
    c._apply_event({"type": "ADDED", "object": obj("run-a", "1")})
    c._apply_event({"type": "ADDED", "object": obj("run-b", "2", uid="u2")})
    assert c.queued_count() == 2
    assert c.queue_position("run-b") == 2
    c._apply_event({"type": "MODIFIED", "object": obj("run-a", "3", phase="Running")})
    assert c.queued_count() == 1
    assert c.queue_position("run-b") == 1
    c._apply_event({"type": "DELETED", "object": obj("run-b", "4", uid="u2")})
    assert c.get("run-b") is None
    assert len(c) == 1
    c._apply_event({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}})
    assert c._resource_version == "9"


def test_positions_and_count_stay_exact_through_any_sequence_of_events() -> None:
    """The cache keeps the queued runs in an ordered index (O(log n) per change) instead of
    recomputing positions from every run; after each of 2,000 random events it agrees with
    the reference computation over all runs."""
    rng = random.Random(1234)
    c = cache()
    version = 0
    for _ in range(2_000):
        version += 1
        name = f"run-{rng.randrange(60):02d}"
        roll = rng.random()
        if roll < 0.15:
            held = c.get(name)
            c._apply_event(
                {
                    "type": "DELETED",
                    "object": obj(name, str(version), uid=held.uid if held else "u"),
                }
            )
            continue
        body = obj(
            name,
            str(version),
            uid=f"u-{name}",
            phase=rng.choice([None, "Queued", "Running", "Succeeded"]),
            cancelRequested=rng.random() < 0.1,
        )
        body["metadata"]["creationTimestamp"] = f"2026-01-01T00:00:{int(name[-2:]) % 7:02d}Z"
        if rng.random() < 0.1:
            body["metadata"]["deletionTimestamp"] = "2026-01-02T00:00:00Z"
        c._apply_event({"type": "MODIFIED", "object": body})
        expected = queue_positions(c.records())
        assert c.queued_count() == len(expected)
        for record in c.records():
            assert c.queue_position(record.name) == expected.get(record.name)


def test_an_older_version_never_overwrites_a_newer_one() -> None:
    c = cache()
    c.upsert(obj("run-a", "10", phase="Running"))
    c.upsert(obj("run-a", "7"))  # a late answer to an earlier write
    record = c.get("run-a")
    assert record is not None
    assert record.resource_version == "10"
    # a re-created run (new uid) replaces the old one whatever its version
    c.upsert(obj("run-a", "3", uid="u9"))
    record = c.get("run-a")
    assert record is not None
    assert record.uid == "u9"


def test_delete_of_an_old_incarnation_keeps_the_new_one() -> None:
    c = cache()
    c.upsert(obj("run-a", "5", uid="new"))
    c._apply_event({"type": "DELETED", "object": obj("run-a", "6", uid="old")})
    assert c.get("run-a") is not None


def test_error_events_raise_typed_errors() -> None:
    c = cache()
    with pytest.raises(Gone):
        c._apply_event({"type": "ERROR", "object": {"code": 410, "message": "too old"}})
    with pytest.raises(KubeError):
        c._apply_event({"type": "ERROR", "object": {"code": 500, "message": "boom"}})


def test_cancel_patch_tests_the_phase_or_the_version() -> None:
    assert cancel_patch(obj("run-a", "4", phase="Running")) == [
        {"op": "test", "path": "/metadata/uid", "value": "u1"},
        {"op": "test", "path": "/status/phase", "value": "Running"},
        {"op": "add", "path": "/spec/cancelRequested", "value": True},
    ]
    assert cancel_patch(obj("run-a", "4"))[1] == {
        "op": "test",
        "path": "/metadata/resourceVersion",
        "value": "4",
    }


def test_build_agentrun_records_key_fingerprint_submitter_and_session_label() -> None:
    request = SubmitRequest("p", None, "roles: {}", "praisonai", 60, None, "s", "key")
    body = build_agentrun("run-x", request, "v1:abc", "ci")
    assert body["spec"] == {
        "prompt": "p",
        "agentYaml": "roles: {}",
        "framework": "praisonai",
        "timeoutSeconds": 60,
        "sessionId": "s",
    }
    assert body["metadata"]["annotations"] == {
        names.ANNOTATION_FINGERPRINT: "v1:abc",
        names.ANNOTATION_SUBMITTED_BY: "ci",
        names.ANNOTATION_IDEMPOTENCY_KEY: "key",
    }
    assert body["metadata"]["labels"][names.LABEL_SESSION] == names.session_label_value("s")
    assert names.LABEL_SUBMITTER not in body["metadata"]["labels"]
    scoped = build_agentrun(
        "run-x", request, "v1:abc", "ci", submitter_label=names.submitter_label_value("ci")
    )
    assert scoped["metadata"]["labels"][names.LABEL_SUBMITTER] == names.submitter_label_value("ci")


def test_idempotency_keys_are_per_token_with_auth_on() -> None:
    unscoped = names.run_name_for_key("ns", "k")
    assert unscoped == names.run_name_for_key("ns", "k", None)  # auth off: as before
    assert names.run_name_for_key("ns", "k", "ci") == names.run_name_for_key("ns", "k", "ci")
    assert (
        len(
            {
                unscoped,
                names.run_name_for_key("ns", "k", "ci"),
                names.run_name_for_key("ns", "k", "laptop"),
            }
        )
        == 3
    )


def test_the_cache_keeps_runs_sorted_through_adds_updates_and_deletes() -> None:
    import random

    from agentrun_api.listing import ListQuery, select_page

    c = cache()
    rng = random.Random(7)
    names_alive: dict[str, str] = {}
    for step in range(400):
        name = f"run-{rng.randrange(60):03d}"
        if name in names_alive and rng.random() < 0.3:
            c.remove(name, names_alive.pop(name))
            continue
        uid = names_alive.get(name) or f"u{step}"
        names_alive[name] = uid
        second = rng.randrange(60)
        created = f"2026-01-01T00:00:{second:02d}Z"
        held = c.get(name)
        if held is not None and held.uid == uid:  # creation time never changes
            created = held.created_at.strftime("%Y-%m-%dT%H:%M:%SZ")  # type: ignore[union-attr]
        o = obj(name, str(step + 1), uid=uid, phase=rng.choice([None, "Running", "Succeeded"]))
        o["metadata"]["creationTimestamp"] = created
        c.upsert(o)
    held = list(c.records())
    assert sorted(names_alive) == sorted(r.name for r in held)
    expected = sorted(held, key=lambda r: r.sort_key, reverse=True)
    assert list(c.newest_first()) == expected
    query = ListQuery(None, None, 2, 7)
    assert select_page(c.newest_first(), query, newest_first=True) == select_page(held, query)
    queued = [r.name for r in reversed(expected) if r.phase is None]
    assert [c.queue_position(n) for n in queued] == list(range(1, len(queued) + 1))


class _FakeStream:
    """A watch response: scripted lines, then either the end (the server's timeout) or silence
    forever (a half-open connection)."""

    def __init__(self, lines: list[dict[str, Any]], hang: bool) -> None:
        self._chunks: list[bytes] = []
        for line in lines:
            chunk = json.dumps(line).encode() + b"\n"
            # split each line in two to check the cache reassembles partial chunks
            self._chunks += [chunk[:7], chunk[7:]]
        self._hang = hang
        self.released = False
        self.closed = False

    async def readany(self) -> bytes:
        if self._chunks:
            return self._chunks.pop(0)
        if self._hang:
            await asyncio.Event().wait()
        return b""

    @property
    def content(self) -> _FakeStream:
        return self

    def release(self) -> None:
        self.released = True

    def close(self) -> None:
        self.closed = True


class _FakeRepository:
    """Lists, then serves scripted watches: the first expires (410), the second hangs."""

    def __init__(self) -> None:
        self.lists = 0
        self.watch_versions: list[str] = []
        self.streams: list[_FakeStream] = []

    async def list_page(self, **_: Any) -> dict[str, Any]:
        self.lists += 1
        items = [obj("run-a", "1")] if self.lists == 1 else [obj("run-a", "1"), obj("run-c", "9")]
        return {"items": items, "metadata": {"resourceVersion": str(10 * self.lists)}}

    async def watch_response(self, resource_version: str, timeout_seconds: int) -> _FakeStream:
        self.watch_versions.append(resource_version)
        if len(self.watch_versions) == 1:
            stream = _FakeStream(
                [
                    {"type": "ADDED", "object": obj("run-b", "11", uid="ub")},
                    {"type": "ERROR", "object": {"code": 410, "message": "too old"}},
                ],
                hang=False,
            )
        else:
            stream = _FakeStream([], hang=True)
        self.streams.append(stream)
        return stream


async def test_the_informer_relists_after_410_and_watches_from_the_new_version() -> None:
    repository = _FakeRepository()
    c = RunCache(repository, retry_seconds=0.01)  # type: ignore[arg-type]
    task = asyncio.create_task(c.run())
    try:
        for _ in range(200):
            if len(repository.watch_versions) >= 2:
                break
            await asyncio.sleep(0.01)
        assert repository.lists == 2
        assert repository.watch_versions == ["10", "20"]
        # the re-list replaced the cache: run-b (seen only on the expired watch) is gone,
        # run-c (in the new list) is there
        assert sorted(r.name for r in c.records()) == ["run-a", "run-c"]
        assert repository.streams[0].released
        assert c.synced.is_set()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_silent_watch_is_dropped_and_the_cache_relists() -> None:
    """A half-open watch (no bytes, no end) must not leave the cache stale forever: after
    stale_seconds it is closed and the cache re-lists; meanwhile stale_for() says so."""
    repository = _FakeRepository()
    c = RunCache(  # type: ignore[arg-type]
        repository, retry_seconds=0.01, watch_timeout_seconds=1, stale_seconds=0.3
    )
    task = asyncio.create_task(c.run())
    try:
        for _ in range(300):
            if repository.lists >= 3:
                break
            await asyncio.sleep(0.01)
        assert repository.lists >= 3  # initial, after 410, after the stall
        assert c.stalls >= 1
        assert repository.streams[1].closed  # the half-open connection is not pooled
        assert c.stale_for() is None  # the re-list is contact
        assert c.stale_for(now=c.last_contact + 0.5) == pytest.approx(0.5)  # type: ignore[operator]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_hanging_list_is_bounded_and_reads_as_stale() -> None:
    class HangingRepository(_FakeRepository):
        async def list_page(self, **_: Any) -> dict[str, Any]:
            self.lists += 1
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

    repository = HangingRepository()
    c = RunCache(repository, retry_seconds=0.01, stale_seconds=0.1)  # type: ignore[arg-type]
    task = asyncio.create_task(c.run())
    try:
        await asyncio.sleep(0.35)
        assert repository.lists >= 2  # each stalled list was abandoned and retried
        assert not c.synced.is_set()
        stale = c.stale_for()
        assert stale is not None
        assert stale > 0.1
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

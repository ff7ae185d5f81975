"""The pod-log tail survives dropped streams, and the result is stored before the resume
position passes it (issue 11, defects 1 and 2), against a scripted fake of the Kubernetes calls."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from agentrun_contract import runner
from agentrun_contract.resource import AgentRunTranscriptSpec
from agentrun_contract.stream import StreamEvent, decode_transcript
from agentrun_kube.errors import Unavailable
from agentrun_operator.reconciler import RunContext, RunReconciler
from agentrun_operator.settings import OperatorSettings
from agentrun_operator.transcript import LogFolder, TranscriptWriter

RUN = "run-abc"
RUN_ID = "run_abc"
NONCE = "n0nce"
POD = "run-abc-x1"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def stamp(i: int) -> str:
    t = T0 + timedelta(milliseconds=100 * i)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


def line(i: int, kind: str, seq: int, data: dict[str, Any]) -> str:
    event = runner.make_event(kind, run_id=RUN_ID, nonce=NONCE, seq=seq, data=data)
    return f"{stamp(i)} {runner.encode_event(event)}"


START = line(0, "start", 0, {"framework": "praisonai"})
LOG1 = line(1, "log", 1, {"message": "one", "stream": "stdout"})
LOG2 = line(2, "log", 2, {"message": "two", "stream": "stdout"})
LOG3 = line(3, "log", 3, {"message": "three", "stream": "stdout"})
RESULT0 = line(4, "result", 4, {"index": 0, "count": 2, "text": "the "})
RESULT1 = line(5, "result", 5, {"index": 1, "count": 2, "text": "answer"})
DONE = line(6, "progress", 6, {"percentage": 100, "current_step": "Done"})
WHOLE_LOG = [START, LOG1, LOG2, LOG3, RESULT0, RESULT1, DONE]


def pod(phase: str) -> dict[str, Any]:
    return {"metadata": {"name": POD}, "status": {"phase": phase}}


class Stream:
    """One scripted log stream: these lines, then this error (None: a clean end)."""

    def __init__(self, lines: list[str], error: BaseException | None = None) -> None:
        self.lines = lines
        self.error = error


class FakeKube:
    """The calls the tail makes; records their order in ``calls``."""

    def __init__(self, streams: list[Stream], pod_phases: list[str]) -> None:
        self.streams = streams
        self.pod_phases = pod_phases
        self.opened = 0
        self.calls: list[str] = []
        self.results: dict[str, str] = {}
        self.events: list[dict[str, Any]] = []
        self.put_result_failures = 0

    def size_log_pool(self, _: int) -> None:
        return None

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
        assert pod == POD
        script = self.streams[min(self.opened, len(self.streams) - 1)]
        self.opened += 1
        self.calls.append("open")
        for text in script.lines:
            await asyncio.sleep(0)
            yield text
        if script.error is not None:
            raise script.error

    async def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        phase = self.pod_phases.pop(0) if len(self.pod_phases) > 1 else self.pod_phases[0]
        return [pod(phase)]

    async def put_result(self, run: Any, result: str) -> None:
        if self.put_result_failures > 0:
            self.put_result_failures -= 1
            self.calls.append("put_result:429")
            raise Unavailable(429, "TooManyRequests", "slow down")
        self.calls.append("put_result")
        self.results[run.metadata.name] = result

    async def get_result(self, namespace: str, run_name: str, run_uid: str | None) -> str | None:
        return self.results.get(run_name)

    async def post_event(self, run: Any, *, reason: str, message: str, type_: str = "") -> None:
        self.events.append({"reason": reason, "message": message, "type": type_})


class RecordingStore:
    """Transcript chunks in memory; each stored position is recorded in ``kube.calls``."""

    def __init__(self, kube: FakeKube) -> None:
        self.kube = kube
        self.chunks: dict[tuple[bool, int], AgentRunTranscriptSpec] = {}

    async def list_chunks(self) -> list[AgentRunTranscriptSpec]:
        return list(self.chunks.values())

    async def put_chunk(self, chunk: AgentRunTranscriptSpec, *, create: bool) -> None:
        self.chunks[(chunk.gap, chunk.index)] = chunk.model_copy()
        self.kube.calls.append(f"position:{chunk.runner_seq}")

    async def delete_chunk(self, index: int) -> None:
        del self.chunks[(False, index)]

    def events(self) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        for chunk in self.chunks.values():
            out.extend(decode_transcript(chunk.events))
        return sorted(out, key=lambda e: e.id)


def settings() -> OperatorSettings:
    return OperatorSettings(
        log_reconnect_seconds=0.01,
        log_reconnect_max_seconds=0.05,
        log_read_timeout_seconds=5,
        log_drain_seconds=5,
    )


def reconciler(kube: FakeKube, store: RecordingStore | None = None) -> RunReconciler:
    ctx = RunContext(settings(), kube)  # type: ignore[arg-type]
    key = ("default", RUN)
    ctx.bodies[key] = {
        "apiVersion": "agentrun.dev/v1alpha1",
        "kind": "AgentRun",
        "metadata": {"name": RUN, "namespace": "default", "uid": "uid-1"},
        "spec": {"prompt": "p"},
    }
    rec = RunReconciler(ctx, key)
    rec.writer = TranscriptWriter(RUN, store or RecordingStore(kube))
    rec.nonce = NONCE
    rec.folder = LogFolder(rec.writer, run_id=RUN_ID, nonce=NONCE)
    return rec


async def tail_finished_container(
    kube: FakeKube, *, seconds: float = 10, ends_with_result: bool = False
) -> RunReconciler:
    """Tail the log of a container that had already ended when the tail opened it, to the
    tail's end; returns the reconciler."""
    rec = reconciler(kube)
    rec.tail_pod_finished = True
    rec.log_ends_with_result = ends_with_result
    await asyncio.wait_for(rec.tail(POD), seconds)
    return rec


def messages(events: list[StreamEvent]) -> list[str]:
    return [str(e.data.get("message")) for e in events if e.event == "log"]


@pytest.mark.parametrize(
    "cut",
    [
        aiohttp.ClientPayloadError("Response payload is not completed"),
        aiohttp.ServerDisconnectedError(),
        TimeoutError(),
        ConnectionResetError("reset by peer"),
        None,  # a clean server-side close while the container still runs
    ],
    ids=["payload-cut", "server-disconnected", "read-timeout", "reset", "clean-close"],
)
async def test_tail_resumes_after_any_disconnect_without_loss_or_duplicates(
    cut: BaseException | None,
) -> None:
    kube = FakeKube(
        # the resumed stream repeats LOG2 (sinceSeconds has a margin): it must be skipped
        [Stream([START, LOG1, LOG2], cut), Stream([LOG2, *WHOLE_LOG[3:]])],
        pod_phases=["Running"],
    )
    store = RecordingStore(kube)
    rec = reconciler(kube, store)
    await asyncio.wait_for(rec.tail(POD), 10)
    assert rec.writer is not None
    await rec.writer.flush()

    assert kube.opened == 2
    events = store.events()
    assert [e.id for e in events] == list(range(1, len(events) + 1))
    assert messages(events)[1:] == ["one", "two", "three"]
    assert rec.folder is not None
    assert rec.folder.result() == "the answer"
    assert kube.results == {RUN: "the answer"}
    if cut is not None and not isinstance(cut, TimeoutError):
        assert [e["reason"] for e in kube.events] == ["LogStreamInterrupted"]
        assert type(cut).__name__ in kube.events[0]["message"]
    if isinstance(cut, TimeoutError):
        # a quiet agent looks like a half-open stream: re-opened, but no Warning Event
        assert kube.events == []


async def test_tail_backs_off_and_keeps_trying_while_the_stream_keeps_failing() -> None:
    refused = aiohttp.ClientConnectionError("connection refused")
    kube = FakeKube(
        [Stream([], refused)] * 5 + [Stream(WHOLE_LOG)],
        pod_phases=["Running"],
    )
    rec = reconciler(kube)
    await asyncio.wait_for(rec.tail(POD), 10)
    assert kube.opened == 6
    assert rec.folder is not None
    assert rec.folder.result() == "the answer"


async def test_a_cut_after_the_container_ended_rereads_the_rest_of_the_log() -> None:
    # The container has finished by the time the stream is cut right before the result: the
    # tail must read the log once more instead of concluding from the pod's phase.
    kube = FakeKube(
        [Stream([START, LOG1, LOG2, LOG3], aiohttp.ClientPayloadError("cut")), Stream(WHOLE_LOG)],
        pod_phases=["Succeeded"],
    )
    rec = reconciler(kube)
    await asyncio.wait_for(rec.tail(POD), 10)
    assert rec.folder is not None
    assert rec.folder.result() == "the answer"


async def test_result_is_stored_before_the_position_passes_it_even_through_429s() -> None:
    kube = FakeKube([Stream(WHOLE_LOG)], pod_phases=["Running"])
    kube.put_result_failures = 2
    store = RecordingStore(kube)
    rec = reconciler(kube, store)
    writer = rec.writer
    assert writer is not None

    async def flush_often() -> None:  # the run task flushes concurrently with the tail
        while True:
            await writer.flush()
            await asyncio.sleep(0)

    flusher = asyncio.create_task(flush_often())
    try:
        await asyncio.wait_for(rec.tail(POD), 10)
        await writer.flush()
    finally:
        flusher.cancel()

    stored_at = kube.calls.index("put_result")
    past_result = [
        i
        for i, call in enumerate(kube.calls)
        if call.startswith("position:") and int(call.split(":")[1]) >= 4
    ]
    assert past_result, kube.calls
    assert stored_at < min(past_result), kube.calls
    assert kube.calls.count("put_result:429") == 2


async def test_after_a_restart_past_the_result_lines_the_stored_result_is_used() -> None:
    kube = FakeKube([Stream(WHOLE_LOG)], pod_phases=["Succeeded"])
    store = RecordingStore(kube)
    first = reconciler(kube, store)
    await asyncio.wait_for(first.tail(POD), 10)
    assert first.writer is not None
    await first.writer.flush()

    # A new leader: the writer resumes from the stored chunks, past the result lines.
    second = reconciler(kube, store)
    assert second.writer is not None
    await second.writer.load()
    assert second.writer.runner_seq == 6
    second.folder = LogFolder(second.writer, run_id=RUN_ID, nonce=NONCE)
    for text in WHOLE_LOG:
        second.folder.feed(text)
    assert second.folder.result() is None  # the result lines are behind the position
    assert await second.known_result(second.run()) == "the answer"


class CutContent:
    """A response body a server closed cleanly in the middle of a line."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    async def iter_any(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            yield piece


class CutResponse:
    status = 200

    def __init__(self, pieces: list[bytes]) -> None:
        self.content = CutContent(pieces)

    def release(self) -> None:
        return None


class CutCore:
    async def read_namespaced_pod_log(self, *_: Any, **__: Any) -> CutResponse:
        return CutResponse([START.encode() + b"\n" + LOG1.encode()[:40]])


@pytest.mark.parametrize("final", [False, True])
async def test_half_a_line_from_a_closing_server_is_never_kept_while_the_pod_runs(
    final: bool,
) -> None:
    from agentrun_operator.kube_io import Kube
    from kubernetes_asyncio import client

    api = client.ApiClient(client.Configuration())
    try:
        kube = Kube(api)
        kube._log_follow_core = lambda: CutCore()  # type: ignore[method-assign]
        lines = [
            text
            async for text in kube.stream_pod_log(
                "default", POD, "runner", since_seconds=None, final=final
            )
        ]
    finally:
        await api.close()
    # Half of LOG1 would be folded as a raw log line, its timestamp would then skip the whole
    # line on resume: it is kept only once the container has ended (its last line is final).
    assert lines == ([START, LOG1[:40]] if final else [START])


async def test_a_failed_reconciliation_is_reported_as_a_warning_event() -> None:
    kube = FakeKube([Stream([])], pod_phases=["Running"])
    rec = reconciler(kube)
    await rec.ctx.report_retry(rec.key, Unavailable(429, "TooManyRequests", "slow down"))
    assert len(kube.events) == 1
    event = kube.events[0]
    assert (event["reason"], event["type"]) == ("ReconcileRetry", "Warning")
    assert "Unavailable" in event["message"]
    assert "slow down" in event["message"]


async def test_a_stopped_run_task_never_swallows_its_cancellation_while_draining() -> None:
    # The Lease lost while a run drains its log: the task must stop there, not go on to record
    # a terminal status without the rest of the log (found by the fault soak).
    rec = reconciler(FakeKube([Stream([])], pod_phases=["Running"]))
    never = asyncio.Event()
    rec.tailer = asyncio.create_task(never.wait())
    draining = asyncio.create_task(rec.drain_tailer(100))
    await asyncio.sleep(0.05)
    draining.cancel()
    with pytest.raises(asyncio.CancelledError):
        await draining
    await asyncio.sleep(0)
    assert rec.tailer.cancelled()


async def test_a_clean_but_short_end_of_a_finished_containers_log_is_read_again() -> None:
    # The apiserver ends a log response cleanly when its kubelet stream breaks: a finished
    # container's log that ended with new lines but before the runner's last word is read
    # again, until a read brings nothing new or the last word arrives.
    kube = FakeKube(
        [Stream([START, LOG1]), Stream([LOG1, LOG2, LOG3]), Stream(WHOLE_LOG)],
        pod_phases=["Succeeded"],
    )
    rec = await tail_finished_container(kube)
    assert kube.opened == 3
    assert rec.folder is not None
    assert rec.folder.result() == "the answer"


async def test_a_finished_log_without_a_last_word_ends_once_a_read_brings_nothing_new() -> None:
    # An agent killed before its last word: the tail still ends (no endless re-reading).
    partial = [START, LOG1, LOG2]
    kube = FakeKube([Stream(partial)], pod_phases=["Failed"])
    rec = await tail_finished_container(kube)
    assert kube.opened == 2
    assert rec.folder is not None
    assert rec.folder.result() is None


class HangingThenWholeKube(FakeKube):
    """The first follow delivers two lines, then hangs (half-open) until cancelled."""

    async def stream_pod_log(  # type: ignore[override]
        self, namespace: str, pod: str, container: str, **_: Any
    ) -> AsyncIterator[str]:
        self.opened += 1
        if self.opened == 1:
            yield START
            yield LOG1
            await asyncio.Event().wait()
        for text in WHOLE_LOG:
            yield text


async def test_drain_replaces_a_tail_stuck_on_a_stream_that_outlived_its_container() -> None:
    kube = HangingThenWholeKube([], pod_phases=["Failed"])
    rec = reconciler(kube)
    rec.tail_pod = POD
    rec.tailer = asyncio.create_task(rec.tail(POD))
    await asyncio.sleep(0.05)
    await asyncio.wait_for(rec.drain_tailer(5, patience=0.2), 10)
    assert kube.opened == 2
    assert rec.folder is not None
    assert rec.folder.result() == "the answer"
    assert rec.tailer is not None
    assert rec.tailer.done()


async def test_a_succeeded_containers_log_is_read_until_its_result_even_past_an_empty_read() -> (
    None
):
    # A runner that exited 0 always wrote its result: an early clean end with nothing new
    # (a broken kubelet stream) does not make the log complete.
    kube = FakeKube(
        [Stream([START, LOG1, LOG2, LOG3]), Stream([]), Stream(WHOLE_LOG)],
        pod_phases=["Succeeded"],
    )
    rec = await tail_finished_container(kube)
    assert kube.opened == 3
    assert rec.folder is not None
    assert rec.folder.result() == "the answer"


async def test_a_succeeded_log_read_after_a_restart_ends_when_its_result_is_stored() -> None:
    # After a restart the resume position lies past the result's lines once the result is
    # stored: a re-read brings nothing new, and the stored result says the log is complete.
    kube = FakeKube([Stream([])], pod_phases=["Succeeded"])
    kube.results[RUN] = "the answer"
    await tail_finished_container(kube, seconds=5, ends_with_result=True)
    assert kube.opened == 1

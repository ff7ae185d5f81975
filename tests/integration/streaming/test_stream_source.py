"""The Kubernetes side of the stream (KubeTranscriptSource) against the emulated apiserver: the
run lookup, the labelled chunk list, watch events, 410 Gone, and watch lines far longer than
aiohttp's readline limit."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from agentrun_api.streaming.source import KubeTranscriptSource, WatchEvent
from agentrun_contract import names, resource
from agentrun_contract.stream import StreamEvent, decode_transcript, encode_transcript
from agentrun_devcluster.testing import ClusterThread
from agentrun_kube.client import load_api_client
from agentrun_kube.errors import Gone

from .conftest import CHUNKS, RUNS

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def small_window() -> Iterator[ClusterThread]:
    """A cluster that keeps only the last 5 watch events per resource, so 410 is easy."""
    with ClusterThread(watch_window=5) as running:
        yield running


@pytest.fixture
async def source(small_window: ClusterThread) -> AsyncIterator[KubeTranscriptSource]:
    api = await load_api_client(str(small_window.kubeconfig))
    kube_source = KubeTranscriptSource(
        api,
        "default",
        watch_timeout_seconds=2,
        request_timeout_seconds=10,
        connection_pool_size=4,
    )
    yield kube_source
    await kube_source.close()
    await api.close()


def _chunk(run: str, index: int, events: list[StreamEvent]) -> dict[str, object]:
    return {
        "apiVersion": resource.API_VERSION,
        "kind": resource.TRANSCRIPT_KIND,
        "metadata": {
            "name": names.transcript_chunk_name(run, index),
            "labels": {names.LABEL_RUN: run},
        },
        "spec": {
            "runName": run,
            "index": index,
            "firstEventId": events[0].id,
            "lastEventId": events[-1].id,
            "events": encode_transcript(events),
        },
    }


def _log(i: int, message: str) -> StreamEvent:
    return StreamEvent(id=i, event="log", data={"message": message, "stream": "stdout"})


async def test_run_lookup_and_labelled_list(
    small_window: ClusterThread, source: KubeTranscriptSource
) -> None:
    async with httpx.AsyncClient(base_url=small_window.base_url) as http:
        body = {
            "apiVersion": resource.API_VERSION,
            "kind": resource.KIND,
            "metadata": {"name": "run-lookup"},
            "spec": {"prompt": "x"},
        }
        created = (await http.post(RUNS, json=body)).json()
        (
            await http.post(CHUNKS, json=_chunk("run-lookup", 0, [_log(1, "mine")]))
        ).raise_for_status()
        (
            await http.post(CHUNKS, json=_chunk("run-other", 0, [_log(1, "not mine")]))
        ).raise_for_status()
    snapshot = await source.get_run("run-lookup")
    assert snapshot is not None
    assert snapshot.uid == created["metadata"]["uid"]
    assert not snapshot.transcript_complete
    assert await source.get_run("run-missing") is None
    items, rv = await source.list_chunks("run-lookup")
    assert [i["metadata"]["name"] for i in items] == [names.transcript_chunk_name("run-lookup", 0)]
    assert rv


async def test_watch_delivers_long_lines_intact(
    small_window: ClusterThread, source: KubeTranscriptSource
) -> None:
    items, rv = await source.list_chunks("run-long")
    assert items == []
    # quotes and backslashes double twice (JSON inside JSON): a watch line of several 100 KiB
    message = '"\\' * 40_000
    events = [_log(1, message), _log(2, "\u2028 after")]
    async with httpx.AsyncClient(base_url=small_window.base_url) as http:
        (await http.post(CHUNKS, json=_chunk("run-long", 0, events))).raise_for_status()
    seen: list[WatchEvent] = []
    async for event in source.watch_chunks("run-long", rv):
        seen.append(event)
        if event.type == "ADDED":
            break
    added = seen[-1]
    assert added.type == "ADDED"
    assert decode_transcript(added.object["spec"]["events"]) == events
    assert added.resource_version


async def test_expired_resource_version_is_gone(
    small_window: ClusterThread, source: KubeTranscriptSource
) -> None:
    _, rv = await source.list_chunks("run-expired")
    async with httpx.AsyncClient(base_url=small_window.base_url) as http:
        for i in range(12):  # more changes than the 5-event window holds
            chunk = _chunk(f"run-noise{i}", 0, [_log(1, "noise")])
            (await http.post(CHUNKS, json=chunk)).raise_for_status()
    with pytest.raises(Gone):
        async for _ in source.watch_chunks("run-expired", rv):
            pass

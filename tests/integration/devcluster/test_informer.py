"""The controllers' list+watch cache against the emulated apiserver: 410 Gone and re-list."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from agentrun_devcluster.kube_json import Informer, JsonKube, Obj
from agentrun_devcluster.testing import ClusterThread
from agentrun_kube.client import load_api_client
from agentrun_kube.errors import Gone

CMS = "/api/v1/namespaces/default/configmaps"


def cm(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {}}


def test_expired_watch_raises_gone_and_relist_reconciles_the_cache() -> None:
    with ClusterThread(watch_window=3) as cluster:

        async def scenario() -> list[tuple[str, str]]:
            api = await load_api_client(str(cluster.kubeconfig))
            try:
                kube = JsonKube(api)
                first = await kube.create(CMS, cm("a"))
                old_rv = first["metadata"]["resourceVersion"]
                for i in range(10):
                    await kube.create(CMS, cm(f"b{i}"))
                events: list[tuple[str, str]] = []

                def record(kind: str, obj: Obj) -> None:
                    events.append((kind, obj["metadata"]["name"]))

                informer = Informer(kube, CMS, record)
                with pytest.raises(Gone):
                    await informer._watch(old_rv)
                # an object the cache knew but that vanished while the watch was broken
                informer.cache[("default", "ghost")] = cm("ghost")
                informer.start()
                await asyncio.wait_for(informer.synced.wait(), 10)
                await kube.create(CMS, cm("after"))
                for _ in range(100):
                    if ("ADDED", "after") in events:
                        break
                    await asyncio.sleep(0.05)
                await informer.stop()
                assert ("default", "after") in informer.cache
                assert ("default", "ghost") not in informer.cache
                return events
            finally:
                await api.close()

        events = cluster.call(scenario())
    assert ("DELETED", "ghost") in events
    assert ("ADDED", "b9") in events
    assert ("ADDED", "after") in events

"""kopf 1.45 against the emulator: handlers run exactly once, no warnings, no retry loops.

kopf runs in a subprocess (inside pytest's loop its teardown breaks), cluster-wide, so it must
discover namespaces and the CRD with verbs.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from agentrun_devcluster.testing import ClusterThread
from kubernetes_asyncio import client

APP = Path(__file__).parent / "kopf_app" / "smoke_operator.py"
GROUP, VERSION, PLURAL = "agentrun.dev", "v1alpha1", "agentruns"
MERGE = "application/merge-patch+json"


async def _wait_for(predicate: Any, limit: float = 60.0) -> None:
    async with asyncio.timeout(limit):
        while not await predicate():  # noqa: ASYNC110 - polling the cluster over HTTP
            await asyncio.sleep(0.2)


@pytest.mark.slow
@pytest.mark.parametrize(
    "scope",
    [["--all-namespaces"], ["--namespace", "def*"]],
    ids=["cluster-wide", "namespace-glob"],
)
async def test_kopf_runs_create_handler_once_with_status_storage(
    emulated_cluster: ClusterThread, kube: client.ApiClient, tmp_path: Path, scope: list[str]
) -> None:
    log_path = tmp_path / "kopf.log"
    env = dict(os.environ, KUBECONFIG=str(emulated_cluster.kubeconfig))
    log_file = await asyncio.to_thread(log_path.open, "wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "kopf",
        "run",
        *scope,
        "--standalone",
        "--verbose",
        str(APP),
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    log_file.close()
    try:
        co = client.CustomObjectsApi(kube)
        await co.create_namespaced_custom_object(
            GROUP,
            VERSION,
            "default",
            PLURAL,
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "AgentRun",
                "metadata": {"name": "smoke"},
                "spec": {"prompt": "hello"},
            },
        )

        async def handled() -> bool:
            obj = await co.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "smoke")
            status = obj.get("status") or {}
            return bool((status.get("kopf") or {}).get("diffbase"))

        await _wait_for(handled)
        obj = await co.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "smoke")
        # Bookkeeping lives in status, never in annotations, and the finalizer was added.
        assert not any(
            k.startswith("kopf.zalando.org") for k in obj["metadata"].get("annotations") or {}
        )
        assert "agentrun.dev/smoke" in obj["metadata"]["finalizers"]

        await co.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            "default",
            PLURAL,
            "smoke",
            {"spec": {"cancelRequested": True}},
            _content_type=MERGE,
        )
        await _wait_for(lambda: _log_has(log_path, "SMOKE-UPDATE-HANDLER smoke True"))
        await co.delete_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "smoke")

        async def gone() -> bool:
            items = (await co.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL))[
                "items"
            ]
            return not items

        await _wait_for(gone)  # kopf could remove its finalizer
        await asyncio.sleep(1.0)  # give a wrongly re-triggered handler time to show itself
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(proc.wait(), 20)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    text = await asyncio.to_thread(log_path.read_text)
    assert text.count("SMOKE-CREATE-HANDLER smoke hello") == 1, text
    assert text.count("SMOKE-UPDATE-HANDLER smoke True") == 1, text
    assert text.count("SMOKE-DELETE-HANDLER smoke") == 1, text
    problems = [
        line
        for line in text.splitlines()
        if re.search(r"\b(WARNING|ERROR)\b", line)
        or "Traceback" in line
        or "will retry" in line.lower()
        or "not found" in line.lower()
    ]
    assert problems == [], "\n".join(problems)


async def _log_has(path: Path, needle: str) -> bool:
    return needle in await asyncio.to_thread(path.read_text)

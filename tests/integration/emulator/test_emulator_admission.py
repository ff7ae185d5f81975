"""CRD schema handling and size limits through real HTTP, answered as the real apiserver does."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest
from agentrun_devcluster.testing import ClusterThread
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

GROUP, VERSION, PLURAL = "agentrun.dev", "v1alpha1", "agentruns"
MERGE = "application/merge-patch+json"


def agentrun(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AgentRun",
        "metadata": {"name": name},
        "spec": {"prompt": "hello", **spec},
    }


async def test_create_is_pruned_defaulted_and_validated(kube: client.ApiClient) -> None:
    co = client.CustomObjectsApi(kube)
    made = await co.create_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, agentrun("ok", surprise=True)
    )
    assert made["spec"] == {"prompt": "hello", "framework": "praisonai", "timeoutSeconds": 3600}
    bad = agentrun("bad")
    del bad["spec"]["prompt"]
    with pytest.raises(ApiException) as info:
        await co.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, bad)
    status = json.loads(info.value.body)
    assert info.value.status == 422
    assert status["reason"] == "Invalid"
    assert (
        status["message"] == 'AgentRun.agentrun.dev "bad" is invalid: spec.prompt: Required value'
    )
    assert status["details"]["causes"] == [
        {"reason": "FieldValueRequired", "message": "Required value", "field": "spec.prompt"}
    ]
    with pytest.raises(ApiException) as info:
        await co.create_namespaced_custom_object(
            GROUP, VERSION, "default", PLURAL, agentrun("x" * 53)
        )
    assert "metadata.name: Too long" in json.loads(info.value.body)["message"]


async def test_immutable_spec_rule_on_patch(kube: client.ApiClient) -> None:
    co = client.CustomObjectsApi(kube)
    await co.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, agentrun("imm"))
    with pytest.raises(ApiException) as info:
        await co.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            "default",
            PLURAL,
            "imm",
            {"spec": {"prompt": "new"}},
            _content_type=MERGE,
        )
    assert info.value.status == 422
    assert "spec is immutable" in json.loads(info.value.body)["message"]
    done = await co.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        "default",
        PLURAL,
        "imm",
        {"spec": {"cancelRequested": True}},
        _content_type=MERGE,
    )
    assert done["spec"]["cancelRequested"] is True
    status = await co.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        "default",
        PLURAL,
        "imm",
        {"status": {"phase": "Cancelled", "unknownField": 1}},
        _content_type=MERGE,
    )
    assert status["status"] == {"phase": "Cancelled"}  # pruned on /status too
    with pytest.raises(ApiException) as info:
        await co.patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            "default",
            PLURAL,
            "imm",
            {"status": {"phase": "Nope"}},
            _content_type=MERGE,
        )
    assert info.value.status == 422


async def test_annotation_size_limit(kube: client.ApiClient) -> None:
    core = client.CoreV1Api(kube)
    with pytest.raises(ApiException) as info:
        await core.create_namespaced_config_map(
            "default", {"metadata": {"name": "big", "annotations": {"a": "x" * (256 * 1024)}}}
        )
    assert info.value.status == 422
    assert (
        "metadata.annotations: Too long: must have at most 262144 bytes"
        in json.loads(info.value.body)["message"]
    )
    await core.create_namespaced_config_map(
        "default", {"metadata": {"name": "fits", "annotations": {"a": "x" * (200 * 1024)}}}
    )


async def test_configmap_and_secret_data_limit(kube: client.ApiClient) -> None:
    core = client.CoreV1Api(kube)
    with pytest.raises(ApiException) as info:
        await core.create_namespaced_config_map(
            "default", {"metadata": {"name": "big"}, "data": {"k": "x" * (1024 * 1024 + 1)}}
        )
    assert info.value.status == 422
    assert "Too long: must have at most 1048576 bytes" in json.loads(info.value.body)["message"]
    payload = base64.b64encode(b"x" * (1024 * 1024 + 1)).decode()
    with pytest.raises(ApiException) as info:
        await core.create_namespaced_secret(
            "default", {"metadata": {"name": "big"}, "data": {"k": payload}}
        )
    assert info.value.status == 422
    small = base64.b64encode(b"x" * 1000).decode()
    await core.create_namespaced_secret(
        "default", {"metadata": {"name": "small"}, "data": {"k": small}}
    )


async def test_object_and_request_size_limits(emulated_cluster: ClusterThread) -> None:
    url = f"/apis/{GROUP}/{VERSION}/namespaces/default/agentruntranscripts"
    chunk = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AgentRunTranscript",
        "metadata": {"name": "c"},
        "spec": {
            "runName": "r",
            "index": 0,
            "firstEventId": 1,
            "lastEventId": 1,
            "events": "x" * (1600 * 1024),
        },
    }
    async with httpx.AsyncClient(base_url=emulated_cluster.base_url, timeout=30) as http:
        too_big = await http.post(url, json=chunk)
        # etcd refuses objects over 1.5 MiB; the apiserver passes its error through.
        assert too_big.status_code == 500
        assert too_big.json()["message"] == "etcdserver: request is too large"
        chunk["spec"]["events"] = "x" * (3 * 1024 * 1024)
        huge = await http.post(url, json=chunk)
        assert huge.status_code == 413
        assert huge.json()["message"] == "Request entity too large: limit is 3145728"
        chunk["spec"]["events"] = "x" * (1024 * 1024)
        assert (await http.post(url, json=chunk)).status_code == 201

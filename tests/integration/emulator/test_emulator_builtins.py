"""Builtin kinds get the real strategies' defaulting and validation."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest
from agentrun_devcluster.testing import ClusterThread
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException


def job_body(name: str, restart_policy: str | None = "Never", **spec: Any) -> dict[str, Any]:
    pod_spec: dict[str, Any] = {"containers": [{"name": "main", "image": "runner:1.0"}]}
    if restart_policy:
        pod_spec["restartPolicy"] = restart_policy
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {"template": {"spec": pod_spec}, **spec},
    }


async def test_job_defaults_selector_and_template_labels(emulated_cluster: ClusterThread) -> None:
    async with httpx.AsyncClient(base_url=emulated_cluster.base_url) as http:
        r = await http.post("/apis/batch/v1/namespaces/default/jobs", json=job_body("j"))
    assert r.status_code == 201, r.text
    job = r.json()
    uid = job["metadata"]["uid"]
    spec = job["spec"]
    assert (spec["parallelism"], spec["completions"], spec["backoffLimit"]) == (1, 1, 6)
    assert spec["completionMode"] == "NonIndexed"
    assert spec["suspend"] is False
    assert spec["podReplacementPolicy"] == "TerminatingOrFailed"
    assert spec["selector"] == {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
    assert spec["template"]["metadata"]["labels"] == {
        "batch.kubernetes.io/controller-uid": uid,
        "batch.kubernetes.io/job-name": "j",
        "controller-uid": uid,
        "job-name": "j",
    }
    container = spec["template"]["spec"]["containers"][0]
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert job["metadata"]["generation"] == 1


async def test_job_validation(kube: client.ApiClient) -> None:
    batch = client.BatchV1Api(kube)
    for policy, wording in ((None, "Required value"), ("Always", 'Unsupported value: "Always"')):
        with pytest.raises(ApiException) as info:
            await batch.create_namespaced_job("default", job_body("bad", restart_policy=policy))
        assert info.value.status == 422
        assert (
            f"spec.template.spec.restartPolicy: {wording}" in json.loads(info.value.body)["message"]
        )
    await batch.create_namespaced_job("default", job_body("ok", backoffLimit=0))
    with pytest.raises(ApiException) as info:
        await batch.patch_namespaced_job(
            "ok",
            "default",
            {"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "other"}]}}}},
        )
    assert info.value.status == 422
    assert "spec.template" in json.loads(info.value.body)["message"]
    suspended = await batch.patch_namespaced_job("ok", "default", {"spec": {"suspend": True}})
    assert suspended.metadata.generation == 2


async def test_pod_container_defaults(kube: client.ApiClient) -> None:
    core = client.CoreV1Api(kube)
    p = await core.create_namespaced_pod(
        "default",
        {
            "metadata": {"name": "p"},
            "spec": {
                "containers": [
                    {"name": "a", "image": "busybox"},
                    {"name": "b", "image": "registry/x:1.2"},
                ]
            },
        },
    )
    a, b = p.spec.containers
    assert (a.image_pull_policy, b.image_pull_policy) == ("Always", "IfNotPresent")
    assert a.termination_message_policy == "File"
    assert p.spec.restart_policy == "Always"
    assert p.spec.termination_grace_period_seconds == 30
    assert p.status.phase == "Pending"
    with pytest.raises(ApiException) as info:
        await core.create_namespaced_pod(
            "default", {"metadata": {"name": "q"}, "spec": {"containers": [{"name": "a"}]}}
        )
    assert info.value.status == 422


async def test_secret_string_data_is_merged_into_data(
    emulated_cluster: ClusterThread, kube: client.ApiClient
) -> None:
    core = client.CoreV1Api(kube)
    s = await core.create_namespaced_secret(
        "default",
        {
            "metadata": {"name": "s"},
            "stringData": {"KEY": "välue"},
            "data": {"OTHER": base64.b64encode(b"x").decode()},
        },
    )
    assert s.type == "Opaque"
    assert base64.b64decode(s.data["KEY"]).decode() == "välue"
    assert s.data["OTHER"] == base64.b64encode(b"x").decode()
    async with httpx.AsyncClient(base_url=emulated_cluster.base_url) as http:
        raw = (await http.get("/api/v1/namespaces/default/secrets/s")).json()
        assert "stringData" not in raw
        bad = await http.post(
            "/api/v1/namespaces/default/secrets",
            json={
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "b"},
                "data": {"K": "not base64!"},
            },
        )
    assert bad.status_code == 400

"""Server-side printing: Tables over HTTP, and the real kubectl against the emulator."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
from agentrun_devcluster.testing import ClusterThread
from kubernetes_asyncio import client

GROUP, VERSION, PLURAL = "agentrun.dev", "v1alpha1", "agentruns"
TABLE_ACCEPT = (
    "application/json;as=Table;v=v1;g=meta.k8s.io,"
    "application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
)
KUBECTL = shutil.which("kubectl") or (
    "/usr/bin/kubectl" if Path("/usr/bin/kubectl").exists() else None
)


async def _seed(kube: client.ApiClient) -> None:
    co = client.CustomObjectsApi(kube)
    await co.create_namespaced_custom_object(
        GROUP,
        VERSION,
        "default",
        PLURAL,
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "AgentRun",
            "metadata": {"name": "run-1"},
            "spec": {"prompt": "p", "sessionId": "sess-9"},
        },
    )
    await co.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        "default",
        PLURAL,
        "run-1",
        {
            "status": {
                "phase": "Succeeded",
                "reason": "agent_error",
                "durationSeconds": 12.5,
                "jobName": "run-1-job",
                "webhook": {"state": "delivered", "id": "w1"},
            }
        },
        _content_type="application/merge-patch+json",
    )
    await co.create_namespaced_custom_object(
        GROUP,
        VERSION,
        "default",
        PLURAL,
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "AgentRun",
            "metadata": {"name": "run-2"},
            "spec": {"prompt": "p"},
        },
    )


async def test_table_for_custom_resources(
    emulated_cluster: ClusterThread, kube: client.ApiClient
) -> None:
    await _seed(kube)
    async with httpx.AsyncClient(base_url=emulated_cluster.base_url) as http:
        r = await http.get(
            f"/apis/{GROUP}/{VERSION}/namespaces/default/{PLURAL}", headers={"Accept": TABLE_ACCEPT}
        )
        plain = await http.get(f"/apis/{GROUP}/{VERSION}/namespaces/default/{PLURAL}/run-1")
    t = r.json()
    assert t["kind"] == "Table"
    assert t["apiVersion"] == "meta.k8s.io/v1"
    names = [(c["name"], c["priority"]) for c in t["columnDefinitions"]]
    assert names == [
        ("Name", 0),
        ("Status", 0),
        ("Reason", 1),
        ("Session", 0),
        ("Duration", 0),
        ("Webhook", 0),
        ("Job", 1),
        ("Age", 0),
    ]
    rows = {row["cells"][0]: row["cells"] for row in t["rows"]}
    assert rows["run-1"][1:7] == [
        "Succeeded",
        "agent_error",
        "sess-9",
        12.5,
        "delivered",
        "run-1-job",
    ]
    assert rows["run-1"][7].endswith("s")  # an age such as "0s"
    assert rows["run-2"][1:7] == [None] * 6
    assert t["rows"][0]["object"]["kind"] == "PartialObjectMetadata"
    assert plain.json()["kind"] == "AgentRun"  # no Table unless asked


async def test_table_for_pods_and_jobs(
    emulated_cluster: ClusterThread, kube: client.ApiClient
) -> None:
    core, batch = client.CoreV1Api(kube), client.BatchV1Api(kube)
    await core.create_namespaced_pod(
        "default",
        {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}},
    )
    await core.patch_namespaced_pod_status(
        "p",
        "default",
        {
            "status": {
                "phase": "Running",
                "containerStatuses": [
                    {
                        "name": "c",
                        "ready": True,
                        "restartCount": 2,
                        "image": "i",
                        "imageID": "",
                        "state": {"running": {}},
                    }
                ],
            }
        },
    )
    await batch.create_namespaced_job(
        "default",
        {
            "metadata": {"name": "j"},
            "spec": {
                "template": {
                    "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}
                }
            },
        },
    )
    await batch.patch_namespaced_job_status(
        "j",
        "default",
        {
            "status": {
                "conditions": [{"type": "Complete", "status": "True"}],
                "succeeded": 1,
                "startTime": "2026-01-01T00:00:00Z",
                "completionTime": "2026-01-01T00:01:05Z",
            }
        },
    )
    async with httpx.AsyncClient(base_url=emulated_cluster.base_url) as http:
        pods = (
            await http.get("/api/v1/namespaces/default/pods", headers={"Accept": TABLE_ACCEPT})
        ).json()
        jobs = (
            await http.get(
                "/apis/batch/v1/namespaces/default/jobs/j", headers={"Accept": TABLE_ACCEPT}
            )
        ).json()
    assert [c["name"] for c in pods["columnDefinitions"]][:5] == [
        "Name",
        "Ready",
        "Status",
        "Restarts",
        "Age",
    ]
    assert pods["rows"][0]["cells"][:4] == ["p", "1/1", "Running", "2"]
    assert [c["name"] for c in jobs["columnDefinitions"]] == [
        "Name",
        "Status",
        "Completions",
        "Duration",
        "Age",
    ]
    assert jobs["rows"][0]["cells"][:4] == ["j", "Complete", "1/1", "65s"]


async def _kubectl(kubeconfig: Path, *args: str) -> tuple[int, str, str]:
    assert KUBECTL is not None
    proc = await asyncio.create_subprocess_exec(
        KUBECTL,
        "--kubeconfig",
        str(kubeconfig),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")
async def test_real_kubectl_get_agentruns(
    emulated_cluster: ClusterThread, kube: client.ApiClient
) -> None:
    await _seed(kube)
    code, out, err = await _kubectl(emulated_cluster.kubeconfig, "get", "agentruns")
    assert code == 0, err
    header = out.splitlines()[0].split()
    assert header == ["NAME", "STATUS", "SESSION", "DURATION", "WEBHOOK", "AGE"]
    row = next(line.split() for line in out.splitlines() if line.startswith("run-1"))
    assert row[:5] == ["run-1", "Succeeded", "sess-9", "12.5", "delivered"]
    # Missing values are null cells, which kubectl prints as blanks.
    assert len(next(line for line in out.splitlines() if line.startswith("run-2")).split()) == 2
    code, wide, err = await _kubectl(emulated_cluster.kubeconfig, "get", "ar", "-o", "wide")
    assert code == 0, err
    assert wide.splitlines()[0].split() == [
        "NAME",
        "STATUS",
        "REASON",
        "SESSION",
        "DURATION",
        "WEBHOOK",
        "JOB",
        "AGE",
    ]
    code, out, err = await _kubectl(
        emulated_cluster.kubeconfig, "get", "ar", "run-1", "-o", "jsonpath={.spec.sessionId}"
    )
    assert (code, out) == (0, "sess-9"), err
    code, out, err = await _kubectl(emulated_cluster.kubeconfig, "get", "agentruns", "-A")
    assert code == 0, err
    assert out.splitlines()[0].split()[:2] == ["NAMESPACE", "NAME"]
    assert "warning" not in err.lower(), err
    assert "error" not in err.lower(), err


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")
async def test_real_kubectl_builtins_and_errors(
    emulated_cluster: ClusterThread, kube: client.ApiClient
) -> None:
    core = client.CoreV1Api(kube)
    await core.create_namespaced_config_map(
        "default", {"metadata": {"name": "cm"}, "data": {"a": "1"}}
    )
    code, out, err = await _kubectl(emulated_cluster.kubeconfig, "get", "configmaps,namespaces")
    assert code == 0, err
    assert "configmap/cm" in out
    assert "namespace/kube-system" in out
    code, out, err = await _kubectl(emulated_cluster.kubeconfig, "get", "agentruns", "missing")
    assert code != 0
    assert 'agentruns.agentrun.dev "missing" not found' in err
    code, out, err = await _kubectl(
        emulated_cluster.kubeconfig, "api-resources", "--api-group", GROUP
    )
    assert code == 0, err
    assert "agentruns" in out
    assert "ar" in out


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")
async def test_real_kubectl_get_watch_prints_rows(
    emulated_cluster: ClusterThread, kube: client.ApiClient
) -> None:
    assert KUBECTL is not None
    await _seed(kube)
    proc = await asyncio.create_subprocess_exec(
        KUBECTL,
        "--kubeconfig",
        str(emulated_cluster.kubeconfig),
        "get",
        "agentruns",
        "-w",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        lines = [(await asyncio.wait_for(proc.stdout.readline(), 30)).decode() for _ in range(3)]
        co = client.CustomObjectsApi(kube)
        await co.create_namespaced_custom_object(
            GROUP,
            VERSION,
            "default",
            PLURAL,
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "AgentRun",
                "metadata": {"name": "run-3"},
                "spec": {"prompt": "p", "sessionId": "live"},
            },
        )
        lines.append((await asyncio.wait_for(proc.stdout.readline(), 30)).decode())
    finally:
        proc.terminate()
        _, err = await proc.communicate()
    assert lines[0].split() == ["NAME", "STATUS", "SESSION", "DURATION", "WEBHOOK", "AGE"]
    assert lines[3].split()[:2] == ["run-3", "live"]
    assert b"Unable to decode" not in err


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")
async def test_real_kubectl_apply_describe_patch_delete(
    emulated_cluster: ClusterThread, tmp_path: Path
) -> None:
    manifest = tmp_path / "objects.yaml"
    manifest.write_text(
        "apiVersion: agentrun.dev/v1alpha1\nkind: AgentRun\nmetadata:\n  name: applied\n"
        "spec:\n  prompt: hi\n---\n"
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm1\ndata:\n  a: '1'\n"
    )
    kc = emulated_cluster.kubeconfig
    code, out, err = await _kubectl(kc, "apply", "-f", str(manifest))
    assert code == 0, err
    assert "agentrun.agentrun.dev/applied created" in out
    manifest.write_text(
        manifest.read_text().replace("a: '1'", "a: '2'").replace("prompt: hi", "prompt: changed")
    )
    code, out, err = await _kubectl(kc, "apply", "-f", str(manifest))
    assert code != 0  # the CRD's CEL rule keeps the spec immutable...
    assert "spec is immutable after creation" in err
    assert "configmap/cm1 configured" in out  # ...while the ConfigMap is updated
    code, out, err = await _kubectl(kc, "describe", "agentruns", "applied")
    assert code == 0, err
    assert "Timeout Seconds:  3600" in out  # defaulted by the schema
    code, out, err = await _kubectl(
        kc,
        "patch",
        "agentruns",
        "applied",
        "--type=merge",
        "-p",
        '{"spec":{"cancelRequested":true}}',
    )
    assert code == 0, err
    code, out, err = await _kubectl(kc, "delete", "-f", str(manifest))
    assert code == 0, err
    assert 'agentrun.agentrun.dev "applied" deleted' in out
    # Typed kubectl commands send protobuf, which the emulator does not decode: a clear 415.
    code, out, err = await _kubectl(kc, "create", "namespace", "x")
    assert code != 0
    assert "does not decode application/vnd.kubernetes.protobuf" in err


class _TwoLines:
    async def read_log(
        self,
        namespace: str,
        pod: str,
        container: str | None,
        *,
        follow: bool,
        since_time: Any,
        tail_lines: int | None,
        timestamps: bool,
    ) -> Any:
        lines = [b"first line\n", b"second line\n"]
        for line in lines[-tail_lines:] if tail_lines else lines:
            yield line


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")
async def test_real_kubectl_logs(emulated_cluster: ClusterThread, kube: client.ApiClient) -> None:
    emulated_cluster.server.set_pod_log_provider(_TwoLines())
    core = client.CoreV1Api(kube)
    await core.create_namespaced_pod(
        "default",
        {
            "metadata": {"name": "p"},
            "spec": {"nodeName": "n", "containers": [{"name": "c", "image": "i"}]},
        },
    )
    await core.patch_namespaced_pod_status(
        "p",
        "default",
        {
            "status": {
                "phase": "Running",
                "containerStatuses": [
                    {
                        "name": "c",
                        "ready": True,
                        "restartCount": 0,
                        "image": "i",
                        "imageID": "",
                        "state": {"running": {}},
                    }
                ],
            }
        },
    )
    code, out, err = await _kubectl(emulated_cluster.kubeconfig, "logs", "p")
    assert (code, out) == (0, "first line\nsecond line\n"), err
    code, out, err = await _kubectl(emulated_cluster.kubeconfig, "logs", "p", "--tail=1")
    assert (code, out) == (0, "second line\n"), err

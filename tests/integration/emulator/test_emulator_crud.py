"""Core semantics of the emulated apiserver, one by one, over real HTTP."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import httpx
import pytest
from agentrun_devcluster.testing import ClusterThread
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

GROUP, VERSION, PLURAL = "agentrun.dev", "v1alpha1", "agentruns"
MERGE = "application/merge-patch+json"
JSONPATCH = "application/json-patch+json"


def agentrun(name: str | None = None, **spec: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name} if name else {"generateName": "run-"}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AgentRun",
        "metadata": meta,
        "spec": {"prompt": "hello", **spec},
    }


def body_of(exc: ApiException) -> dict[str, Any]:
    return dict(json.loads(exc.body))


async def test_discovery_builtins_and_crd(emulated_cluster: ClusterThread) -> None:
    async with httpx.AsyncClient(base_url=emulated_cluster.base_url) as http:
        version = (await http.get("/version")).json()
        assert version["major"] == "1"
        core = (await http.get("/api/v1")).json()
        by_name = {r["name"]: r for r in core["resources"]}
        for name in (
            "namespaces",
            "pods",
            "pods/log",
            "pods/status",
            "configmaps",
            "secrets",
            "events",
            "serviceaccounts",
        ):
            assert name in by_name, name
        assert by_name["pods"]["namespaced"] is True
        assert by_name["namespaces"]["namespaced"] is False
        assert "watch" in by_name["pods"]["verbs"]
        assert by_name["pods/log"]["verbs"] == ["get"]
        groups = {g["name"] for g in (await http.get("/apis")).json()["groups"]}
        assert {
            "batch",
            "coordination.k8s.io",
            "events.k8s.io",
            "apiextensions.k8s.io",
            GROUP,
        } <= groups
        crd_list = (await http.get(f"/apis/{GROUP}/{VERSION}")).json()
        ar = next(r for r in crd_list["resources"] if r["name"] == PLURAL)
        assert ar["kind"] == "AgentRun"
        assert ar["shortNames"] == ["ar"]
        assert ar["namespaced"] is True
        assert "agentruns/status" in {r["name"] for r in crd_list["resources"]}
        jobs = (await http.get("/apis/batch/v1")).json()
        assert {"jobs", "jobs/status"} <= {r["name"] for r in jobs["resources"]}
        assert (await http.get(f"/apis/{GROUP}")).json()["preferredVersion"]["version"] == VERSION
        missing = await http.get("/apis/nope.example/v1")
        assert missing.status_code == 404
        assert missing.json()["reason"] == "NotFound"


async def test_new_crd_is_served_and_discoverable_at_once(
    emulated_cluster: ClusterThread, kube: client.ApiClient
) -> None:
    ext = client.ApiextensionsV1Api(kube)
    await ext.create_custom_resource_definition(
        {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {
                "group": "example.com",
                "scope": "Cluster",
                "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                "versions": [
                    {
                        "name": "v1",
                        "served": True,
                        "storage": True,
                        "schema": {
                            "openAPIV3Schema": {
                                "type": "object",
                                "x-kubernetes-preserve-unknown-fields": True,
                            }
                        },
                    }
                ],
            },
        }
    )
    async with httpx.AsyncClient(base_url=emulated_cluster.base_url) as http:
        res = (await http.get("/apis/example.com/v1")).json()["resources"]
        assert res[0]["name"] == "widgets"
        assert res[0]["namespaced"] is False
    co = client.CustomObjectsApi(kube)
    made = await co.create_cluster_custom_object(
        "example.com",
        "v1",
        "widgets",
        {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "x": 1},
    )
    assert made["x"] == 1
    await ext.delete_custom_resource_definition("widgets.example.com")
    async with httpx.AsyncClient(base_url=emulated_cluster.base_url) as http:
        assert (await http.get("/apis/example.com/v1/widgets")).status_code == 404


async def test_namespaces_exist_and_can_be_created(kube: client.ApiClient) -> None:
    core = client.CoreV1Api(kube)
    names = {n.metadata.name for n in (await core.list_namespace()).items}
    assert {"default", "kube-system"} <= names
    created = await core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name="team-a"))
    )
    assert created.status.phase == "Active"
    got = await core.read_namespace("team-a")
    assert got.metadata.uid == created.metadata.uid
    with pytest.raises(ApiException) as info:
        await core.create_namespaced_config_map("no-such-ns", {"metadata": {"name": "x"}})
    assert info.value.status == 404
    assert body_of(info.value)["message"] == 'namespaces "no-such-ns" not found'


async def test_create_fills_metadata_and_conflicts(kube: client.ApiClient) -> None:
    co = client.CustomObjectsApi(kube)
    made = await co.create_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, agentrun("r1")
    )
    meta = made["metadata"]
    assert meta["namespace"] == "default"  # from the URL
    assert re.fullmatch(r"[0-9a-f-]{36}", meta["uid"])
    assert isinstance(meta["resourceVersion"], str)
    assert int(meta["resourceVersion"]) > 0
    assert meta["generation"] == 1
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", meta["creationTimestamp"])
    with pytest.raises(ApiException) as info:
        await co.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, agentrun("r1"))
    assert info.value.status == 409
    status = body_of(info.value)
    assert status["reason"] == "AlreadyExists"
    assert status["details"] == {"name": "r1", "group": GROUP, "kind": PLURAL}
    assert status["message"] == 'agentruns.agentrun.dev "r1" already exists'
    generated = await co.create_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, agentrun()
    )
    assert re.fullmatch(r"run-[a-z0-9]{5}", generated["metadata"]["name"])
    assert int(generated["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])


async def test_get_missing_is_404_status(kube: client.ApiClient) -> None:
    co = client.CustomObjectsApi(kube)
    with pytest.raises(ApiException) as info:
        await co.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "nope")
    assert info.value.status == 404
    assert body_of(info.value)["reason"] == "NotFound"


async def test_list_label_and_field_selectors(kube: client.ApiClient) -> None:
    core = client.CoreV1Api(kube)
    for name, labels in (("a", {"app": "x", "tier": "1"}), ("b", {"app": "y"}), ("c", {})):
        await core.create_namespaced_config_map(
            "default", {"metadata": {"name": name, "labels": labels}}
        )

    async def names(**kw: Any) -> list[str]:
        result = await core.list_namespaced_config_map("default", **kw)
        return [i.metadata.name for i in result.items]

    assert await names(label_selector="app=x") == ["a"]
    assert await names(label_selector="app==y") == ["b"]
    assert await names(label_selector="app!=x") == ["b", "c"]
    assert await names(label_selector="app in (x, y)") == ["a", "b"]
    assert await names(label_selector="app notin (x)") == ["b", "c"]
    assert await names(label_selector="app") == ["a", "b"]
    assert await names(label_selector="!app") == ["c"]
    assert await names(label_selector="app=x,tier=1") == ["a"]
    assert await names(field_selector="metadata.name=b") == ["b"]
    assert await names(field_selector="metadata.name!=b") == ["a", "c"]
    with pytest.raises(ApiException) as info:
        await names(field_selector="spec.nope=1")
    assert info.value.status == 400
    with pytest.raises(ApiException) as info:
        await names(label_selector="app in (x")
    assert info.value.status == 400


async def test_list_limit_continue_and_cluster_wide(kube: client.ApiClient) -> None:
    core = client.CoreV1Api(kube)
    await core.create_namespace({"metadata": {"name": "other"}})
    for i in range(5):
        await core.create_namespaced_config_map("default", {"metadata": {"name": f"cm-{i}"}})
    await core.create_namespaced_config_map("other", {"metadata": {"name": "cm-other"}})
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        page = await core.list_namespaced_config_map("default", limit=2, _continue=token)
        pages += 1
        seen += [i.metadata.name for i in page.items]
        token = page.metadata._continue
        if not token:
            break
        assert page.metadata.remaining_item_count > 0
    assert seen == [f"cm-{i}" for i in range(5)]
    assert pages == 3
    everywhere = await core.list_config_map_for_all_namespaces()
    assert {(i.metadata.namespace, i.metadata.name) for i in everywhere.items} >= {
        ("other", "cm-other"),
        ("default", "cm-0"),
    }
    assert int(everywhere.metadata.resource_version) > 0


async def test_paged_list_then_watch_misses_no_change(
    emulated_cluster: ClusterThread, kube: client.ApiClient
) -> None:
    """kopf lists in pages and watches from the last page's resourceVersion: a change made to
    an earlier page while the later ones were read must still reach the watch."""
    co = client.CustomObjectsApi(kube)
    for i in range(4):
        await co.create_namespaced_custom_object(
            GROUP, VERSION, "default", PLURAL, agentrun(f"page-{i}")
        )
    first = await co.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, limit=2)
    await co.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        "default",
        PLURAL,
        "page-0",
        {"metadata": {"labels": {"changed": "between-pages"}}},
        _content_type=MERGE,
    )
    last = await co.list_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, limit=2, _continue=first["metadata"]["continue"]
    )
    assert [o["metadata"]["name"] for o in last["items"]] == ["page-2", "page-3"]
    assert last["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    url = f"/apis/{GROUP}/{VERSION}/namespaces/default/{PLURAL}"
    async with httpx.AsyncClient(base_url=emulated_cluster.base_url, timeout=30) as http:
        events = await asyncio.wait_for(
            _collect(http, url, {"resourceVersion": last["metadata"]["resourceVersion"]}, 1), 15
        )
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("MODIFIED", "page-0")
    ]


async def test_put_with_stale_resource_version_is_409(kube: client.ApiClient) -> None:
    co = client.CustomObjectsApi(kube)
    made = await co.create_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, agentrun("r")
    )
    first = dict(made, metadata=dict(made["metadata"], labels={"a": "1"}))
    updated = await co.replace_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, "r", first
    )
    assert updated["metadata"]["labels"] == {"a": "1"}
    assert updated["metadata"]["generation"] == 1  # metadata changes do not bump generation
    stale = dict(made, metadata=dict(made["metadata"], labels={"a": "2"}))
    with pytest.raises(ApiException) as info:
        await co.replace_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "r", stale)
    assert info.value.status == 409
    assert body_of(info.value)["reason"] == "Conflict"
    # A patch carrying a stale resourceVersion is refused too.
    with pytest.raises(ApiException) as info:
        await co.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            "default",
            PLURAL,
            "r",
            {
                "metadata": {
                    "resourceVersion": made["metadata"]["resourceVersion"],
                    "labels": {"b": "1"},
                }
            },
            _content_type=MERGE,
        )
    assert info.value.status == 409


async def test_merge_and_json_patch(kube: client.ApiClient) -> None:
    co = client.CustomObjectsApi(kube)
    await co.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, agentrun("p"))
    merged = await co.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        "default",
        PLURAL,
        "p",
        {"metadata": {"labels": {"x": "1"}, "annotations": {"k": "v"}}},
        _content_type=MERGE,
    )
    assert merged["metadata"]["labels"] == {"x": "1"}
    removed = await co.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        "default",
        PLURAL,
        "p",
        {"metadata": {"labels": {"x": None}}},
        _content_type=MERGE,
    )
    assert "x" not in (removed["metadata"].get("labels") or {})
    patched = await co.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        "default",
        PLURAL,
        "p",
        [
            {"op": "test", "path": "/status", "value": None},
            {"op": "add", "path": "/spec/cancelRequested", "value": True},
        ],
        _content_type=JSONPATCH,
    )
    assert patched["spec"]["cancelRequested"] is True
    assert patched["metadata"]["generation"] == 2  # spec change
    with pytest.raises(ApiException) as info:
        await co.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            "default",
            PLURAL,
            "p",
            [
                {"op": "test", "path": "/spec/prompt", "value": "other"},
                {"op": "replace", "path": "/spec/cancelRequested", "value": False},
            ],
            _content_type=JSONPATCH,
        )
    # The real apiserver answers a failed JSON-patch test with 422.
    assert info.value.status == 422
    assert "the server rejected our request" in body_of(info.value)["message"]
    unchanged = await co.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "p")
    assert unchanged["spec"]["cancelRequested"] is True


async def test_json_patch_with_dict_body_is_400(kube: client.ApiClient) -> None:
    co = client.CustomObjectsApi(kube)
    await co.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, agentrun("q"))
    with pytest.raises(ApiException) as info:
        # kubernetes_asyncio picks json-patch for a dict body unless told otherwise.
        await co.patch_namespaced_custom_object(
            GROUP, VERSION, "default", PLURAL, "q", {"metadata": {"labels": {"a": "b"}}}
        )
    assert info.value.status == 400


async def test_strategic_merge_patch_on_builtins(kube: client.ApiClient) -> None:
    core = client.CoreV1Api(kube)
    await core.create_namespaced_pod(
        "default",
        {
            "metadata": {"name": "p"},
            "spec": {
                "containers": [
                    {"name": "a", "image": "i", "env": [{"name": "X", "value": "1"}]},
                    {"name": "b", "image": "i"},
                ]
            },
        },
    )
    patched = await core.patch_namespaced_pod(
        "p",
        "default",
        {
            "metadata": {"labels": {"l": "v"}},
            "spec": {"containers": [{"name": "a", "env": [{"name": "Y", "value": "2"}]}]},
        },
    )
    containers = {c.name: c for c in patched.spec.containers}
    assert set(containers) == {"a", "b"}
    assert [e.name for e in containers["a"].env] == ["X", "Y"]
    assert patched.metadata.labels == {"l": "v"}


async def test_status_subresource_isolation(kube: client.ApiClient) -> None:
    co = client.CustomObjectsApi(kube)
    created = await co.create_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, dict(agentrun("s"), status={"phase": "Running"})
    )
    assert "status" not in created  # status on create is dropped for a status subresource
    after_status = await co.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        "default",
        PLURAL,
        "s",
        {
            "status": {"phase": "Running"},
            "spec": {"prompt": "changed"},
            "metadata": {"labels": {"ignored": "yes"}},
        },
        _content_type=MERGE,
    )
    assert after_status["status"] == {"phase": "Running"}
    assert after_status["spec"]["prompt"] == "hello"
    assert "labels" not in after_status["metadata"]
    assert after_status["metadata"]["generation"] == 1
    after_main = await co.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        "default",
        PLURAL,
        "s",
        {"status": {"phase": "Failed"}, "metadata": {"labels": {"kept": "yes"}}},
        _content_type=MERGE,
    )
    assert after_main["status"] == {"phase": "Running"}
    assert after_main["metadata"]["labels"] == {"kept": "yes"}
    replaced = await co.replace_namespaced_custom_object_status(
        GROUP,
        VERSION,
        "default",
        PLURAL,
        "s",
        dict(after_main, status={"phase": "Succeeded"}, spec={"prompt": "nope"}),
    )
    assert replaced["status"] == {"phase": "Succeeded"}
    assert replaced["spec"]["prompt"] == "hello"


async def test_noop_patch_keeps_resource_version(kube: client.ApiClient) -> None:
    core = client.CoreV1Api(kube)
    cm = await core.create_namespaced_config_map(
        "default", {"metadata": {"name": "n", "labels": {"a": "1"}}}
    )
    same = await core.patch_namespaced_config_map(
        "n", "default", {"metadata": {"labels": {"a": "1"}}}
    )
    assert same.metadata.resource_version == cm.metadata.resource_version


async def test_events_are_plain_namespaced_resources(kube: client.ApiClient) -> None:
    core = client.CoreV1Api(kube)
    ev = await core.create_namespaced_event(
        "default",
        {
            "metadata": {"generateName": "kopf-event-"},
            "reason": "Created",
            "message": "m",
            "type": "Normal",
            "involvedObject": {"kind": "AgentRun", "name": "x", "namespace": "default"},
        },
    )
    assert ev.metadata.name.startswith("kopf-event-")
    events_v1 = client.EventsV1Api(kube)
    created = await events_v1.create_namespaced_event(
        "default",
        {
            "metadata": {"name": "e2"},
            "eventTime": "2026-01-01T00:00:00.000000Z",
            "reason": "R",
            "action": "A",
            "reportingController": "c",
            "reportingInstance": "i",
            "type": "Normal",
            "note": "n",
            "regarding": {"kind": "Pod", "name": "p", "namespace": "default"},
        },
    )
    assert created.metadata.uid
    listed = await core.list_namespaced_event("default", field_selector="involvedObject.name=x")
    assert [e.reason for e in listed.items] == ["Created"]


async def test_leases_crud(kube: client.ApiClient) -> None:
    coord = client.CoordinationV1Api(kube)
    lease = await coord.create_namespaced_lease(
        "default",
        {
            "metadata": {"name": "leader"},
            "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15},
        },
    )
    lease.spec.holder_identity = "b"
    replaced = await coord.replace_namespaced_lease("leader", "default", lease)
    assert replaced.spec.holder_identity == "b"
    lease.spec.holder_identity = "c"  # stale now
    with pytest.raises(ApiException) as info:
        await coord.replace_namespaced_lease("leader", "default", lease)
    assert info.value.status == 409


async def test_bad_input_gets_clear_4xx(emulated_cluster: ClusterThread) -> None:
    base = f"/apis/{GROUP}/{VERSION}/namespaces/default/{PLURAL}"
    async with httpx.AsyncClient(base_url=emulated_cluster.base_url) as http:
        bad_json = await http.post(
            base, content=b"{not json", headers={"Content-Type": "application/json"}
        )
        assert bad_json.status_code == 400
        no_kind = await http.post(base, json={"metadata": {"name": "x"}, "spec": {"prompt": "p"}})
        assert no_kind.status_code == 400
        assert "Kind" in no_kind.json()["message"]
        wrong_ns = await http.post(
            base, json=dict(agentrun("x"), metadata={"name": "x", "namespace": "kube-system"})
        )
        assert wrong_ns.status_code == 400
        bad_name = await http.post(base, json=agentrun("Bad_Name"))
        assert bad_name.status_code == 422
        assert "RFC 1123" in bad_name.json()["message"]
        no_name = await http.post(base, json=dict(agentrun("x"), metadata={}))
        assert no_name.status_code == 422
        unsupported = await http.patch(
            f"{base}/x", content=b"{}", headers={"Content-Type": "text/plain"}
        )
        assert unsupported.status_code in (404, 415)
        method = await http.put(base, json={})
        assert method.status_code == 405


async def test_watch_spellings_and_timeout(
    emulated_cluster: ClusterThread, kube: client.ApiClient
) -> None:
    co = client.CustomObjectsApi(kube)
    await co.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, agentrun("w1"))
    url = f"/apis/{GROUP}/{VERSION}/namespaces/default/{PLURAL}"
    loop = asyncio.get_running_loop()
    async with httpx.AsyncClient(base_url=emulated_cluster.base_url, timeout=30) as http:
        for spelling in ("true", "True", "1"):
            started = loop.time()
            async with http.stream(
                "GET", url, params={"watch": spelling, "timeoutSeconds": "1"}
            ) as r:
                lines = [json.loads(line) async for line in r.aiter_lines() if line]
            assert [(e["type"], e["object"]["metadata"]["name"]) for e in lines] == [
                ("ADDED", "w1")
            ]
            assert loop.time() - started < 10  # closed by timeoutSeconds, not hanging
        listed = (await http.get(url, params={"watch": "false"})).json()
        assert listed["kind"] == "AgentRunList"


async def _collect(
    http: httpx.AsyncClient, url: str, params: dict[str, str], n: int
) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    async with http.stream(
        "GET", url, params={"watch": "1", "timeoutSeconds": "10", **params}
    ) as r:
        async for line in r.aiter_lines():
            if line:
                events.append(json.loads(line))
            if len(events) >= n:
                break
    return events


async def test_watch_from_resource_version_does_not_replay(
    emulated_cluster: ClusterThread, kube: client.ApiClient
) -> None:
    co = client.CustomObjectsApi(kube)
    await co.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, agentrun("old"))
    listing = await co.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL)
    rv = listing["metadata"]["resourceVersion"]
    url = f"/apis/{GROUP}/{VERSION}/namespaces/default/{PLURAL}"
    async with httpx.AsyncClient(base_url=emulated_cluster.base_url, timeout=30) as http:
        watching = asyncio.create_task(_collect(http, url, {"resourceVersion": rv}, 3))
        await asyncio.sleep(0.2)
        await co.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, agentrun("new"))
        await co.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            "default",
            PLURAL,
            "new",
            {"metadata": {"labels": {"a": "b"}}},
            _content_type=MERGE,
        )
        await co.delete_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "new")
        events = await asyncio.wait_for(watching, 15)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "new"),
        ("MODIFIED", "new"),
        ("DELETED", "new"),
    ]
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert rvs == sorted(rvs)
    assert rvs[0] > int(rv)


async def test_watch_selectors_filter_events(
    emulated_cluster: ClusterThread, kube: client.ApiClient
) -> None:
    core = client.CoreV1Api(kube)
    url = "/api/v1/namespaces/default/configmaps"
    rv = (await core.list_namespaced_config_map("default")).metadata.resource_version
    async with httpx.AsyncClient(base_url=emulated_cluster.base_url, timeout=30) as http:
        watching = asyncio.create_task(
            _collect(http, url, {"resourceVersion": rv, "labelSelector": "app=x"}, 3)
        )
        await asyncio.sleep(0.2)
        await core.create_namespaced_config_map(
            "default", {"metadata": {"name": "other", "labels": {"app": "y"}}}
        )
        await core.create_namespaced_config_map(
            "default", {"metadata": {"name": "mine", "labels": {"app": "x"}}}
        )
        await core.patch_namespaced_config_map("mine", "default", {"data": {"k": "v"}})
        await core.patch_namespaced_config_map(
            "mine", "default", {"metadata": {"labels": {"app": "z"}}}
        )
        events = await asyncio.wait_for(watching, 15)
    # Leaving the selector is seen as DELETED, as the real watch cache reports it.
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "mine"),
        ("MODIFIED", "mine"),
        ("DELETED", "mine"),
    ]


async def test_namespace_missing_from_body_reaches_namespaced_watch(
    emulated_cluster: ClusterThread, kube: client.ApiClient
) -> None:
    core = client.CoreV1Api(kube)
    url = "/api/v1/namespaces/default/secrets"
    rv = (await core.list_namespaced_secret("default")).metadata.resource_version
    async with httpx.AsyncClient(base_url=emulated_cluster.base_url, timeout=30) as http:
        watching = asyncio.create_task(_collect(http, url, {"resourceVersion": rv}, 1))
        await asyncio.sleep(0.2)
        await http.post(url, json={"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}})
        events = await asyncio.wait_for(watching, 15)
    assert events[0]["object"]["metadata"]["namespace"] == "default"


async def test_kubernetes_asyncio_watch_stream(kube: client.ApiClient) -> None:
    from kubernetes_asyncio import watch

    co = client.CustomObjectsApi(kube)
    await co.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, agentrun("k1"))
    seen = []
    async with watch.Watch() as w:
        async for event in w.stream(
            co.list_namespaced_custom_object, GROUP, VERSION, "default", PLURAL, timeout_seconds=1
        ):
            seen.append((event["type"], event["object"]["metadata"]["name"]))
    assert seen == [("ADDED", "k1")]


async def test_create_refuses_resource_version_and_system_namespaces_stay(
    kube: client.ApiClient,
) -> None:
    core = client.CoreV1Api(kube)
    with pytest.raises(ApiException) as info:
        await core.create_namespaced_config_map(
            "default", {"metadata": {"name": "rv", "resourceVersion": "5"}}
        )
    assert info.value.status == 400
    assert "resourceVersion should not be set" in body_of(info.value)["message"]
    with pytest.raises(ApiException) as info:
        await core.delete_namespace("default")
    assert info.value.status == 403
    await core.create_namespace({"metadata": {"name": "scratch"}})
    await core.create_namespaced_config_map("scratch", {"metadata": {"name": "in-it"}})
    await core.delete_namespace("scratch")
    with pytest.raises(ApiException) as info:
        await core.read_namespaced_config_map("in-it", "scratch")
    assert info.value.status == 404


async def test_dry_run_stores_nothing(kube: client.ApiClient) -> None:
    co = client.CustomObjectsApi(kube)
    preview = await co.create_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, agentrun("dry"), dry_run="All"
    )
    assert preview["spec"]["timeoutSeconds"] == 3600  # admitted (defaulted)
    with pytest.raises(ApiException) as info:
        await co.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "dry")
    assert info.value.status == 404
    with pytest.raises(ApiException) as info:
        await co.create_namespaced_custom_object(
            GROUP, VERSION, "default", PLURAL, dict(agentrun("dry"), spec={}), dry_run="All"
        )
    assert info.value.status == 422
    await co.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, agentrun("real"))
    await co.delete_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, "real", dry_run="All"
    )
    assert await co.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "real")


async def test_metadata_of_wrong_type_is_400_and_bad_owner_refs_422(
    emulated_cluster: ClusterThread,
) -> None:
    url = "/api/v1/namespaces/default/configmaps"
    async with httpx.AsyncClient(base_url=emulated_cluster.base_url) as http:
        for meta in (
            {"name": "a", "labels": {"x": 1}},
            {"name": "a", "finalizers": "f"},
            {"name": "a", "annotations": ["x"]},
        ):
            r = await http.post(
                url, json={"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta}
            )
            assert r.status_code == 400, meta
            assert "cannot unmarshal" in r.json()["message"]
        r = await http.post(
            url,
            json={
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": "a",
                    "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "p"}],
                },
            },
        )
        assert r.status_code == 422
        assert "uid must not be empty" in r.json()["message"]

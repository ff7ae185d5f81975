"""Pure parts of the emulator: selectors, patches, printing helpers, Status wording."""

from __future__ import annotations

from typing import Any

import pytest
from agentrun_devcluster.apiserver import errors
from agentrun_devcluster.apiserver.errors import APIError
from agentrun_devcluster.apiserver.patching import (
    PatchError,
    json_patch,
    merge_patch,
    strategic_merge_patch,
)
from agentrun_devcluster.apiserver.printing import human_duration, json_path, wants_table
from agentrun_devcluster.apiserver.selectors import parse_field_selector, parse_label_selector


def labelled(**labels: str) -> dict[str, Any]:
    return {"metadata": {"name": "n", "namespace": "ns", "labels": labels}}


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ("a=1", {"a": "1"}, True),
        ("a=1", {"a": "2"}, False),
        ("a==1", {"a": "1"}, True),
        ("a!=1", {}, True),
        ("a in (1, 2)", {"a": "2"}, True),
        ("a notin (1,2)", {"a": "3"}, True),
        ("a notin (1,2)", {}, True),
        ("a", {"a": ""}, True),
        ("!a", {"a": ""}, False),
        ("a=1,b", {"a": "1"}, False),
        ("agentrun.dev/run=x-1", {"agentrun.dev/run": "x-1"}, True),
        ("", {}, True),
    ],
)
def test_label_selectors(selector: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_label_selector(selector)(labelled(**labels)) is expected


@pytest.mark.parametrize("bad", ["a in (1", "a=b=c", "=1", "a b"])
def test_bad_label_selectors_are_400(bad: str) -> None:
    with pytest.raises(APIError) as info:
        parse_label_selector(bad)
    assert info.value.code == 400


def test_field_selectors() -> None:
    pod = {"metadata": {"name": "p", "namespace": "ns"}, "status": {"phase": "Running"}}
    assert parse_field_selector("status.phase=Running", "pods", "Pod")(pod)
    assert not parse_field_selector("status.phase!=Running", "pods", "Pod")(pod)
    assert parse_field_selector("metadata.name=p,metadata.namespace=ns", "pods", "Pod")(pod)
    with pytest.raises(APIError) as info:
        parse_field_selector("status.phase=Running", "configmaps", "ConfigMap")
    assert info.value.message == "field label not supported: status.phase"


def test_merge_patch_rfc7386() -> None:
    target = {"a": {"b": 1, "c": 2}, "l": [1, 2], "keep": True}
    assert merge_patch(target, {"a": {"b": None, "d": 3}, "l": [3]}) == {
        "a": {"c": 2, "d": 3},
        "l": [3],
        "keep": True,
    }
    assert target == {"a": {"b": 1, "c": 2}, "l": [1, 2], "keep": True}  # not mutated


def test_json_patch_ops_and_errors() -> None:
    doc = {"a": [1, 2], "b": {"c": "x"}}
    out = json_patch(
        doc,
        [
            {"op": "add", "path": "/a/-", "value": 3},
            {"op": "replace", "path": "/b/c", "value": "y"},
            {"op": "copy", "from": "/b/c", "path": "/d"},
            {"op": "move", "from": "/d", "path": "/e"},
            {"op": "remove", "path": "/a/0"},
            {"op": "test", "path": "/e", "value": "y"},
            {"op": "test", "path": "/missing", "value": None},  # evanphx: missing == null
        ],
    )
    assert out == {"a": [2, 3], "b": {"c": "y"}, "e": "y"}
    assert doc == {"a": [1, 2], "b": {"c": "x"}}
    for ops in (
        [{"op": "test", "path": "/b/c", "value": "z"}],
        [{"op": "test", "path": "/nope/deeper", "value": None}],
        [{"op": "remove", "path": "/zzz"}],
        [{"op": "replace", "path": "/zzz", "value": 1}],
        [{"op": "add", "path": "/a/9", "value": 1}],
        [{"op": "frobnicate", "path": "/a"}],
        {"op": "add"},
    ):
        with pytest.raises(PatchError):
            json_patch(doc, ops)
    assert json_patch({"a/b": {"~": 1}}, [{"op": "replace", "path": "/a~1b/~0", "value": 2}]) == {
        "a/b": {"~": 2}
    }


def test_strategic_merge_by_key_and_delete_directive() -> None:
    pod = {
        "spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "1"}]},
        "metadata": {"finalizers": ["x"]},
    }
    out = strategic_merge_patch(
        pod,
        {
            "spec": {
                "containers": [
                    {"name": "b", "image": "2"},
                    {"name": "c", "image": "3"},
                    {"name": "a", "$patch": "delete"},
                ]
            },
            "metadata": {"finalizers": ["y"]},
        },
    )
    assert out["spec"]["containers"] == [{"name": "b", "image": "2"}, {"name": "c", "image": "3"}]
    assert out["metadata"]["finalizers"] == ["x", "y"]


def test_invalid_status_wording() -> None:
    one = errors.invalid("AgentRun", "agentrun.dev", "x", [("spec.prompt", "Required value")])
    assert one.message == 'AgentRun.agentrun.dev "x" is invalid: spec.prompt: Required value'
    two = errors.invalid("ConfigMap", "", "c", [("a", "Required value"), ("b", "Too long: x")])
    assert two.message == 'ConfigMap "c" is invalid: [a: Required value, b: Too long: x]'
    assert [c["reason"] for c in two.status()["details"]["causes"]] == [
        "FieldValueRequired",
        "FieldValueTooLong",
    ]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (5, "5s"),
        (119, "119s"),
        (130, "2m10s"),
        (600, "10m"),
        (3 * 3600 + 120, "3h2m"),
        (10 * 3600, "10h"),
        (3 * 86400 + 3600, "3d1h"),
        (30 * 86400, "30d"),
        (3 * 365 * 86400, "3y"),
    ],
)
def test_human_duration_matches_apimachinery(seconds: int, text: str) -> None:
    assert human_duration(seconds) == text


def test_json_path_subset() -> None:
    obj = {
        "status": {
            "conditions": [{"type": "A", "status": "False"}, {"type": "Ready", "status": "True"}]
        },
        "l": [1, 2],
    }
    assert json_path(obj, '.status.conditions[?(@.type=="Ready")].status') == ["True"]
    assert json_path(obj, ".status.conditions[0].type") == ["A"]
    assert json_path(obj, ".l[*]") == [1, 2]
    assert json_path(obj, ".missing.x") == []


def test_wants_table_only_when_preferred() -> None:
    assert wants_table("application/json;as=Table;v=v1;g=meta.k8s.io,application/json")
    assert not wants_table("application/json, application/json;as=Table;v=v1;g=meta.k8s.io")
    assert not wants_table("")

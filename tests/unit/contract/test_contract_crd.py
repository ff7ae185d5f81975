"""The committed CRDs are generated from the typed models and must not drift."""

from __future__ import annotations

from pathlib import Path

import yaml
from agentrun_contract import crd, resource

REPO = Path(__file__).resolve().parents[3]


def test_committed_crd_matches_models() -> None:
    committed = (REPO / crd.CRD_FILE).read_text()
    assert committed == crd.render_crds_yaml(), (
        "deploy/crds/agentrun.dev.yaml drifted from agentrun_contract.resource: run `agentrun crd`"
    )


def test_agentrun_crd_shape() -> None:
    doc = crd.agentrun_crd()
    assert doc["metadata"]["name"] == "agentruns.agentrun.dev"
    names = doc["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"]) == (
        "AgentRun",
        "agentruns",
        ["ar"],
    )
    assert doc["spec"]["scope"] == "Namespaced"
    version = doc["spec"]["versions"][0]
    assert version["name"] == "v1alpha1"
    assert version["subresources"] == {"status": {}}
    columns = [
        c["name"].upper() for c in version["additionalPrinterColumns"] if "priority" not in c
    ]
    for wanted in ("STATUS", "SESSION", "DURATION", "WEBHOOK", "AGE"):
        assert wanted in columns


def _schema() -> dict:  # type: ignore[type-arg]
    return crd.agentrun_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]  # type: ignore[no-any-return]


def test_fixed_bounds_in_schema() -> None:
    schema = _schema()
    spec = schema["properties"]["spec"]
    assert spec["required"] == ["prompt"]
    assert spec["properties"]["prompt"]["maxLength"] == 64 * 1024
    assert spec["properties"]["timeoutSeconds"]["minimum"] == 1
    assert spec["properties"]["timeoutSeconds"]["maximum"] == 7 * 86400
    assert spec["properties"]["webhookUrl"]["format"] == "uri"
    assert schema["properties"]["metadata"]["properties"]["name"]["maxLength"] == 52
    rules = [v["rule"] for v in spec["x-kubernetes-validations"]]
    assert any("oldSelf.prompt" in r for r in rules)
    assert not any("cancelRequested == oldSelf.cancelRequested" in r for r in rules)


def test_kopf_bookkeeping_is_preserved_not_pruned() -> None:
    status = _schema()["properties"]["status"]
    assert status["properties"]["kopf"]["x-kubernetes-preserve-unknown-fields"] is True


def _walk(node: object) -> list[dict]:  # type: ignore[type-arg]
    found: list[dict] = []  # type: ignore[type-arg]
    if isinstance(node, dict):
        found.append(node)
        for value in node.values():
            found.extend(_walk(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_walk(value))
    return found


def test_schemas_are_structural() -> None:
    """No $ref, anyOf or titles survive: the apiserver rejects non-structural schemas."""
    for doc in crd.all_crds():
        schema = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for node in _walk(schema):
            assert "$ref" not in node
            assert "anyOf" not in node
            assert "title" not in node
            if node.get("type") == "object" and not node.get(
                "x-kubernetes-preserve-unknown-fields"
            ):
                assert "properties" in node or "additionalProperties" in node, node


def test_yaml_round_trips_to_three_crds() -> None:
    docs = [d for d in yaml.safe_load_all(crd.render_crds_yaml()) if d]
    kinds = sorted(d["spec"]["names"]["kind"] for d in docs)
    assert kinds == sorted([resource.KIND, resource.TRANSCRIPT_KIND, resource.RESULT_KIND])

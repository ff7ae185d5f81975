"""The chart's CRDs are the generated ones, and sample AgentRuns validate against their schema."""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import pytest
import yaml
from agentrun_contract.crd import CHART_CRD_FILE, CRD_FILE, render_crds_yaml
from chart_manifests import CHART, REPO, Manifest, of_kind

GENERATED = [d for d in yaml.safe_load_all((REPO / CRD_FILE).read_text()) if d]


def test_chart_copy_is_byte_identical_to_the_generated_file() -> None:
    chart_copy = (REPO / CHART_CRD_FILE).read_text()
    assert chart_copy == (REPO / CRD_FILE).read_text(), (
        "charts/agentrun/files/crds.yaml differs from deploy/crds/agentrun.dev.yaml: run "
        "`agentrun crd` (no argument: it writes both)"
    )
    assert chart_copy == render_crds_yaml(), "the CRDs drifted from the models: run `agentrun crd`"
    assert CHART_CRD_FILE.parts[:2] == ("charts", "agentrun")
    assert (CHART / "files" / "crds.yaml").is_file()


def strip_chart_metadata(crd: Manifest) -> Manifest:
    crd = copy.deepcopy(crd)
    crd["metadata"].pop("annotations", None)
    crd["metadata"].pop("labels", None)
    return crd


def test_rendered_crds_are_identical_to_the_generated_ones(default_docs: list[Manifest]) -> None:
    rendered = of_kind(default_docs, "CustomResourceDefinition")
    assert [strip_chart_metadata(c) for c in rendered] == [
        strip_chart_metadata(g) for g in GENERATED
    ]
    for crd in rendered:
        assert crd["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
        assert crd["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"


def test_crds_can_be_left_out_and_not_kept(render) -> None:  # type: ignore[no-untyped-def]
    assert of_kind(render(sets=("crds.enabled=false",)), "CustomResourceDefinition") == []
    for crd in of_kind(render(sets=("crds.keep=false",)), "CustomResourceDefinition"):
        assert "helm.sh/resource-policy" not in crd["metadata"].get("annotations", {})


def agentrun_schema(docs: list[Manifest]) -> dict[str, Any]:
    (crd,) = [
        c
        for c in of_kind(docs, "CustomResourceDefinition")
        if c["metadata"]["name"] == "agentruns.agentrun.dev"
    ]
    (version,) = [v for v in crd["spec"]["versions"] if v["storage"]]
    return version["schema"]["openAPIV3Schema"]


def sample(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "agentrun.dev/v1alpha1",
        "kind": "AgentRun",
        "metadata": {"name": "run-abc"},
        "spec": {"prompt": "Analyze AI trends in 2024", **spec},
    }


VALID = [
    sample(),
    sample(framework="praisonai", timeoutSeconds=3600, sessionId="s-1"),
    sample(agentYaml="framework: praisonai\n", webhookUrl="https://hooks.example.com/x"),
    sample(agentFile="team/agents.yaml", cancelRequested=True),
]
INVALID = [
    (
        "no prompt",
        {"apiVersion": "agentrun.dev/v1alpha1", "kind": "AgentRun", "metadata": {}, "spec": {}},
    ),
    ("prompt not a string", sample(prompt=42)),
    ("timeout not an integer", sample(timeoutSeconds="soon")),
    ("timeout zero", sample(timeoutSeconds=0)),
    ("prompt over 64 KiB", sample(prompt="x" * (64 * 1024 + 1))),
]


@pytest.mark.parametrize("run", VALID)
def test_sample_agentruns_validate(default_docs: list[Manifest], run: dict[str, Any]) -> None:
    jsonschema.validate(run, agentrun_schema(default_docs))


@pytest.mark.parametrize(("why", "run"), INVALID, ids=[w for w, _ in INVALID])
def test_bad_agentruns_are_refused(
    default_docs: list[Manifest], why: str, run: dict[str, Any]
) -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(run, agentrun_schema(default_docs))

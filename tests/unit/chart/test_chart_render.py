"""helm lint and helm template for the default values and every ci/ scenario, with every
rendered document validated against the Kubernetes schemas (kubernetes-validate, strict)."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
from chart_manifests import CHART, SCENARIOS, Manifest, of_kind, run_helm

# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and the newest
# kubernetes-validate ships: manifests must be valid for both.
K8S_VERSIONS = ("1.31.0", "1.35.0")
# Kinds with no schema in kubernetes-validate (CRD-defined by other projects).
FOREIGN_KINDS = {"ServiceMonitor"}

SCENARIO_IDS = [p.stem for p in SCENARIOS]


def test_there_are_the_issue_scenarios() -> None:
    names = {p.name for p in SCENARIOS}
    assert {
        "ha-values.yaml",
        "cluster-wide-values.yaml",
        "existing-secrets-values.yaml",
        "network-policy-values.yaml",
    } <= names


def test_helm_lint_default(helm: str) -> None:
    proc = run_helm(helm, "lint", str(CHART), "--strict")
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("values", SCENARIOS, ids=SCENARIO_IDS)
def test_helm_lint_scenario(helm: str, values: Path) -> None:
    proc = run_helm(helm, "lint", str(CHART), "--strict", "-f", str(values))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _validate_all(docs: list[Manifest]) -> None:
    assert docs, "nothing rendered"
    for doc in docs:
        if doc["kind"] in FOREIGN_KINDS:
            assert doc["apiVersion"] == "monitoring.coreos.com/v1"
            continue
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{doc['kind']} {doc['metadata']['name']} invalid for {version}: {exc}")


def test_default_render_is_valid_kubernetes(default_docs: list[Manifest]) -> None:
    _validate_all(default_docs)


@pytest.mark.parametrize("values", SCENARIOS, ids=SCENARIO_IDS)
def test_scenario_render_is_valid_kubernetes(render, values: Path) -> None:  # type: ignore[no-untyped-def]
    _validate_all(render(values))


def test_validation_catches_a_broken_manifest(default_docs: list[Manifest]) -> None:
    """The validator is strict: an unknown field in a rendered Deployment is an error."""
    import copy

    deployment = copy.deepcopy(of_kind(default_docs, "Deployment")[0])
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProb"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[0], strict=True)


def test_every_object_is_namespaced_where_it_should_be(default_docs: list[Manifest]) -> None:
    cluster_scoped = {"CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}
    for doc in default_docs:
        if doc["kind"] in cluster_scoped:
            assert "namespace" not in doc["metadata"], doc["metadata"]["name"]
        else:
            assert doc["metadata"].get("namespace") == "agents", (
                f"{doc['kind']} {doc['metadata']['name']} has no namespace"
            )


def test_unknown_value_is_refused_by_the_schema(helm: str) -> None:
    proc = run_helm(helm, "template", "rel", str(CHART), "--set", "api.replicaz=2")
    assert proc.returncode != 0
    assert "replicaz" in proc.stderr


def test_wrongly_typed_value_is_refused_by_the_schema(helm: str) -> None:
    proc = run_helm(helm, "template", "rel", str(CHART), "--set", "operator.replicas=two")
    assert proc.returncode != 0
    assert "replicas" in proc.stderr

"""RBAC on the rendered chart: each Role holds exactly its rules of agentrun_contract.permissions,
no wildcards, the runner has none."""

from __future__ import annotations

from typing import Any

from agentrun_contract.permissions import Process, Scope, rules
from chart_manifests import CHART, FULLNAME, Manifest, named, of_kind

Rules = set[tuple[str, str, str]]

# The rules each Role must hold: agentrun_contract.permissions, the one list of every call.
API_RULES: Rules = set(rules(Process.API, Scope.RUN_NAMESPACES))
OPERATOR_RULES: Rules = set(rules(Process.OPERATOR, Scope.RUN_NAMESPACES))
LEASE_RULES: Rules = set(rules(Process.OPERATOR, Scope.RELEASE_NAMESPACE))
DISCOVERY_RULES: Rules = set(rules(Process.OPERATOR, Scope.CLUSTER))


def flatten(role: Manifest) -> Rules:
    out: Rules = set()
    for rule in role.get("rules", []):
        assert not rule.get("resourceNames"), "resourceNames are not expected here"
        assert not rule.get("nonResourceURLs")
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    out.add((group, resource, verb))
    return out


def bindings_of(docs: list[Manifest], sa_name: str) -> list[Manifest]:
    return [
        b
        for b in of_kind(docs, "RoleBinding") + of_kind(docs, "ClusterRoleBinding")
        if any(s.get("name") == sa_name for s in b["subjects"])
    ]


def roles_bound_to(docs: list[Manifest], sa_name: str) -> list[tuple[Manifest, Manifest]]:
    """(binding, role) for every binding of the ServiceAccount."""
    out = []
    for binding in bindings_of(docs, sa_name):
        ref: dict[str, Any] = binding["roleRef"]
        ns = binding["metadata"].get("namespace")
        if ref["kind"] == "ClusterRole":
            role = named(docs, "ClusterRole", ref["name"])
        else:
            role = next(
                r
                for r in of_kind(docs, "Role")
                if r["metadata"]["name"] == ref["name"] and r["metadata"]["namespace"] == ns
            )
        out.append((binding, role))
    return out


def test_no_wildcards_anywhere(render) -> None:  # type: ignore[no-untyped-def]
    for values in [None, *sorted((CHART / "ci").glob("*.yaml"))]:
        docs = render(values) if values else render()
        for role in of_kind(docs, "Role") + of_kind(docs, "ClusterRole"):
            for group, resource, verb in flatten(role):
                assert "*" not in (group, resource, verb), role["metadata"]["name"]


def test_api_rbac_is_exactly_runs_and_read_of_transcripts_results(
    default_docs: list[Manifest],
) -> None:
    bound = roles_bound_to(default_docs, f"{FULLNAME}-api")
    assert len(bound) == 1
    binding, role = bound[0]
    assert binding["kind"] == "RoleBinding"
    assert role["kind"] == "Role"
    assert role["metadata"]["namespace"] == "agents"
    assert flatten(role) == API_RULES


def test_operator_rbac_namespaced_by_default(default_docs: list[Manifest]) -> None:
    bound = roles_bound_to(default_docs, f"{FULLNAME}-operator")
    by_kind: dict[str, Rules] = {}
    for binding, role in bound:
        key = f"{role['kind']}/{role['metadata'].get('namespace', '')}/{role['metadata']['name']}"
        by_kind[key] = flatten(role)
        if binding["kind"] == "RoleBinding":
            assert role["metadata"]["namespace"] == binding["metadata"]["namespace"]
    assert by_kind == {
        f"Role/agents/{FULLNAME}-operator": OPERATOR_RULES,
        f"Role/agents/{FULLNAME}-operator-leases": LEASE_RULES,
        f"ClusterRole//{FULLNAME}-agents-operator-discovery": DISCOVERY_RULES,
    }


def test_operator_gets_a_role_in_each_watched_namespace(render) -> None:  # type: ignore[no-untyped-def]
    docs = render(sets=("watchNamespaces={team-a,team-b}",))
    roles = [r for r in of_kind(docs, "Role") if r["metadata"]["name"] == f"{FULLNAME}-operator"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    for role in roles:
        assert flatten(role) == OPERATOR_RULES
    # Namespaced: the only cluster-wide grant is kopf's read-only discovery.
    assert [flatten(c) for c in of_kind(docs, "ClusterRole")] == [DISCOVERY_RULES]


def test_cluster_scoped_names_carry_the_namespace(render) -> None:  # type: ignore[no-untyped-def]
    """Two releases of the same name in two namespaces must not fight over cluster objects."""
    docs = render(CHART / "ci" / "cluster-wide-values.yaml")
    cluster_scoped = of_kind(docs, "ClusterRole") + of_kind(docs, "ClusterRoleBinding")
    assert len(cluster_scoped) == 4
    for obj in cluster_scoped:
        assert obj["metadata"]["name"].startswith(f"{FULLNAME}-agents-")


def test_operator_cluster_wide_uses_one_cluster_role(render) -> None:  # type: ignore[no-untyped-def]
    docs = render(CHART / "ci" / "cluster-wide-values.yaml")
    bound = roles_bound_to(docs, f"{FULLNAME}-operator")
    cluster = {r["metadata"]["name"]: flatten(r) for _, r in bound if r["kind"] == "ClusterRole"}
    assert cluster == {
        f"{FULLNAME}-agents-operator": OPERATOR_RULES,
        f"{FULLNAME}-agents-operator-discovery": DISCOVERY_RULES,
    }
    namespaced = [r for _, r in bound if r["kind"] == "Role"]
    assert [r["metadata"]["name"] for r in namespaced] == [f"{FULLNAME}-operator-leases"]


def test_runner_service_account_has_no_permissions_and_no_token(render) -> None:  # type: ignore[no-untyped-def]
    for docs in (render(), render(CHART / "ci" / "cluster-wide-values.yaml")):
        runner_sas = [
            s for s in of_kind(docs, "ServiceAccount") if s["metadata"]["name"] == "agentrun-runner"
        ]
        assert runner_sas
        for sa in runner_sas:
            assert sa["automountServiceAccountToken"] is False
        assert bindings_of(docs, "agentrun-runner") == []


def test_runner_service_account_exists_in_every_runner_namespace(render) -> None:  # type: ignore[no-untyped-def]
    docs = render(CHART / "ci" / "cluster-wide-values.yaml")
    namespaces = sorted(
        s["metadata"]["namespace"]
        for s in of_kind(docs, "ServiceAccount")
        if s["metadata"]["name"] == "agentrun-runner"
    )
    assert namespaces == ["agents", "team-a", "team-b"]


def test_api_and_operator_pods_use_their_own_accounts(default_docs: list[Manifest]) -> None:
    api = named(default_docs, "Deployment", f"{FULLNAME}-api")
    op = named(default_docs, "Deployment", f"{FULLNAME}-operator")
    assert api["spec"]["template"]["spec"]["serviceAccountName"] == f"{FULLNAME}-api"
    assert op["spec"]["template"]["spec"]["serviceAccountName"] == f"{FULLNAME}-operator"

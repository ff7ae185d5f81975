"""The rendered RBAC grants exactly agentrun_contract.permissions: nothing missing, nothing extra.

For every install scenario (defaults, each ci/*.yaml, several watched namespaces), the grants of
each ServiceAccount are flattened to (namespace, group, resource, verb) atoms, with ``*`` for a
ClusterRoleBinding, and compared with what the permission list says that process needs there:

- the API: its rules in the release namespace;
- the operator: its run rules in each watched namespace (Roles), or everywhere with
  ``clusterWide`` (a ClusterRole); the Lease rules in the release namespace; the cluster-scoped
  rules everywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from agentrun_contract.permissions import PERMISSIONS, Process, Scope, rules
from agentrun_contract.resource import GROUP, PLURAL, AgentRun
from agentrun_operator.job_manifest import owner_reference
from chart_manifests import CHART, FULLNAME, NAMESPACE, Manifest, named, of_kind

Grant = tuple[str, str, str, str]
"""(namespace or "*", API group, resource[/subresource], verb)."""

SCENARIOS: list[tuple[str, tuple[Path, ...], tuple[str, ...]]] = [
    ("defaults", (), ()),
    *[(path.stem, (path,), ()) for path in sorted((CHART / "ci").glob("*.yaml"))],
    ("watched-namespaces", (), ("watchNamespaces={team-a,team-b}",)),
    ("cluster-wide-defaults", (), ("clusterWide=true",)),
]

SERVICE_ACCOUNTS = {Process.API: f"{FULLNAME}-api", Process.OPERATOR: f"{FULLNAME}-operator"}


def install_mode(values_files: tuple[Path, ...], sets: tuple[str, ...]) -> tuple[bool, list[str]]:
    """(clusterWide, watched namespaces) of a scenario, as the chart reads them."""
    values: dict[str, Any] = {}
    for path in values_files:
        values.update(yaml.safe_load(path.read_text()) or {})
    for item in sets:
        key, _, raw = item.partition("=")
        values[key] = raw.strip("{}").split(",") if raw.startswith("{") else raw == "true"
    return bool(values.get("clusterWide")), list(values.get("watchNamespaces") or [NAMESPACE])


def expected_grants(process: Process, cluster_wide: bool, watched: list[str]) -> set[Grant]:
    def atoms(namespace: str, scope: Scope) -> set[Grant]:
        return {(namespace, g, r, v) for g, r, v in rules(process, scope)}

    grants = atoms(NAMESPACE, Scope.RELEASE_NAMESPACE) | atoms("*", Scope.CLUSTER)
    if process is Process.API:
        return grants | atoms(NAMESPACE, Scope.RUN_NAMESPACES)
    if cluster_wide:
        return grants | atoms("*", Scope.RUN_NAMESPACES)
    for namespace in watched:
        grants |= atoms(namespace, Scope.RUN_NAMESPACES)
    return grants


def rendered_grants(docs: list[Manifest], service_account: str) -> set[Grant]:
    grants: set[Grant] = set()
    for binding in of_kind(docs, "RoleBinding") + of_kind(docs, "ClusterRoleBinding"):
        if not any(s.get("name") == service_account for s in binding["subjects"]):
            continue
        ref = binding["roleRef"]
        if ref["kind"] == "ClusterRole":
            role = named(docs, "ClusterRole", ref["name"])
        else:
            (role,) = [
                r
                for r in of_kind(docs, "Role")
                if r["metadata"]["name"] == ref["name"]
                and r["metadata"]["namespace"] == binding["metadata"]["namespace"]
            ]
        where = binding["metadata"]["namespace"] if binding["kind"] == "RoleBinding" else "*"
        for rule in role.get("rules", []):
            assert not rule.get("resourceNames"), rule
            assert not rule.get("nonResourceURLs"), rule
            grants |= {
                (where, group, resource, verb)
                for group in rule["apiGroups"]
                for resource in rule["resources"]
                for verb in rule["verbs"]
            }
    return grants


@pytest.mark.parametrize(
    ("values_files", "sets"),
    [(files, sets) for _, files, sets in SCENARIOS],
    ids=[name for name, _, _ in SCENARIOS],
)
@pytest.mark.parametrize("process", list(Process), ids=[p.value for p in Process])
def test_rendered_rbac_is_exactly_the_permission_list(
    render: Any, process: Process, values_files: tuple[Path, ...], sets: tuple[str, ...]
) -> None:
    docs = render(*values_files, sets=sets)
    cluster_wide, watched = install_mode(values_files, sets)
    expected = expected_grants(process, cluster_wide, watched)
    granted = rendered_grants(docs, SERVICE_ACCOUNTS[process])
    assert expected - granted == set(), f"missing from the chart: {sorted(expected - granted)}"
    assert granted - expected == set(), f"not in the permission list: {sorted(granted - expected)}"


def test_nothing_else_is_bound(default_docs: list[Manifest]) -> None:
    """Every binding of the chart is one of the two processes' (the runner has none)."""
    subjects = {
        s["name"]
        for b in of_kind(default_docs, "RoleBinding") + of_kind(default_docs, "ClusterRoleBinding")
        for s in b["subjects"]
    }
    assert subjects == set(SERVICE_ACCOUNTS.values())


def test_owned_objects_block_owner_deletion_so_the_operator_may_update_run_finalizers(
    default_docs: list[Manifest],
) -> None:
    """blockOwnerDeletion on what the operator creates needs update on agentruns/finalizers
    under OwnerReferencesPermissionEnforcement (OpenShift's default)."""
    run = AgentRun.model_validate(
        {"metadata": {"name": "r", "namespace": NAMESPACE, "uid": "u"}, "spec": {"prompt": "p"}}
    )
    assert owner_reference(run)["blockOwnerDeletion"] is True
    needed = (GROUP, f"{PLURAL}/finalizers", "update")
    assert needed in rules(Process.OPERATOR, Scope.RUN_NAMESPACES)
    assert (NAMESPACE, *needed) in rendered_grants(default_docs, SERVICE_ACCOUNTS[Process.OPERATOR])


def test_the_permission_list_is_explicit() -> None:
    """No wildcards, every entry says why, no entry repeats another's (process, resource, scope)."""
    keys = [(p.process, p.group, p.rbac_resource, p.scope) for p in PERMISSIONS]
    assert len(keys) == len(set(keys))
    for permission in PERMISSIONS:
        assert "*" not in (permission.group, permission.rbac_resource, *permission.verbs)
        assert permission.verbs
        assert permission.why.strip()
        assert permission.verbs <= {
            "get",
            "list",
            "watch",
            "create",
            "update",
            "patch",
            "delete",
            "deletecollection",
        }

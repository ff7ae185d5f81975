"""Every Kubernetes permission agentrun's processes need, in one place, as data.

One entry per (process, resource): the verbs that process uses on it, where (its scope) and why.
It is the single list two tests hold the system to:

- the Helm chart's RBAC grants exactly this, no more and no less, per process and per scope, in
  the namespace-scoped and the cluster-wide install (``tests/unit/chart/test_chart_permissions.py``);
- the API and the operator, run against the emulated apiserver, use nothing outside it
  (``tests/integration/system/test_permissions_observed.py``, from the apiserver's request log).

It lives in the contract, beside the resource names it uses, rather than in the operator and the
API: the chart test compares both processes against their Roles at once and needs neither
process's dependencies, and a reader finds every grant of the install on one screen. It imports
nothing but the contract.

Permissions no call of ours shows are listed too, with the reason that needs them: an admission
plugin's check (``agentruns/finalizers``) or a call of a library we run (kopf's watches, Events).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from agentrun_contract.resource import GROUP, PLURAL, RESULT_PLURAL, TRANSCRIPT_PLURAL


class Process(StrEnum):
    """A process with its own ServiceAccount (the runner has none: its token is never mounted)."""

    API = "api"
    OPERATOR = "operator"


class Scope(StrEnum):
    """Where a permission is granted."""

    RUN_NAMESPACES = "run-namespaces"
    """The namespaces whose AgentRuns the process serves: the API's own namespace; each watched
    namespace of the operator (a Role each), or every namespace with ``clusterWide`` (one
    ClusterRole)."""
    RELEASE_NAMESPACE = "release-namespace"
    """The install's own namespace only (the operator's leader-election Lease)."""
    CLUSTER = "cluster"
    """Cluster-scoped resources (a ClusterRole in every install mode)."""


@dataclass(frozen=True)
class Permission:
    """``verbs`` on ``group``/``resource`` (``/subresource``) for ``process`` in ``scope``."""

    process: Process
    group: str
    resource: str
    verbs: frozenset[str]
    scope: Scope
    why: str
    subresource: str = ""

    @property
    def rbac_resource(self) -> str:
        """``resource`` or ``resource/subresource``, as RBAC rules name it."""
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


def _verbs(*verbs: str) -> frozenset[str]:
    return frozenset(verbs)


API, OPERATOR = Process.API, Process.OPERATOR
RUNS, RELEASE, CLUSTER = Scope.RUN_NAMESPACES, Scope.RELEASE_NAMESPACE, Scope.CLUSTER

PERMISSIONS: tuple[Permission, ...] = (
    # -- the API (agentrun_api): AgentRuns in its namespace, and reads of what the operator writes
    Permission(
        API,
        GROUP,
        PLURAL,
        _verbs("create", "get", "list", "watch", "patch", "delete"),
        RUNS,
        "submit (create), read (get; list and watch: the run cache), cancel (a JSON patch of "
        "spec.cancelRequested), DELETE",
    ),
    Permission(
        API,
        GROUP,
        TRANSCRIPT_PLURAL,
        _verbs("list", "watch"),
        RUNS,
        "the stream: list and watch a run's transcript chunks (by label)",
    ),
    Permission(API, GROUP, RESULT_PLURAL, _verbs("get"), RUNS, "GET /runs/{id}/result"),
    # -- the operator (agentrun_operator and kopf)
    Permission(
        OPERATOR,
        GROUP,
        PLURAL,
        _verbs("get", "list", "watch", "patch", "delete"),
        RUNS,
        "kopf lists and watches runs; the reconciler reads one (get) and patches its phase label "
        "(and kopf its finalizer); retention lists and deletes finished runs",
    ),
    Permission(
        OPERATOR,
        GROUP,
        PLURAL,
        _verbs("patch"),
        RUNS,
        "the operator is the only writer of a run's status (merge patches)",
        subresource="status",
    ),
    Permission(
        OPERATOR,
        GROUP,
        PLURAL,
        _verbs("update"),
        RUNS,
        "every object the operator creates for a run (Job, input Secret, transcript chunks, "
        "result) carries an ownerReference with blockOwnerDeletion: true; the "
        "OwnerReferencesPermissionEnforcement admission plugin (on by default in OpenShift) then "
        "requires update on the owner's finalizers subresource",
        subresource="finalizers",
    ),
    Permission(
        OPERATOR,
        GROUP,
        TRANSCRIPT_PLURAL,
        _verbs("list", "create", "patch", "delete"),
        RUNS,
        "the transcript's only writer: list a run's chunks after a restart, create and patch "
        "chunks, delete chunks the cap supersedes",
    ),
    Permission(
        OPERATOR,
        GROUP,
        RESULT_PLURAL,
        _verbs("get", "create", "patch"),
        RUNS,
        "write the run's result (patch when it exists after a restart); read it for the webhook",
    ),
    Permission(
        OPERATOR,
        "batch",
        "jobs",
        _verbs("get", "list", "watch", "create", "delete"),
        RUNS,
        "create a run's Job, read it, find a run's Jobs by label, watch them (kopf), delete it on "
        "cancel (propagationPolicy Background)",
    ),
    Permission(
        OPERATOR,
        "",
        "pods",
        _verbs("list", "watch"),
        RUNS,
        "find a run's pods by label; watch them (kopf) to notice start, end and eviction",
    ),
    Permission(
        OPERATOR,
        "",
        "pods",
        _verbs("get"),
        RUNS,
        "follow the runner's stdout (the run's events and transcript)",
        subresource="log",
    ),
    Permission(
        OPERATOR,
        "",
        "secrets",
        _verbs("create"),
        RUNS,
        "each run's input Secret (prompt, agent YAML). RBAC cannot narrow create by name; the LLM "
        "credentials Secret is only referenced by the pod spec, never read",
    ),
    Permission(
        OPERATOR,
        "",
        "events",
        _verbs("create", "list"),
        RUNS,
        "post Kubernetes Events about runs (the operator's and kopf's); list the Events of a "
        "run's Job and pod (a field selector on involvedObject) to say why it cannot start",
    ),
    Permission(
        OPERATOR,
        "coordination.k8s.io",
        "leases",
        _verbs("get", "create", "update"),
        RELEASE,
        "leader election: read, create and renew (replace) one Lease",
    ),
    Permission(
        OPERATOR,
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        _verbs("list", "watch"),
        CLUSTER,
        "kopf observes the CRDs it serves (its resource observer)",
    ),
    Permission(
        OPERATOR,
        "",
        "namespaces",
        _verbs("list", "watch"),
        CLUSTER,
        "kopf observes namespaces (its namespace observer)",
    ),
)

Rule = tuple[str, str, str]
"""(API group, resource[/subresource], verb): one atom of an RBAC rule."""


def rules(process: Process, scope: Scope) -> frozenset[Rule]:
    """The (group, resource, verb) atoms ``process`` needs in ``scope``."""
    return frozenset(
        (p.group, p.rbac_resource, verb)
        for p in PERMISSIONS
        if p.process == process and p.scope == scope
        for verb in p.verbs
    )

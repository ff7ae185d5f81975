"""Runner egress is closed by default: the rendered NetworkPolicy, evaluated as a CNI would.

:func:`allows` applies NetworkPolicy egress semantics to one connection (a rule admits it when
one of its peers matches the destination, or it has none, and one of its ports matches, or it
has none; an ipBlock matches an address inside ``cidr`` and outside every ``except``). The tests
then ask the policies the chart renders about the connections that matter: the cloud metadata
endpoint, in-cluster Services and pods (the agentrun API among them), cluster DNS and a hosted
LLM.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

import pytest
from chart_manifests import CHART, FULLNAME, NAMESPACE, Manifest, of_kind

KUBE_SYSTEM = {"kubernetes.io/metadata.name": "kube-system"}
AGENTS_NS = {"kubernetes.io/metadata.name": NAMESPACE}
RUNNER_LABELS = {"agentrun.dev/component": "runner", "agentrun.dev/run": "run-x"}


@dataclass(frozen=True)
class Destination:
    """One connection: an address and port, and the labels of the pod behind it (if any)."""

    ip: str
    port: int
    protocol: str = "TCP"
    pod_labels: dict[str, str] | None = None
    namespace_labels: dict[str, str] = field(default_factory=dict)


def selector_matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels and matchExpressions In/NotIn/Exists/DoesNotExist)."""
    if selector is None:
        return True
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def peer_matches(peer: dict[str, Any], to: Destination) -> bool:
    if "ipBlock" in peer:
        block = peer["ipBlock"]
        address = ipaddress.ip_address(to.ip)
        network = ipaddress.ip_network(block["cidr"])
        if address.version != network.version or address not in network:
            return False
        return not any(
            address in ipaddress.ip_network(c)
            for c in block.get("except") or []
            if ipaddress.ip_network(c).version == address.version
        )
    if to.pod_labels is None:
        return False  # selectors only ever match pods
    if "namespaceSelector" in peer:
        namespace_ok = selector_matches(peer["namespaceSelector"], to.namespace_labels)
    else:
        namespace_ok = to.namespace_labels == AGENTS_NS  # the policy's own namespace
    return namespace_ok and selector_matches(peer.get("podSelector"), to.pod_labels)


def port_matches(port: dict[str, Any], to: Destination) -> bool:
    if port.get("protocol", "TCP") != to.protocol:
        return False
    if "port" not in port:
        return True
    end = port.get("endPort", port["port"])
    return bool(port["port"] <= to.port <= end)


def allows(policies: list[Manifest], to: Destination) -> bool:
    """Egress from a runner pod: denied once an Egress policy selects it, unless a rule admits."""
    selecting = [
        p
        for p in policies
        if "Egress" in p["spec"].get("policyTypes", [])
        and selector_matches(p["spec"]["podSelector"], RUNNER_LABELS)
    ]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get("egress") or []:
            peers = rule.get("to")
            ports = rule.get("ports")
            if (not peers or any(peer_matches(p, to) for p in peers)) and (
                not ports or any(port_matches(p, to) for p in ports)
            ):
                return True
    return False


def runner_policies(docs: list[Manifest], namespace: str = NAMESPACE) -> list[Manifest]:
    return [p for p in of_kind(docs, "NetworkPolicy") if p["metadata"]["namespace"] == namespace]


METADATA = [
    Destination("169.254.169.254", 80),
    Destination("169.254.169.254", 443),
    Destination("fd00:ec2::254", 80),
    Destination("100.100.100.200", 443),  # Alibaba Cloud's metadata endpoint
]
IN_CLUSTER = [
    # The agentrun API: its pod and its ClusterIP Service (typical ranges of several CNIs).
    Destination(
        "10.244.1.7",
        8005,
        pod_labels={"app.kubernetes.io/component": "api"},
        namespace_labels=AGENTS_NS,
    ),
    Destination("10.96.14.2", 8005),
    Destination("10.96.0.1", 443),  # the kubernetes Service (the API server)
    Destination("172.20.0.10", 443),
    Destination("192.168.49.2", 10250),  # a node's kubelet
    Destination("100.64.3.4", 443),
    Destination("fd12:3456::1", 443),
]
DNS = [
    Destination("10.96.0.10", 53, "UDP", {"k8s-app": "kube-dns"}, KUBE_SYSTEM),
    Destination("10.96.0.10", 53, "TCP", {"k8s-app": "kube-dns"}, KUBE_SYSTEM),
]
HOSTED_LLM = [Destination("162.159.140.245", 443), Destination("2606:4700::6810:1", 443)]


def test_runner_egress_is_closed_by_default(default_docs: list[Manifest]) -> None:
    policies = runner_policies(default_docs)
    assert [p["metadata"]["name"] for p in policies] == [f"{FULLNAME}-runner"]
    spec = policies[0]["spec"]
    assert spec["ingress"] == []
    assert sorted(spec["policyTypes"]) == ["Egress", "Ingress"]
    for to in METADATA + IN_CLUSTER:
        assert not allows(policies, to), to
    for to in DNS + HOSTED_LLM:
        assert allows(policies, to), to
    # Only the LLM's port, and DNS only to the cluster's DNS pods.
    assert not allows(policies, Destination("162.159.140.245", 80))
    assert not allows(policies, Destination("8.8.8.8", 53, "UDP"))
    assert not allows(policies, Destination("10.244.2.9", 53, "UDP", {"app": "x"}, AGENTS_NS))


def test_every_runner_namespace_gets_the_policy(render: Any) -> None:
    docs = render(CHART / "ci" / "cluster-wide-values.yaml")
    for namespace in ("agents", "team-a", "team-b"):
        policies = runner_policies(docs, namespace)
        assert len(policies) == 1, namespace
        assert not allows(policies, METADATA[0])
        assert allows(policies, HOSTED_LLM[0])


def test_the_cluster_ranges_are_carved_out_too(render: Any) -> None:
    """Clusters on public-looking ranges: webhookPolicy.clusterServiceCidrs/clusterPodCidrs."""
    docs = render(
        sets=(
            "webhookPolicy.clusterServiceCidrs={198.18.0.0/16}",
            "webhookPolicy.clusterPodCidrs={203.0.113.0/24,2001:db8:42::/56}",
        )
    )
    policies = runner_policies(docs)
    for ip in ("198.18.4.5", "203.0.113.9", "2001:db8:42::7"):
        assert not allows(policies, Destination(ip, 443)), ip
    assert allows(policies, HOSTED_LLM[0])


def test_named_llm_endpoints_replace_the_public_default(render: Any) -> None:
    docs = render(CHART / "ci" / "network-policy-values.yaml")
    policies = runner_policies(docs)
    assert allows(policies, Destination("203.0.113.10", 443))
    assert not allows(policies, HOSTED_LLM[0])
    for to in METADATA + IN_CLUSTER:
        assert not allows(policies, to), to
    for to in DNS:
        assert allows(policies, to), to


def test_escape_hatches(render: Any) -> None:
    """extraEgress appends rules (an in-cluster Ollama); enabled=false removes the policy."""
    ollama = Destination(
        "10.244.3.3", 11434, pod_labels={"app": "ollama"}, namespace_labels={"team": "ml"}
    )
    assert not allows(runner_policies(render()), ollama)
    docs = render(
        sets=(
            "runner.networkPolicy.extraEgress[0].to[0].namespaceSelector.matchLabels.team=ml",
            "runner.networkPolicy.extraEgress[0].to[0].podSelector.matchLabels.app=ollama",
            "runner.networkPolicy.extraEgress[0].ports[0].port=11434",
        )
    )
    policies = runner_policies(docs)
    assert allows(policies, ollama)
    assert not allows(policies, METADATA[0])
    assert runner_policies(render(sets=("runner.networkPolicy.enabled=false",))) == []


@pytest.mark.parametrize("to", METADATA + IN_CLUSTER, ids=str)
def test_the_evaluator_itself_lets_everything_through_without_a_policy(to: Destination) -> None:
    """No policy selecting the pod: all egress allowed (so the denials above are the policy's)."""
    assert allows([], to)

"""Workloads on the rendered chart: restricted Pod Security, probes, Service port, PDBs, Secrets,
runner settings and NetworkPolicies."""

from __future__ import annotations

import base64

import pytest
from chart_manifests import (
    CHART,
    FULLNAME,
    SCENARIOS,
    Manifest,
    container_env,
    named,
    of_kind,
    pod_specs,
)


@pytest.mark.parametrize(
    "values", [None, *SCENARIOS], ids=["default", *[p.stem for p in SCENARIOS]]
)
def test_every_pod_is_restricted(render, values) -> None:  # type: ignore[no-untyped-def]
    docs = render(values) if values else render()
    specs = pod_specs(docs)
    assert len(specs) == 2
    for name, spec in specs:
        pod_sc = spec["securityContext"]
        assert pod_sc["runAsNonRoot"] is True, name
        assert pod_sc["runAsUser"] != 0, name
        assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault", name
        assert not spec.get("hostNetwork")
        assert not spec.get("hostPID")
        assert not spec.get("hostIPC")
        for container in spec["containers"] + spec.get("initContainers", []):
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert not sc.get("capabilities", {}).get("add"), name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert not sc.get("privileged"), name
            assert "/tmp" in [m["mountPath"] for m in container["volumeMounts"]], name


def test_api_service_is_port_8005(default_docs: list[Manifest]) -> None:
    service = named(default_docs, "Service", f"{FULLNAME}-api")
    assert [(p["name"], p["port"]) for p in service["spec"]["ports"]] == [("http", 8005)]
    deployment = named(default_docs, "Deployment", f"{FULLNAME}-api")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "http", "containerPort": 8005, "protocol": "TCP"} in container["ports"]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


@pytest.mark.parametrize(("component", "port"), [("api", "http"), ("operator", "health")])
def test_probes_split_liveness_and_readiness(
    default_docs: list[Manifest], component: str, port: str
) -> None:
    deployment = named(default_docs, "Deployment", f"{FULLNAME}-{component}")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": port}
    assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": port}
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]
    assert "metrics" in [p["name"] for p in container["ports"]]


def test_metrics_services_and_service_monitor(render) -> None:  # type: ignore[no-untyped-def]
    docs = render(CHART / "ci" / "ha-values.yaml")
    metrics = {s["metadata"]["name"] for s in of_kind(docs, "Service")} - {f"{FULLNAME}-api"}
    assert metrics == {f"{FULLNAME}-api-metrics", f"{FULLNAME}-operator-metrics"}
    (monitor,) = of_kind(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    selector = monitor["spec"]["selector"]["matchLabels"]
    for name in metrics:
        labels = named(docs, "Service", name)["metadata"]["labels"]
        assert selector.items() <= labels.items()
    assert not of_kind(render(), "ServiceMonitor")


def test_pdbs_only_with_more_than_one_replica(render, default_docs) -> None:  # type: ignore[no-untyped-def]
    assert of_kind(default_docs, "PodDisruptionBudget") == []
    docs = render(CHART / "ci" / "ha-values.yaml")
    pdbs = {p["metadata"]["name"]: p for p in of_kind(docs, "PodDisruptionBudget")}
    assert set(pdbs) == {f"{FULLNAME}-api", f"{FULLNAME}-operator"}
    api = named(docs, "Deployment", f"{FULLNAME}-api")
    assert api["spec"]["replicas"] == 3
    assert pdbs[f"{FULLNAME}-api"]["spec"]["selector"] == api["spec"]["selector"]
    docs = render(sets=("api.replicas=2",))
    assert [p["metadata"]["name"] for p in of_kind(docs, "PodDisruptionBudget")] == [
        f"{FULLNAME}-api"
    ]


def test_operator_leader_election_identity_and_lease(default_docs: list[Manifest]) -> None:
    env = container_env(named(default_docs, "Deployment", f"{FULLNAME}-operator"))
    assert env["AGENTRUN_OPERATOR_LEADER_ELECTION__ENABLED"]["value"] == "true"
    assert (
        env["AGENTRUN_OPERATOR_LEADER_ELECTION__IDENTITY"]["valueFrom"]["fieldRef"]["fieldPath"]
        == "metadata.name"
    )
    assert env["AGENTRUN_OPERATOR_LEADER_ELECTION__LEASE_NAME"]["value"] == f"{FULLNAME}-operator"


def test_generated_token_secret_is_mounted(default_docs: list[Manifest]) -> None:
    secret = named(default_docs, "Secret", f"{FULLNAME}-api-tokens")
    token = base64.b64decode(secret["data"]["default"]).decode()
    assert len(token) == 48
    assert token.isalnum()
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    spec = named(default_docs, "Deployment", f"{FULLNAME}-api")["spec"]["template"]["spec"]
    assert {"name": "tokens", "secret": {"secretName": f"{FULLNAME}-api-tokens"}} in spec["volumes"]
    env = container_env(named(default_docs, "Deployment", f"{FULLNAME}-api"))
    assert env["AGENTRUN_API_AUTH_ENABLED"]["value"] == "true"
    assert env["AGENTRUN_API_TOKENS_DIR"]["value"] == "/var/run/agentrun/tokens"


def test_existing_secrets_generate_nothing(render) -> None:  # type: ignore[no-untyped-def]
    docs = render(CHART / "ci" / "existing-secrets-values.yaml")
    assert of_kind(docs, "Secret") == []
    assert of_kind(docs, "ConfigMap") == []
    api = named(docs, "Deployment", f"{FULLNAME}-api")["spec"]["template"]["spec"]
    assert {"name": "tokens", "secret": {"secretName": "agentrun-api-tokens"}} in api["volumes"]
    op_deploy = named(docs, "Deployment", f"{FULLNAME}-operator")
    op = op_deploy["spec"]["template"]["spec"]
    assert {"name": "webhook-signing", "secret": {"secretName": "agentrun-webhook-signing"}} in op[
        "volumes"
    ]
    env = container_env(op_deploy)
    assert env["AGENTRUN_OPERATOR_CREDENTIALS_SECRET"]["value"] == "my-llm-credentials"
    assert env["AGENTRUN_OPERATOR_AGENT_CONFIGMAP"]["value"] == "my-agents"
    assert (
        env["AGENTRUN_OPERATOR_WEBHOOK__SIGNING_SECRETS_DIR"]["value"]
        == "/var/run/agentrun/webhook-signing"
    )
    assert env["AGENTRUN_OPERATOR_PUBLIC_BASE_URL"]["value"] == "https://agents.example.com"
    for crd in of_kind(docs, "CustomResourceDefinition"):
        assert "helm.sh/resource-policy" not in crd["metadata"].get("annotations", {})


def test_generated_webhook_signing_secret_is_standard_webhooks_format(render) -> None:  # type: ignore[no-untyped-def]
    docs = render(sets=("webhookSigning.generate=true",))
    secret = named(docs, "Secret", f"{FULLNAME}-webhook-signing")
    value = base64.b64decode(secret["data"]["signing-secret"]).decode()
    assert value.startswith("whsec_")
    assert len(base64.b64decode(value.removeprefix("whsec_"))) == 32


def test_auth_off_mounts_no_tokens(render) -> None:  # type: ignore[no-untyped-def]
    docs = render(CHART / "ci" / "auth-off-values.yaml")
    assert of_kind(docs, "Secret") == []
    assert of_kind(docs, "CustomResourceDefinition") == []
    env = container_env(named(docs, "Deployment", f"{FULLNAME}-api"))
    assert env["AGENTRUN_API_AUTH_ENABLED"]["value"] == "false"
    assert "AGENTRUN_API_TOKENS_DIR" not in env


def test_runner_settings_reach_the_operator(render) -> None:  # type: ignore[no-untyped-def]
    import json

    docs = render(CHART / "ci" / "cluster-wide-values.yaml")
    env = container_env(named(docs, "Deployment", f"{FULLNAME}-operator"))
    assert env["AGENTRUN_OPERATOR_CLUSTER_WIDE"]["value"] == "true"
    assert json.loads(env["AGENTRUN_OPERATOR_NAMESPACES"]["value"]) == ["team-a", "team-b"]
    assert env["AGENTRUN_OPERATOR_RUNTIME_CLASS_NAME"]["value"] == "gvisor"
    assert env["AGENTRUN_OPERATOR_PRIORITY_CLASS_NAME"]["value"] == "agent-runs"
    assert json.loads(env["AGENTRUN_OPERATOR_NODE_SELECTOR"]["value"]) == {
        "agentrun.dev/pool": "agents"
    }
    assert (
        json.loads(env["AGENTRUN_OPERATOR_TOLERATIONS"]["value"])[0]["key"] == "agentrun.dev/agents"
    )
    assert json.loads(env["AGENTRUN_OPERATOR_IMAGE_PULL_SECRETS"]["value"]) == ["registry-creds"]
    assert env["AGENTRUN_OPERATOR_RUNNER_IMAGE"]["value"] == "ghcr.io/agentrun/runner:0.1.0"
    assert env["AGENTRUN_OPERATOR_AGENT_CONFIGMAP"]["value"] == f"{FULLNAME}-agents"
    configmaps = of_kind(docs, "ConfigMap")
    assert sorted(c["metadata"]["namespace"] for c in configmaps) == ["agents", "team-a", "team-b"]
    assert "framework: praisonai" in configmaps[0]["data"]["agents.yaml"]


def test_network_policies(render, default_docs) -> None:  # type: ignore[no-untyped-def]
    # By default only runner pods are fenced (test_chart_runner_egress.py evaluates that policy).
    assert [p["metadata"]["name"] for p in of_kind(default_docs, "NetworkPolicy")] == [
        f"{FULLNAME}-runner"
    ]
    docs = render(CHART / "ci" / "network-policy-values.yaml")
    policies = {p["metadata"]["name"]: p for p in of_kind(docs, "NetworkPolicy")}
    assert set(policies) == {f"{FULLNAME}-api", f"{FULLNAME}-operator", f"{FULLNAME}-runner"}
    runner = policies[f"{FULLNAME}-runner"]["spec"]
    assert runner["podSelector"] == {"matchLabels": {"agentrun.dev/component": "runner"}}
    assert runner["ingress"] == []
    assert sorted(runner["policyTypes"]) == ["Egress", "Ingress"]
    dns, llm = runner["egress"]
    assert {p["port"] for p in dns["ports"]} == {53}
    assert llm == {
        "to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}],
        "ports": [{"protocol": "TCP", "port": 443}],
    }
    api = policies[f"{FULLNAME}-api"]["spec"]
    assert api["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 8005}]
    assert api["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "ingress-nginx"
    }
    apiserver = api["egress"][1]
    assert apiserver["to"] == [{"ipBlock": {"cidr": "10.0.0.1/32"}}]
    # Only the operator delivers webhooks.
    assert len(api["egress"]) == 2
    assert len(policies[f"{FULLNAME}-operator"]["spec"]["egress"]) == 3


def test_api_drains_before_sigterm(render, default_docs) -> None:  # type: ignore[no-untyped-def]
    """A preStop sleep shorter than the grace period: the Service stops routing first."""
    spec = named(default_docs, "Deployment", f"{FULLNAME}-api")["spec"]["template"]["spec"]
    sleep = spec["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert 0 < sleep < spec["terminationGracePeriodSeconds"]
    docs = render(sets=("api.preStopSleepSeconds=0",))
    container = named(docs, "Deployment", f"{FULLNAME}-api")["spec"]["template"]["spec"][
        "containers"
    ][0]
    assert "lifecycle" not in container


def test_optional_ingress_routes_to_the_api_service(render, default_docs) -> None:  # type: ignore[no-untyped-def]
    assert of_kind(default_docs, "Ingress") == []
    docs = render(CHART / "ci" / "ha-values.yaml")
    (ingress,) = of_kind(docs, "Ingress")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [
        {"hosts": ["agents.example.com"], "secretName": "agents-example-com-tls"}
    ]
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "agents.example.com"
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": f"{FULLNAME}-api", "port": {"name": "http"}}
    assert (
        ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    )


def test_ingress_without_hosts_is_refused(helm: str) -> None:
    from chart_manifests import run_helm

    proc = run_helm(helm, "template", "rel", str(CHART), "--set", "api.ingress.enabled=true")
    assert proc.returncode != 0
    assert "api.ingress.hosts" in proc.stderr

"""The chart's values stay in sync with the processes' settings classes.

Every field of APISettings and OperatorSettings (walked recursively through nested models) either
has a Helm value or is listed below as not exposed, with the reason. Then the rendered env of
each Deployment is fed to the real settings class, which must accept it and read back the values.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml
from agentrun_api.settings import APISettings
from agentrun_operator.settings import OperatorSettings
from chart_manifests import CHART, FULLNAME, Manifest, container_env, named
from pydantic import BaseModel

VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
SCHEMA = json.loads((CHART / "values.schema.json").read_text())

# settings field path -> values path, for fields not under <component>.settings.<camelCase>.
API_MAPPED: dict[str, str] = {
    "auth_enabled": "auth.enabled",
    "frameworks": "frameworks",
    "timeout_max_seconds": "timeoutMaxSeconds",
    "public_base_url": "publicBaseUrl",
    "webhook_policy": "webhookPolicy",
    "tokens_dir": "auth.existingSecret",  # the mounted tokens Secret (existing or generated)
    "admin_tokens": "auth.adminTokens",
    "read_token_keys_dir": "auth.readTokenKeys",  # the mounted keys Secret (existing or generated)
}
API_NOT_EXPOSED: dict[str, str] = {
    "namespace": "the release namespace (fieldRef): one API install serves one namespace",
    "host": "binds 0.0.0.0 in the pod",
    "port": "8005, fixed by the contract",
    "kubeconfig": "in-cluster service account",
    "tokens": "dev/test only; the chart mounts a Secret (tokens_dir)",
    "read_token_key": "dev/test only; the chart mounts a keys Secret (read_token_keys_dir)",
    "read_token_verify_keys": "dev/test only; the chart mounts a keys Secret (read_token_keys_dir)",
}
OPERATOR_MAPPED: dict[str, str] = {
    "namespaces": "watchNamespaces",
    "cluster_wide": "clusterWide",
    "runner_image": "runner.image",
    "runner_image_pull_policy": "runner.image.pullPolicy",
    "runner_command": "runner.command",
    "runner_resources": "runner.resources",
    "runner_service_account": "runner.serviceAccount.name",
    "credentials_secret": "llm.credentialsSecret",
    "frameworks": "frameworks",
    "timeout_max_seconds": "timeoutMaxSeconds",
    "node_selector": "runner.nodeSelector",
    "tolerations": "runner.tolerations",
    "affinity": "runner.affinity",
    "priority_class_name": "runner.priorityClassName",
    "runtime_class_name": "runner.runtimeClassName",
    "image_pull_secrets": "runner.imagePullSecrets",
    "agent_configmap": "runner.agents",
    "public_base_url": "publicBaseUrl",
    "webhook_policy": "webhookPolicy",
    "webhook.signing_secrets_dir": "webhookSigning",
}
OPERATOR_NOT_EXPOSED: dict[str, str] = {
    "kubeconfig": "in-cluster service account",
    "health_host": "binds 0.0.0.0 in the pod",
    "leader_election.lease_name": "<fullname>-operator, so releases never share a Lease",
    "leader_election.lease_namespace": "the release namespace (fieldRef)",
    "leader_election.identity": "the pod name (fieldRef)",
    "webhook.signing_secrets": "dev/test only; the chart mounts a Secret (signing_secrets_dir)",
}
# Defaults the chart deliberately sets differently from the process (values path -> reason).
DIFFERENT_DEFAULTS: dict[str, str] = {}


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def leaf_fields(model: type[BaseModel], prefix: str = "") -> dict[str, Any]:
    """'a.b_c' -> FieldInfo for every field, recursing into nested settings models."""
    out: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        ann = field.annotation
        if (
            isinstance(ann, type)
            and issubclass(ann, BaseModel)
            and ann.__name__.endswith("Settings")
        ):
            out[path] = field  # the model itself may be mapped as a whole
            out.update(leaf_fields(ann, f"{path}."))
        else:
            out[path] = field
    return out


def lookup(values: Any, dotted: str) -> Any:
    node = values
    for part in dotted.split("."):
        assert isinstance(node, dict), f"values.yaml has no {dotted!r}"
        assert part in node, f"values.yaml has no {dotted!r}"
        node = node[part]
    return node


def covered(path: str, mapped: dict[str, str], hidden: dict[str, str]) -> str | None:
    """The mapping entry that covers a field (itself or an ancestor), if any."""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        head = ".".join(parts[:i])
        if head in mapped or head in hidden:
            return head
    return None


CASES = [
    ("api", APISettings, API_MAPPED, API_NOT_EXPOSED),
    ("operator", OperatorSettings, OPERATOR_MAPPED, OPERATOR_NOT_EXPOSED),
]


@pytest.mark.parametrize(("component", "model", "mapped", "hidden"), CASES, ids=["api", "operator"])
def test_every_setting_has_a_value_or_is_listed(
    component: str, model: type[BaseModel], mapped: dict[str, str], hidden: dict[str, str]
) -> None:
    missing = []
    for path, field in leaf_fields(model).items():
        assert field.description, f"{model.__name__}.{path} has no description"
        entry = covered(path, mapped, hidden)
        if entry is not None:
            if entry in mapped:
                lookup(VALUES, mapped[entry])
            continue
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            continue  # its leaves are checked one by one
        values_path = f"{component}.settings." + ".".join(camel(p) for p in path.split("."))
        try:
            lookup(VALUES, values_path)
        except AssertionError:
            missing.append(f"{path} (expected values {values_path})")
    assert not missing, (
        f"{model.__name__} fields with no Helm value: add them to charts/agentrun/values.yaml "
        "(with a comment), run tools/chart-values-schema and tools/chart-values-table --write, "
        f"or list them as not exposed in this test: {missing}"
    )


@pytest.mark.parametrize(("component", "model", "mapped", "hidden"), CASES, ids=["api", "operator"])
def test_no_stale_values(component: str, model: type[BaseModel], mapped: Any, hidden: Any) -> None:
    """Every key under <component>.settings names a real field (a typo would be ignored)."""
    fields = leaf_fields(model)

    def walk(node: dict[str, Any], prefix: str) -> None:
        for key, value in node.items():
            snake = re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), key)
            path = f"{prefix}{snake}"
            assert path in fields, f"values {component}.settings has {key!r}: no such setting"
            if isinstance(value, dict):
                walk(value, f"{path}.")

    walk(VALUES[component]["settings"], "")
    for dotted in mapped.values():
        lookup(VALUES, dotted)
    for path in list(mapped) + list(hidden):
        assert path in fields, f"the mapping names {path!r}, which {model.__name__} lacks"


@pytest.mark.parametrize(
    ("component", "model"), [("api", APISettings), ("operator", OperatorSettings)]
)
def test_values_defaults_match_the_process_defaults(component: str, model: type[BaseModel]) -> None:
    defaults = model.model_construct()

    def walk(node: dict[str, Any], obj: Any, prefix: str) -> None:
        for key, value in node.items():
            snake = re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), key)
            default = getattr(obj, snake)
            if isinstance(value, dict):
                walk(value, default, f"{prefix}{key}.")
                continue
            path = f"{component}.settings.{prefix}{key}"
            if path in DIFFERENT_DEFAULTS:
                continue
            assert value == default, (
                f"values {path}={value!r} but the process default is {default!r}"
            )

    walk(VALUES[component]["settings"], defaults, "")
    from agentrun_webhooks.policy import WebhookPolicySettings

    walk_policy = {k: v for k, v in VALUES["webhookPolicy"].items()}
    policy = WebhookPolicySettings()
    for key, value in walk_policy.items():
        snake = re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), key)
        assert value == getattr(policy, snake), f"webhookPolicy.{key}"


def env_of(deployment: Manifest, fieldrefs: dict[str, str]) -> dict[str, str]:
    """The container env as a process would see it (fieldRefs resolved from ``fieldrefs``)."""
    env = {}
    for name, entry in container_env(deployment).items():
        if "value" in entry:
            env[name] = entry["value"]
        else:
            env[name] = fieldrefs[entry["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


def settings_from(
    monkeypatch: pytest.MonkeyPatch, model: type[BaseModel], env: dict[str, str], prefix: str
) -> Any:
    import os

    for name in list(os.environ):
        if name.startswith(prefix):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return model()


def expected_env_names(
    component: str, model: type[BaseModel], mapped: dict[str, str], hidden: dict[str, str]
) -> set[str]:
    prefix = f"AGENTRUN_{component.upper()}_"
    names = set()
    for path, field in leaf_fields(model).items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            continue
        if covered(path, {}, hidden):
            continue
        names.add(prefix + "__".join(p.upper() for p in path.split(".")))
    return names


def test_api_env_is_complete_and_parses(
    default_docs: list[Manifest], monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment = named(default_docs, "Deployment", f"{FULLNAME}-api")
    env = env_of(deployment, {"metadata.namespace": "agents"})
    expected = expected_env_names("api", APISettings, API_MAPPED, API_NOT_EXPOSED)
    expected -= {"AGENTRUN_API_PUBLIC_BASE_URL"}  # empty by default: built from each request
    assert expected - set(env) == set()
    settings = settings_from(monkeypatch, APISettings, env, "AGENTRUN_API_")
    assert settings.namespace == "agents"
    assert settings.port == 8005
    assert settings.auth_enabled is True
    assert str(settings.tokens_dir) == "/var/run/agentrun/tokens"
    assert str(settings.read_token_keys_dir) == "/var/run/agentrun/read-token-keys"
    assert settings.admin_tokens == VALUES["auth"]["adminTokens"]
    assert settings.max_queued_runs == 10_000
    assert settings.frameworks == VALUES["frameworks"]
    assert (
        settings.stream.heartbeat_seconds == VALUES["api"]["settings"]["stream"]["heartbeatSeconds"]
    )
    assert settings.webhook_policy.cluster_domains == VALUES["webhookPolicy"]["clusterDomains"]


def test_operator_env_is_complete_and_parses(render: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = render(CHART / "ci" / "cluster-wide-values.yaml", sets=("webhookSigning.generate=true",))
    deployment = named(docs, "Deployment", f"{FULLNAME}-operator")
    env = env_of(deployment, {"metadata.namespace": "agents", "metadata.name": "op-0"})
    expected = expected_env_names(
        "operator", OperatorSettings, OPERATOR_MAPPED, OPERATOR_NOT_EXPOSED
    )
    assert expected - set(env) == set()
    settings = settings_from(monkeypatch, OperatorSettings, env, "AGENTRUN_OPERATOR_")
    assert settings.cluster_wide is True
    assert settings.namespaces == ["team-a", "team-b"]
    assert settings.leader_election.identity == "op-0"
    assert settings.leader_election.lease_namespace == "agents"
    assert settings.leader_election.lease_name == f"{FULLNAME}-operator"
    assert settings.runner_resources.limits == {"memory": "1Gi"}
    assert settings.webhook.retry_schedule_seconds == [0, 5, 300, 1800, 7200, 18000, 36000, 36000]
    assert str(settings.webhook.signing_secrets_dir) == "/var/run/agentrun/webhook-signing"
    assert settings.public_base_url == f"http://{FULLNAME}-api.agents.svc:8005"


def test_rendered_operator_settings_build_a_runner_job_the_chart_expects(
    render: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chart -> env -> OperatorSettings -> the operator's real Job builder: the runner pod uses
    the chart's ServiceAccount, placement, agents ConfigMap, and carries the label the runner
    NetworkPolicy selects."""
    from agentrun_contract.resource import AgentRun
    from agentrun_operator.job_manifest import build_job_manifest

    docs = render(
        CHART / "ci" / "cluster-wide-values.yaml", sets=("runner.networkPolicy.enabled=true",)
    )
    env = env_of(
        named(docs, "Deployment", f"{FULLNAME}-operator"),
        {"metadata.namespace": "agents", "metadata.name": "op-0"},
    )
    settings = settings_from(monkeypatch, OperatorSettings, env, "AGENTRUN_OPERATOR_")
    run = AgentRun.model_validate(
        {
            "apiVersion": "agentrun.dev/v1alpha1",
            "kind": "AgentRun",
            "metadata": {"name": "run-abc", "namespace": "team-a", "uid": "u-1"},
            "spec": {"prompt": "hello"},
        }
    )
    job = build_job_manifest(run, settings, "nonce")
    pod = job["spec"]["template"]
    spec = pod["spec"]
    assert spec["serviceAccountName"] == "agentrun-runner"
    assert spec["automountServiceAccountToken"] is False
    assert spec["runtimeClassName"] == "gvisor"
    assert spec["nodeSelector"] == {"agentrun.dev/pool": "agents"}
    assert spec["imagePullSecrets"] == [{"name": "registry-creds"}]
    assert {"name": "agents", "configMap": {"name": f"{FULLNAME}-agents"}} in spec["volumes"]
    (policy,) = [
        p for p in docs if p["kind"] == "NetworkPolicy" and p["metadata"]["namespace"] == "team-a"
    ]
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert selector.items() <= pod["metadata"]["labels"].items()
    (sa,) = [
        s
        for s in docs
        if s["kind"] == "ServiceAccount"
        and s["metadata"]["namespace"] == "team-a"
        and s["metadata"]["name"] == spec["serviceAccountName"]
    ]
    assert sa["automountServiceAccountToken"] is False


def test_schema_mirrors_values_strictly() -> None:
    """values.schema.json: additionalProperties false on every chart-owned map, with exactly the
    keys of values.yaml; passthrough Kubernetes objects are typed but open."""
    passthrough = {
        "resources",
        "podSecurityContext",
        "securityContext",
        "nodeSelector",
        "affinity",
        "podAnnotations",
        "podLabels",
        "annotations",
        "labels",
        "files",
        "namespaceSelector",
        "podSelector",
    }

    def walk(values: dict[str, Any], schema: dict[str, Any], where: str) -> None:
        assert schema.get("type") == "object", where
        assert schema.get("additionalProperties") is False, f"{where} is not strict"
        assert set(schema["properties"]) == set(values), f"{where}: schema and values differ"
        for key, value in values.items():
            sub = schema["properties"][key]
            if key in passthrough:
                assert sub["type"] == "object"
                assert sub.get("additionalProperties") is not False
            elif isinstance(value, dict):
                walk(value, sub, f"{where}.{key}")
            else:
                assert "type" in sub, f"{where}.{key} is untyped"

    walk(VALUES, SCHEMA, "values")


def test_values_yaml_is_documented_line_by_line() -> None:
    """Every key line in values.yaml has a comment right above it, except section headers (whose
    children are documented) and the content of passthrough Kubernetes objects (documented by
    the comment above the object)."""
    passthrough = {"resources", "podSecurityContext", "securityContext", "dns"}
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = []
    skip_deeper_than: int | None = None
    for i, line in enumerate(lines):
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if not stripped or stripped.startswith(("#", "-")) or ":" not in stripped:
            continue
        if skip_deeper_than is not None:
            if indent > skip_deeper_than:
                continue
            skip_deeper_than = None
        key = stripped.split(":", 1)[0]
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        is_section = stripped.endswith(":") and len(nxt) - len(nxt.lstrip()) > indent
        above = lines[i - 1].strip() if i else ""
        if key in passthrough:
            skip_deeper_than = indent
        elif is_section and not nxt.strip().startswith("-"):
            continue
        if not above.startswith("#"):
            undocumented.append(f"{i + 1}: {stripped}")
    assert not undocumented, f"values.yaml keys without a comment: {undocumented}"


def test_readme_values_table_lists_every_value() -> None:
    readme = (CHART / "README.md").read_text()

    def leaves(node: dict[str, Any], prefix: str) -> list[str]:
        out = []
        for key, value in node.items():
            path = f"{prefix}{key}"
            if (
                isinstance(value, dict)
                and value
                and key
                not in {"resources", "podSecurityContext", "securityContext", "dns", "files"}
            ):
                out += leaves(value, f"{path}.")
            else:
                out.append(path)
        return out

    missing = [p for p in leaves(VALUES, "") if f"`{p}`" not in readme]
    assert not missing, f"charts/agentrun/README.md values table lacks {missing}"


@pytest.mark.parametrize(
    "tool", ["tools/chart-values-schema", "tools/chart-values-table"], ids=["schema", "table"]
)
def test_generated_files_are_current(tool: str) -> None:
    """values.schema.json and the README's values table are generated from values.yaml and the
    settings models; the committed ones must match."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, str(CHART.parents[1] / tool), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_chart_level_defaults_match_the_process_defaults() -> None:
    """Values mapped onto settings outside <component>.settings default to the same thing."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    operator = OperatorSettings.model_construct()
    api = APISettings.model_construct()
    runner = VALUES["runner"]
    assert f"{runner['image']['repository']}:{chart['appVersion']}" == operator.runner_image
    assert runner["image"]["pullPolicy"] == operator.runner_image_pull_policy
    assert runner["command"] == operator.runner_command
    assert runner["resources"] == operator.runner_resources.model_dump()
    assert runner["serviceAccount"]["name"] == operator.runner_service_account
    assert VALUES["llm"]["credentialsSecret"] == operator.credentials_secret
    assert VALUES["frameworks"] == operator.frameworks == api.frameworks
    assert VALUES["timeoutMaxSeconds"] == operator.timeout_max_seconds == api.timeout_max_seconds
    assert VALUES["auth"]["enabled"] == api.auth_enabled
    assert VALUES["clusterWide"] == operator.cluster_wide


def test_read_token_keys_are_a_secret_of_their_own(
    render: Any, default_docs: list[Manifest]
) -> None:
    """The signing key is generated into its own Secret (so adding an API token never changes
    it) and mounted where AGENTRUN_API_READ_TOKEN_KEYS_DIR points; existingSecret replaces it."""
    import base64

    secret = named(default_docs, "Secret", f"{FULLNAME}-read-token-keys")
    assert len(base64.b64decode(secret["data"]["signing-key"])) == 64
    tokens = named(default_docs, "Secret", f"{FULLNAME}-api-tokens")
    assert "signing-key" not in tokens["data"]
    spec = named(default_docs, "Deployment", f"{FULLNAME}-api")["spec"]["template"]["spec"]
    volume = {"name": "read-token-keys", "secret": {"secretName": f"{FULLNAME}-read-token-keys"}}
    assert volume in spec["volumes"]
    docs = render(sets=("auth.readTokenKeys.existingSecret=my-keys", "auth.adminTokens={ops}"))
    assert not [d for d in docs if d["metadata"]["name"] == f"{FULLNAME}-read-token-keys"]
    deployment = named(docs, "Deployment", f"{FULLNAME}-api")
    spec = deployment["spec"]["template"]["spec"]
    assert {"name": "read-token-keys", "secret": {"secretName": "my-keys"}} in spec["volumes"]
    assert container_env(deployment)["AGENTRUN_API_ADMIN_TOKENS"]["value"] == '["ops"]'

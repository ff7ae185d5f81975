"""build_job_manifest / build_input_secret: the Job and its inputs follow the contract."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
from agentrun_contract import names, runner
from agentrun_contract.resource import AgentRun
from agentrun_operator.job_manifest import (
    build_input_secret,
    build_job_manifest,
    new_nonce,
    nonce_from_job,
)
from agentrun_operator.settings import OperatorSettings

K8S_VERSION = "1.36.0"


def make_run(**spec: Any) -> AgentRun:
    return AgentRun.model_validate(
        {
            "metadata": {"name": "run-abc", "namespace": "team", "uid": "uid-123"},
            "spec": {"prompt": "Write a haiku\nabout ünïcode", "timeoutSeconds": 120, **spec},
        }
    )


def container(job: dict[str, Any]) -> dict[str, Any]:
    c: dict[str, Any] = job["spec"]["template"]["spec"]["containers"][0]
    return c


def env_of(job: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container(job)["env"]}


def test_job_is_valid_for_kubernetes_schema_and_strict() -> None:
    job = build_job_manifest(make_run(), OperatorSettings(), "n0nce")
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    secret = build_input_secret(make_run(agentYaml="roles: {}\n"))
    kubernetes_validate.validate(secret, K8S_VERSION, strict=True)


def test_job_settings_per_contract() -> None:
    settings = OperatorSettings(
        termination_grace_period_seconds=7, job_ttl_seconds_after_finished=99
    )
    job = build_job_manifest(make_run(), settings, "n0nce")
    spec = job["spec"]
    assert job["metadata"]["name"] == names.job_name("run-abc")
    assert job["metadata"]["namespace"] == "team"
    assert spec["activeDeadlineSeconds"] == 120
    assert spec["backoffLimit"] == 0
    assert spec["ttlSecondsAfterFinished"] == 99
    rule = spec["podFailurePolicy"]["rules"][0]
    assert rule == {"action": "FailJob", "onPodConditions": [{"type": "DisruptionTarget"}]}
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["terminationGracePeriodSeconds"] == 7
    assert pod["automountServiceAccountToken"] is False
    assert spec["template"]["metadata"]["labels"][names.LABEL_RUN] == "run-abc"
    assert job["metadata"]["labels"][names.LABEL_RUN] == "run-abc"
    owner = job["metadata"]["ownerReferences"][0]
    assert owner["uid"] == "uid-123"
    assert owner["controller"] is True
    assert owner["blockOwnerDeletion"] is True
    assert owner["kind"] == "AgentRun"


def test_pod_security_and_inputs() -> None:
    job = build_job_manifest(make_run(), OperatorSettings(), "n0nce")
    c = container(job)
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == 65534
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert c["command"] == list(runner.RUNNER_COMMAND)
    assert c["envFrom"] == [{"secretRef": {"name": "agentrun-llm-credentials"}}]
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert runner.TMP_DIR in mounts
    assert mounts[runner.INPUT_DIR]["readOnly"] is True
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert volumes["tmp"] == {"name": "tmp", "emptyDir": {}}
    assert volumes["input"]["secret"]["secretName"] == names.input_secret_name("run-abc")
    env = env_of(job)
    assert env[runner.ENV_RUN_ID] == "run_abc"
    assert env[runner.ENV_NONCE] == "n0nce"
    assert env[runner.ENV_PROMPT_FILE] == runner.PROMPT_PATH
    assert env[runner.ENV_CREDENTIALS_SECRET] == "agentrun-llm-credentials"
    assert env[runner.ENV_TERMINATION_MESSAGE_PATH] == runner.TERMINATION_MESSAGE_PATH
    assert runner.ENV_AGENT_YAML_FILE not in env
    # the prompt never reaches env or argv
    flat = str(c["env"]) + str(c["command"]) + str(c.get("args"))
    assert "haiku" not in flat


def test_inline_yaml_and_session() -> None:
    run = make_run(agentYaml="roles: {}\n", sessionId="s-1")
    env = env_of(build_job_manifest(run, OperatorSettings(), "x"))
    assert env[runner.ENV_AGENT_YAML_FILE] == runner.AGENT_YAML_PATH
    assert env[runner.ENV_SESSION_ID] == "s-1"
    secret = build_input_secret(run)
    assert secret["stringData"] == {
        runner.PROMPT_KEY: "Write a haiku\nabout ünïcode",
        runner.AGENT_YAML_KEY: "roles: {}\n",
    }
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "uid-123"
    assert secret["metadata"]["labels"][names.LABEL_RUN] == "run-abc"


def test_placement_passthroughs_and_configmap() -> None:
    settings = OperatorSettings(
        node_selector={"pool": "agents"},
        tolerations=[{"key": "agents", "operator": "Exists", "effect": "NoSchedule"}],
        priority_class_name="low",
        runtime_class_name="gvisor",
        image_pull_secrets=["regcred"],
        agent_configmap="my-agents",
        runner_command=["python", "-m", "agentrun_devcluster.tiny_runner"],
    )
    job = build_job_manifest(make_run(agentFile="team/a.yaml"), settings, "x")
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    pod = job["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "agents"}
    assert pod["priorityClassName"] == "low"
    assert pod["runtimeClassName"] == "gvisor"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    assert container(job)["command"] == ["python", "-m", "agentrun_devcluster.tiny_runner"]
    mounts = {m["mountPath"]: m for m in container(job)["volumeMounts"]}
    assert mounts[runner.AGENT_DIR]["readOnly"] is True
    assert env_of(job)[runner.ENV_AGENT_FILE] == "team/a.yaml"


def test_nonce_round_trip_and_randomness() -> None:
    nonce = new_nonce()
    assert nonce != new_nonce()
    assert len(nonce) >= 16
    job = build_job_manifest(make_run(), OperatorSettings(), nonce)
    assert nonce_from_job(job) == nonce
    assert nonce_from_job({"spec": {}}) is None


def test_run_without_uid_is_refused() -> None:
    run = AgentRun.model_validate({"metadata": {"name": "x"}, "spec": {"prompt": "p"}})
    with pytest.raises(ValueError, match="uid"):
        build_job_manifest(run, OperatorSettings(), "n")

"""Pure builders of the objects a run's execution needs: the input Secret and the Job.

Nothing here talks to Kubernetes; :mod:`agentrun_operator.handlers` creates what these return.

The nonce that authenticates the runner's stdout events is random per run and lives in the Job's
pod template (env ``AGENTRUN_NONCE``): the Job is the one place a restarted operator reads it back
from (:func:`nonce_from_job`), and the pod never gets Kubernetes credentials to forge anything.
"""

from __future__ import annotations

import secrets
from typing import Any, Final

from agentrun_contract import names, runner
from agentrun_contract.resource import API_VERSION, KIND, AgentRun

from agentrun_operator.settings import OperatorSettings

RUNNER_UID: Final = 65534
INPUT_VOLUME: Final = "input"
TMP_VOLUME: Final = "tmp"
AGENTS_VOLUME: Final = "agents"

DISRUPTION_TARGET: Final = "DisruptionTarget"
"""Pod condition set by eviction, preemption and node pressure; the Job's podFailurePolicy turns
it into FailJob so a paid agent is never re-run."""


def new_nonce() -> str:
    """A fresh per-run nonce (128 bits, URL-safe)."""
    return secrets.token_urlsafe(16)


def owner_reference(run: AgentRun) -> dict[str, Any]:
    """The AgentRun as controller owner: deleting the run cascades to what it owns."""
    if not run.metadata.uid:
        raise ValueError("the AgentRun has no uid; read it from the API server first")
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": run.metadata.name,
        "uid": run.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def owned_metadata(run: AgentRun, name: str, component: str) -> dict[str, Any]:
    """Metadata for an object owned by ``run``: namespace, labels, controller ownerReference."""
    return {
        "name": name,
        "namespace": run.metadata.namespace,
        "labels": {
            names.LABEL_RUN: run.metadata.name,
            names.LABEL_COMPONENT: component,
            names.LABEL_MANAGED_BY: names.MANAGED_BY,
        },
        "ownerReferences": [owner_reference(run)],
    }


def build_input_secret(run: AgentRun) -> dict[str, Any]:
    """The Secret holding the prompt (and inline agent YAML) as files, owned by the run.

    ``stringData`` keeps the prompt byte-exact (UTF-8) without our own base64.
    """
    data = {runner.PROMPT_KEY: run.spec.prompt}
    if run.spec.agent_yaml is not None:
        data[runner.AGENT_YAML_KEY] = run.spec.agent_yaml
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": owned_metadata(run, names.input_secret_name(run.metadata.name), "input"),
        "type": "Opaque",
        "immutable": True,
        "stringData": data,
    }


def _env(run: AgentRun, settings: OperatorSettings, nonce: str) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": runner.ENV_RUN_ID, "value": names.job_id_for_run_name(run.metadata.name)},
        {"name": runner.ENV_NONCE, "value": nonce},
        {"name": runner.ENV_PROMPT_FILE, "value": runner.PROMPT_PATH},
        {"name": runner.ENV_AGENT_DIR, "value": runner.AGENT_DIR},
        {
            "name": runner.ENV_AGENT_FILE,
            "value": run.spec.agent_file or runner.DEFAULT_AGENT_FILE,
        },
        {"name": runner.ENV_FRAMEWORK, "value": run.spec.framework},
        {"name": runner.ENV_TERMINATION_MESSAGE_PATH, "value": runner.TERMINATION_MESSAGE_PATH},
        {"name": runner.ENV_CREDENTIALS_SECRET, "value": settings.credentials_secret},
        {"name": "TMPDIR", "value": runner.TMP_DIR},
        {"name": "HOME", "value": runner.TMP_DIR},
    ]
    if run.spec.agent_yaml is not None:
        env.append({"name": runner.ENV_AGENT_YAML_FILE, "value": runner.AGENT_YAML_PATH})
    if run.spec.session_id is not None:
        env.append({"name": runner.ENV_SESSION_ID, "value": run.spec.session_id})
    return env


def _pod_failure_policy() -> dict[str, Any]:
    """Eviction (DisruptionTarget) fails the Job at once: never re-run a paid agent.

    Exit codes need no rule: with ``backoffLimit: 0`` any non-zero exit already fails the Job,
    and the operator reads the exit code from the pod to choose the reason. Rules are evaluated
    in order; the first match wins.
    """
    return {"rules": [{"action": "FailJob", "onPodConditions": [{"type": DISRUPTION_TARGET}]}]}


def build_job_manifest(run: AgentRun, settings: OperatorSettings, nonce: str) -> dict[str, Any]:
    """The run's Job (batch/v1), named after and owned by the run.

    ``activeDeadlineSeconds`` is the run's timeout (it counts from the Job's start, so it includes
    scheduling and image pull); ``backoffLimit: 0``; eviction fails the Job; the pod runs as
    non-root on a read-only root with only /tmp writable and mounts no Kubernetes credentials.
    """
    run_name = run.metadata.name
    volumes: list[dict[str, Any]] = [
        {
            "name": INPUT_VOLUME,
            "secret": {"secretName": names.input_secret_name(run_name), "defaultMode": 0o444},
        },
        {"name": TMP_VOLUME, "emptyDir": {}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": INPUT_VOLUME, "mountPath": runner.INPUT_DIR, "readOnly": True},
        {"name": TMP_VOLUME, "mountPath": runner.TMP_DIR},
    ]
    if settings.agent_configmap:
        volumes.append({"name": AGENTS_VOLUME, "configMap": {"name": settings.agent_configmap}})
        mounts.append({"name": AGENTS_VOLUME, "mountPath": runner.AGENT_DIR, "readOnly": True})

    container: dict[str, Any] = {
        "name": runner.CONTAINER_NAME,
        "image": settings.runner_image,
        "imagePullPolicy": settings.runner_image_pull_policy,
        "command": list(settings.runner_command),
        "env": _env(run, settings, nonce),
        "envFrom": [{"secretRef": {"name": settings.credentials_secret}}],
        "resources": settings.runner_resources.model_dump(),
        "volumeMounts": mounts,
        "terminationMessagePath": runner.TERMINATION_MESSAGE_PATH,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUNNER_UID,
            "runAsGroup": RUNNER_UID,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": settings.runner_service_account,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": settings.termination_grace_period_seconds,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUNNER_UID,
            "runAsGroup": RUNNER_UID,
            "fsGroup": RUNNER_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": volumes,
    }
    if settings.node_selector:
        pod_spec["nodeSelector"] = dict(settings.node_selector)
    if settings.tolerations:
        pod_spec["tolerations"] = list(settings.tolerations)
    if settings.affinity:
        pod_spec["affinity"] = dict(settings.affinity)
    if settings.priority_class_name:
        pod_spec["priorityClassName"] = settings.priority_class_name
    if settings.runtime_class_name:
        pod_spec["runtimeClassName"] = settings.runtime_class_name
    if settings.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": n} for n in settings.image_pull_secrets]

    pod_labels = {names.LABEL_RUN: run_name, names.LABEL_COMPONENT: "runner"}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": owned_metadata(run, names.job_name(run_name), "job"),
        "spec": {
            "activeDeadlineSeconds": run.spec.timeout_seconds,
            "backoffLimit": 0,
            "completions": 1,
            "parallelism": 1,
            "podFailurePolicy": _pod_failure_policy(),
            "ttlSecondsAfterFinished": settings.job_ttl_seconds_after_finished,
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": pod_spec,
            },
        },
    }


def nonce_from_job(job: dict[str, Any]) -> str | None:
    """The nonce stored in a Job built by :func:`build_job_manifest` (None if absent)."""
    try:
        containers = job["spec"]["template"]["spec"]["containers"]
    except (KeyError, TypeError):
        return None
    for container in containers:
        for item in container.get("env") or []:
            if item.get("name") == runner.ENV_NONCE:
                value = item.get("value")
                return str(value) if value is not None else None
    return None

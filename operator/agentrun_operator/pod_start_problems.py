"""Why a run's Job cannot start its pod, read from Kubernetes Events: the pure part.

A pod Kubernetes refuses to create leaves no trace on the Job's status (it stays active 0, the
run Queued with no pod); only the Job controller's ``FailedCreate`` Event says why, in
kube-controller-manager's words::

    Error creating: pods "run-abc-" is forbidden: error looking up service account
    ft/agentrun-runner: serviceaccount "agentrun-runner" not found

Likewise the scheduler and the kubelet record ``FailedScheduling``, ``Failed`` (image pull,
container config), ``BackOff`` and ``FailedMount`` on a pending pod before, or instead of, its
status saying so. :func:`start_problem` turns those Events into a contract reason and one
sentence that names the fix; :mod:`agentrun_operator.run_status` uses it when the pod's status
does not explain the wait. It reads plain dicts as the API server returns them (core/v1
Events), so golden files of real Events feed it unchanged.

Reasons: ``cannot_create_pod`` for what the namespace's or the install's configuration refuses
(a missing ServiceAccount, a ResourceQuota, Pod Security, an admission webhook or policy, a
LimitRange, a volume or config the pod needs that does not exist), ``unschedulable`` and
``image_pull`` as the pod's status would say, ``missing_credentials`` for the LLM credentials
Secret.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence
from typing import Any, Final

from agentrun_contract.resource import Reason

Obj = dict[str, Any]

#: The Job controller's Event reasons about creating a pod (controller.FailedCreatePodReason).
FAILED_CREATE: Final = "FailedCreate"
SUCCESSFUL_CREATE: Final = "SuccessfulCreate"

#: Pod Event reasons that say why a pod does not start (scheduler and kubelet).
POD_PROBLEM_REASONS: Final = frozenset(
    {"FailedScheduling", "Failed", "BackOff", "FailedMount", "FailedCreatePodSandBox"}
)

_FORBIDDEN_PREFIX = re.compile(r'^(?:Error creating: )?pods (?:"[^"]*" )?is forbidden: ')
_SERVICE_ACCOUNT = re.compile(r"error looking up service account ([^/\s]+)/([^:\s]+)")
_EXCEEDED_QUOTA = re.compile(
    r"exceeded quota: ([^,]+), requested: (\S+), used: (\S+), limited: (\S+)"
)
_FAILED_QUOTA = re.compile(r"failed quota: ([^:]+): must specify (.+)")
_POD_SECURITY = re.compile(r'violates PodSecurity "([^"]+)": (.+)')
_WEBHOOK = re.compile(r'admission webhook "([^"]+)" denied the request:? ?(.*)')
_POLICY = re.compile(
    r"ValidatingAdmissionPolicy '([^']+)' with binding '[^']*' denied request: (.*)"
)
_LIMIT_RANGE = re.compile(r"(?:maximum|minimum) \S+ usage per (?:Container|Pod) is ")
_MOUNT_VOLUME = re.compile(r'MountVolume\.SetUp failed for volume "([^"]+)" : (.+)')


@dataclasses.dataclass(frozen=True)
class StartContext:
    """What the sentences name: the run's namespace and the install's runner settings."""

    namespace: str
    credentials_secret: str = "agentrun-llm-credentials"


@dataclasses.dataclass(frozen=True)
class StartProblem:
    """Why the pod does not start: a contract reason and the sentence that names the fix."""

    reason: Reason
    message: str
    event_reason: str
    """The Kubernetes Event's reason it was read from (``FailedCreate``, ``FailedMount``...)."""


def event_time(event: Obj) -> str:
    """When the Event last happened (RFC 3339 text sorts in time order, all being UTC)."""
    series = event.get("series") or {}
    for value in (
        series.get("lastObservedTime"),
        event.get("lastTimestamp"),
        event.get("eventTime"),
        event.get("firstTimestamp"),
        (event.get("metadata") or {}).get("creationTimestamp"),
    ):
        if value:
            return str(value)
    return ""


def _newest_first(events: Iterable[Obj]) -> list[Obj]:
    return sorted(events, key=lambda e: (event_time(e), int(e.get("count") or 1)), reverse=True)


def explain_failed_create(message: str, ctx: StartContext) -> StartProblem:
    """The problem a Job's ``FailedCreate`` message describes (always ``cannot_create_pod``)."""
    detail = _FORBIDDEN_PREFIX.sub("", message.strip(), count=1)
    if detail.startswith("Error creating: "):
        detail = detail[len("Error creating: ") :]

    def problem(sentence: str) -> StartProblem:
        return StartProblem(Reason.CANNOT_CREATE_POD, sentence[:4096], FAILED_CREATE)

    if m := _SERVICE_ACCOUNT.search(detail):
        namespace, account = m.group(1), m.group(2)
        return problem(
            f"ServiceAccount {namespace}/{account} not found: install the chart for this "
            f"namespace (it creates the runner's ServiceAccount in every watched namespace) or "
            f"set runner.serviceAccount.name to an existing ServiceAccount"
        )
    if m := _EXCEEDED_QUOTA.search(detail):
        quota, requested, used, limited = m.groups()
        return problem(
            f"ResourceQuota {ctx.namespace}/{quota} is used up (the runner pod requests "
            f"{requested}; used {used} of {limited}): wait for other pods to finish, raise the "
            f"quota, or lower runner.resources (or maxConcurrentRuns)"
        )
    if m := _FAILED_QUOTA.search(detail):
        quota, missing = m.groups()
        return problem(
            f"ResourceQuota {ctx.namespace}/{quota} requires every container to set "
            f"{missing.strip()}: add it to runner.resources"
        )
    if m := _POD_SECURITY.search(detail):
        level, violations = m.groups()
        return problem(
            f'Pod Security "{level}" of namespace {ctx.namespace} refuses the runner pod: '
            f"{violations}; change what it names (the runner settings, or a sidecar an admission "
            f"webhook injects) or the namespace's pod-security.kubernetes.io/enforce label"
        )
    if m := _WEBHOOK.search(detail):
        webhook, why = m.groups()
        because = f": {why}" if why else ""
        return problem(
            f"admission webhook {webhook} refuses the runner pod{because}; ask the cluster's "
            f"administrator to allow it, or change the runner settings it names"
        )
    if m := _POLICY.search(detail):
        policy, why = m.groups()
        return problem(
            f"ValidatingAdmissionPolicy {policy} refuses the runner pod: {why}; ask the "
            f"cluster's administrator to allow it, or change the runner settings it names"
        )
    if _LIMIT_RANGE.search(detail):
        return problem(
            f"a LimitRange of namespace {ctx.namespace} refuses the runner pod: {detail}; "
            f"change runner.resources to fit it"
        )
    return problem(f"Kubernetes cannot create the runner pod: {detail}")


def explain_pod_event(reason: str, message: str, ctx: StartContext) -> StartProblem | None:
    """The problem one pod Event (scheduler, kubelet) describes; None for other Events."""
    text = message.strip()
    if reason == "FailedScheduling":
        return StartProblem(
            Reason.UNSCHEDULABLE,
            f"the runner pod cannot be scheduled: {text}; free capacity, or change "
            f"runner.resources, runner.nodeSelector or runner.tolerations",
            reason,
        )
    pulling = "pull" in text.lower() and "image" in text.lower()
    if reason in ("Failed", "BackOff") and (pulling or "ImagePull" in text):
        return StartProblem(
            Reason.IMAGE_PULL,
            f"cannot pull the runner image: {text}; check runner.image and runner.imagePullSecrets",
            reason,
        )
    if reason == "Failed" and text.startswith("Error: "):
        cause = text[len("Error: ") :]
        if f'"{ctx.credentials_secret}"' in cause:
            return StartProblem(
                Reason.MISSING_CREDENTIALS,
                missing_credentials_message(ctx.credentials_secret),
                reason,
            )
        return StartProblem(
            Reason.CANNOT_CREATE_POD,
            f"the runner container cannot start: {cause}; create what it names in namespace "
            f"{ctx.namespace}",
            reason,
        )
    if reason == "FailedMount":
        m = _MOUNT_VOLUME.search(text)
        volume, cause = (m.group(1), m.group(2)) if m else ("", text)
        if f'"{ctx.credentials_secret}"' in cause:
            return StartProblem(
                Reason.MISSING_CREDENTIALS,
                missing_credentials_message(ctx.credentials_secret),
                reason,
            )
        which = f" {volume}" if volume else ""
        return StartProblem(
            Reason.CANNOT_CREATE_POD,
            f"the runner pod cannot mount volume{which}: {cause}; create what it names in "
            f"namespace {ctx.namespace} (runner.agents names the agent ConfigMap)",
            reason,
        )
    if reason == "FailedCreatePodSandBox":
        return StartProblem(
            Reason.CANNOT_CREATE_POD,
            f"the node cannot start the runner pod's sandbox: {text}; check the node's "
            f"container runtime and network plugin, or runner.runtimeClassName",
            reason,
        )
    return None


def missing_credentials_message(secret: str) -> str:
    """The sentence for a missing LLM credentials Secret."""
    return (
        f"the LLM credentials Secret is missing: create Secret {secret} in the run's namespace "
        f"with MODEL_NAME and the keys of that model's provider, under litellm's names (e.g. "
        f"kubectl create secret generic {secret} --from-literal=OPENAI_API_KEY=..., or "
        f"--from-literal=MODEL_NAME=anthropic/claude-sonnet-4-5 "
        f"--from-literal=ANTHROPIC_API_KEY=...)"
    )


def _is_scheduled(pod: Obj) -> bool:
    if (pod.get("spec") or {}).get("nodeName"):
        return True
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "True":
            return True
    return False


def start_problem(events: Sequence[Obj], pod: Obj | None, ctx: StartContext) -> StartProblem | None:
    """Why the run's pod does not start, from the Events of its Job (``pod`` None: no pod yet)
    or of its pod; None when they do not say.

    Job: the newest of ``FailedCreate``/``SuccessfulCreate`` decides (a pod created after the
    failures ends them). Pod: the newest Warning that still applies (``FailedScheduling`` only
    while the pod is not bound to a node)."""
    if pod is None:
        for event in _newest_first(events):
            if (event.get("involvedObject") or {}).get("kind") not in (None, "Job"):
                continue
            reason = str(event.get("reason") or "")
            if reason == SUCCESSFUL_CREATE:
                return None
            if reason == FAILED_CREATE:
                return explain_failed_create(str(event.get("message") or ""), ctx)
        return None
    scheduled = _is_scheduled(pod)
    for event in _newest_first(events):
        if event.get("type") != "Warning" or event.get("reason") not in POD_PROBLEM_REASONS:
            continue
        if (event.get("involvedObject") or {}).get("kind") not in (None, "Pod"):
            continue
        reason = str(event["reason"])
        if reason == "FailedScheduling" and scheduled:
            continue
        found = explain_pod_event(reason, str(event.get("message") or ""), ctx)
        if found is not None:
            return found
    return None

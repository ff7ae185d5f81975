"""A fake Kubernetes Job controller (batch/v1), as the real one behaves on v1.36, for one pod per Job.

It lists and watches Jobs and Pods over HTTP and reconciles each Job with the pure function
:func:`sync_job`, which unit tests call without a cluster.

What it does, as the real controller does:

- One Pod per Job from ``spec.template`` (``generateName: <job>-``, so ``<job>-<5 random>``), with
  the labels ``batch.kubernetes.io/job-name``, ``job-name``, ``batch.kubernetes.io/controller-uid``,
  ``controller-uid`` and a controlling ownerReference (``blockOwnerDeletion: true``).
- ``status.startTime`` on the first sync; ``active``, ``ready``, ``terminating``, ``succeeded``,
  ``failed``; ``completionTime`` only on success (the real controller never sets it on failure).
- Success: ``SuccessCriteriaMet`` (reason ``CompletionsReached``) then ``Complete`` (same reason),
  ``Complete`` only once no pod is terminating. Both land in one status write when nothing is
  terminating, with ``SuccessCriteriaMet`` first, as on a real cluster.
- Failure: ``FailureTarget`` first, with reason ``BackoffLimitExceeded``, ``DeadlineExceeded`` or
  ``PodFailurePolicy``; the active pods are then deleted (graceful, their own grace period) and
  ``Failed`` (same reason and message) is added only once no pod of the Job is still running or
  terminating. A Job with a ``FailureTarget`` is never resurrected.
- ``activeDeadlineSeconds`` counts from ``status.startTime``.
- ``podFailurePolicy``: rules in order, the first match wins; ``onExitCodes`` (``In``/``NotIn``,
  optional ``containerName``; containers that exited 0 never match) and ``onPodConditions``
  (type + status, default ``True``); actions ``FailJob``, ``Ignore`` (not counted toward
  ``backoffLimit``), ``Count``. Rules are only evaluated for pods in phase ``Failed``.
- ``backoffLimit``: failed (counted) pods > backoffLimit -> ``BackoffLimitExceeded``; below it a
  replacement pod is created after a backoff (a setting; the real one is 10s doubling).
- ``ttlSecondsAfterFinished`` (the TTL-after-finished controller): the finished Job is deleted
  with ``propagationPolicy: Background`` once the TTL has passed since its ``Complete``/``Failed``
  condition.

Pods deleted from under a running Job, and ``podReplacementPolicy``: on v1.36
(JobPodReplacementPolicy is GA since v1.34) the default is ``TerminatingOrFailed`` *unless* the
Job has a ``podFailurePolicy``, in which case only ``Failed`` is allowed and it is the default.
With ``Failed`` (our operator's Jobs), a pod that is being deleted counts as failed only once it
reaches phase ``Failed`` (the kubelet terminates it and reports exit 143 before the object goes);
with ``TerminatingOrFailed``, a pod with a deletionTimestamp counts as failed at once (the
controller's ``isPodFailed``), and a replacement may start while it terminates. With
``backoffLimit: 0`` either way the Job gets ``FailureTarget`` reason ``BackoffLimitExceeded`` and
then ``Failed`` once the pod is gone.

A pod the apiserver refuses (a missing ServiceAccount, a ResourceQuota, Pod Security; see
``apiserver/pod_admission.py``) is a ``FailedCreate`` Warning Event on the Job, worded as
kube-controller-manager's ``RealPodControl`` words it: ``Error creating: <the apiserver's
message>``. The Job's status is still written (``startTime``; ``active`` does not count the
refused pod) and the Job is retried after an exponential backoff (the real workqueue's 1 s
doubling to 60 s; a setting). An identical Event (same Job, reason and message) within 10 minutes
is counted (``count``, ``lastTimestamp``) instead of recorded again, as client-go's event
correlator does; its aggregation of similar Events with different messages is not emulated.

Simplification (documented): the real controller puts the ``batch.kubernetes.io/job-tracking``
finalizer on its pods so it never misses a terminal pod. This one remembers the last state of
every pod it saw instead; a pod that vanishes without being seen terminal counts as failed.
Indexed Jobs, ``parallelism``/``completions`` > 1, suspend, successPolicy and managedBy are not
emulated.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from agentrun_kube.errors import KubeError
from pydantic import BaseModel, Field

from agentrun_devcluster.kube_json import EventRecorder, Informer, JsonKube, Obj

log = logging.getLogger(__name__)

LABEL_JOB_NAME = "batch.kubernetes.io/job-name"
LABEL_JOB_NAME_LEGACY = "job-name"
LABEL_CONTROLLER_UID = "batch.kubernetes.io/controller-uid"
LABEL_CONTROLLER_UID_LEGACY = "controller-uid"

REASON_COMPLETIONS_REACHED = "CompletionsReached"
MESSAGE_COMPLETIONS_REACHED = "Reached expected number of succeeded pods"
REASON_BACKOFF_LIMIT = "BackoffLimitExceeded"
MESSAGE_BACKOFF_LIMIT = "Job has reached the specified backoff limit"
REASON_DEADLINE = "DeadlineExceeded"
MESSAGE_DEADLINE = "Job was active longer than specified deadline"
REASON_POD_FAILURE_POLICY = "PodFailurePolicy"
REASON_FAILED_CREATE = "FailedCreate"  # controller.FailedCreatePodReason
EVENT_SERIES_SECONDS = 600.0  # client-go's event correlator counts repeats within 10 minutes


class JobControllerSettings(BaseModel):
    """Timing of the fake Job controller (tests set them small)."""

    backoff_seconds: float = Field(
        default=1.0,
        description="Delay before a replacement pod after a failure (real: 10s, doubling).",
    )
    resync_seconds: float = Field(
        default=5.0, description="Periodic re-sync of every Job (catches missed events)."
    )
    watch_timeout_seconds: int = Field(
        default=60, description="timeoutSeconds of each watch request before it is renewed."
    )
    events: bool = Field(default=True, description="Post core/v1 Events as the real one does.")
    create_retry_seconds: float = Field(
        default=1.0,
        gt=0,
        description="First retry after a refused pod create, doubling (real: 1s doubling).",
    )
    create_retry_max_seconds: float = Field(
        default=60.0, gt=0, description="Longest retry interval after refused pod creates."
    )
    workers: int = Field(
        default=4,
        ge=1,
        description="Jobs synced concurrently (one Job is never synced twice at once).",
    )


def now_utc() -> datetime:
    return datetime.now(UTC)


def format_time(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------
# Pod from the Job's template


def pod_from_job(job: Obj) -> Obj:
    """The Pod the controller creates for ``job`` (POSTed with generateName)."""
    meta = job["metadata"]
    template = copy.deepcopy(job["spec"]["template"])
    tmeta = template.get("metadata") or {}
    labels = dict(tmeta.get("labels") or {})
    uid = str(meta.get("uid") or "")
    labels.update(
        {
            LABEL_CONTROLLER_UID: uid,
            LABEL_CONTROLLER_UID_LEGACY: uid,
            LABEL_JOB_NAME: meta["name"],
            LABEL_JOB_NAME_LEGACY: meta["name"],
        }
    )
    pod_meta: Obj = {
        "generateName": f"{meta['name']}-",
        "namespace": meta.get("namespace") or "default",
        "labels": labels,
        "ownerReferences": [
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "name": meta["name"],
                "uid": uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ],
    }
    if tmeta.get("annotations"):
        pod_meta["annotations"] = dict(tmeta["annotations"])
    spec = template.get("spec") or {}
    spec.setdefault("restartPolicy", "Never")
    return {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta, "spec": spec}


def is_owned_by(pod: Obj, job: Obj) -> bool:
    uid = job["metadata"].get("uid")
    return any(
        ref.get("uid") == uid and ref.get("controller")
        for ref in pod.get("metadata", {}).get("ownerReferences") or []
    )


# ---------------------------------------------------------------------------------------------
# podFailurePolicy


@dataclass(frozen=True)
class PolicyMatch:
    action: str
    index: int
    message: str


def match_pod_failure_policy(policy: Obj | None, pod: Obj) -> PolicyMatch | None:
    """The first rule of ``policy`` matching the failed ``pod``, as the real controller finds it.

    Only pods in phase Failed are matched. Exit-code rules look at terminated containers (and
    init containers) that exited non-zero; ``containerName`` restricts them to one container.
    """
    if not policy or (pod.get("status") or {}).get("phase") != "Failed":
        return None
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    pod_ref = f"{meta.get('namespace')}/{meta.get('name')}"
    statuses = list(status.get("initContainerStatuses") or []) + list(
        status.get("containerStatuses") or []
    )
    for index, rule in enumerate(policy.get("rules") or []):
        action = str(rule.get("action"))
        on_codes = rule.get("onExitCodes")
        if on_codes:
            operator = on_codes.get("operator")
            values = {int(v) for v in on_codes.get("values") or []}
            only = on_codes.get("containerName")
            for cs in statuses:
                if only and cs.get("name") != only:
                    continue
                term = (cs.get("state") or {}).get("terminated")
                if not term:
                    continue
                code = int(term.get("exitCode", 0))
                if code == 0:
                    continue
                hit = code in values if operator == "In" else code not in values
                if hit:
                    return PolicyMatch(
                        action,
                        index,
                        f"Container {cs.get('name')} for pod {pod_ref} failed with exit code "
                        f"{code} matching {action} rule at index {index}",
                    )
        for pattern in rule.get("onPodConditions") or []:
            want_status = pattern.get("status", "True")
            for cond in status.get("conditions") or []:
                if cond.get("type") == pattern.get("type") and cond.get("status") == want_status:
                    return PolicyMatch(
                        action,
                        index,
                        f"Pod {pod_ref} has condition {cond.get('type')} matching {action} rule "
                        f"at index {index}",
                    )
    return None


# ---------------------------------------------------------------------------------------------
# The sync


@dataclass
class JobTracking:
    """What the controller remembers about one Job's pods (stands in for the tracking finalizer).

    ``last_seen`` holds the newest version of every pod of the Job ever seen; ``counted`` maps a
    pod uid to how it was counted: ``succeeded``, ``failed`` or ``ignored``.
    """

    last_seen: dict[str, Obj] = field(default_factory=dict)
    counted: dict[str, str] = field(default_factory=dict)
    last_failure_at: datetime | None = None


@dataclass
class SyncResult:
    """What to do for one Job."""

    create_pod: Obj | None = None
    delete_pods: list[str] = field(default_factory=list)
    status: Obj | None = None
    """The new status, only when it changed."""
    delete_job: bool = False
    requeue_after: float | None = None


def _pod_uid(pod: Obj) -> str:
    return str(pod.get("metadata", {}).get("uid") or pod.get("metadata", {}).get("name"))


def _has_condition(status: Obj, ctype: str) -> Obj | None:
    for cond in status.get("conditions") or []:
        if cond.get("type") == ctype and cond.get("status") == "True":
            return dict(cond)
    return None


def _condition(ctype: str, reason: str, message: str, now: datetime) -> Obj:
    stamp = format_time(now)
    return {
        "type": ctype,
        "status": "True",
        "lastProbeTime": stamp,
        "lastTransitionTime": stamp,
        "reason": reason,
        "message": message,
    }


def finished_condition(job: Obj) -> Obj | None:
    """The Job's ``Complete`` or ``Failed`` condition, if it has finished."""
    status = job.get("status") or {}
    return _has_condition(status, "Complete") or _has_condition(status, "Failed")


def _is_pod_ready(pod: Obj) -> bool:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def replacement_policy(job: Obj) -> str:
    """``spec.podReplacementPolicy`` with the v1.36 default."""
    spec = job.get("spec") or {}
    explicit = spec.get("podReplacementPolicy")
    if explicit:
        return str(explicit)
    return "Failed" if spec.get("podFailurePolicy") else "TerminatingOrFailed"


def sync_job(
    job: Obj,
    pods: list[Obj],
    tracking: JobTracking,
    now: datetime,
    settings: JobControllerSettings,
) -> SyncResult:
    """Reconcile ``job`` against its current ``pods`` (those it controls). Pure but for
    ``tracking``, which it updates (pods counted, pods seen).
    """
    result = SyncResult()
    spec = job.get("spec") or {}
    old_status: Obj = copy.deepcopy(job.get("status") or {})
    status: Obj = copy.deepcopy(old_status)
    status.setdefault("conditions", [])
    only_failed = replacement_policy(job) == "Failed"
    policy = spec.get("podFailurePolicy")

    finished = finished_condition(job)
    if finished is not None:
        ttl = spec.get("ttlSecondsAfterFinished")
        if ttl is not None:
            at = parse_time(finished.get("lastTransitionTime")) or now
            due = at + timedelta(seconds=int(ttl))
            if now >= due:
                result.delete_job = True
            else:
                result.requeue_after = (due - now).total_seconds()
        # pods of a finished job that are still running (should not happen) are left alone
        return result

    # Remember every pod; pods that vanished are judged by their last state.
    current = {_pod_uid(p): p for p in pods}
    for uid, pod in current.items():
        tracking.last_seen[uid] = pod
    vanished = [uid for uid in tracking.last_seen if uid not in current]

    failure_target = _has_condition(status, "FailureTarget")
    new_failure: PolicyMatch | None = None
    new_failure_reason = ""

    def count(uid: str, pod: Obj, gone: bool) -> None:
        nonlocal new_failure, new_failure_reason
        if uid in tracking.counted:
            return
        phase = (pod.get("status") or {}).get("phase")
        deleting = bool(pod.get("metadata", {}).get("deletionTimestamp"))
        if phase == "Succeeded":
            tracking.counted[uid] = "succeeded"
            return
        failed = phase == "Failed" or gone or (deleting and not only_failed)
        if not failed:
            return
        match = match_pod_failure_policy(policy, pod) if phase == "Failed" else None
        tracking.last_failure_at = now
        if match is not None and match.action == "Ignore":
            tracking.counted[uid] = "ignored"
            return
        tracking.counted[uid] = "failed"
        if match is not None and match.action == "FailJob" and new_failure is None:
            new_failure = match
            new_failure_reason = REASON_POD_FAILURE_POLICY

    for uid, pod in current.items():
        count(uid, pod, gone=False)
    for uid in vanished:
        count(uid, tracking.last_seen[uid], gone=True)

    succeeded = sum(1 for v in tracking.counted.values() if v == "succeeded")
    failed = sum(1 for v in tracking.counted.values() if v == "failed")
    status["succeeded"] = max(succeeded, int(old_status.get("succeeded") or 0))
    status["failed"] = max(failed, int(old_status.get("failed") or 0))

    if not status.get("startTime"):
        status["startTime"] = format_time(now)
    start = parse_time(status["startTime"]) or now

    active = [
        p
        for p in pods
        if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
        and not p["metadata"].get("deletionTimestamp")
    ]
    terminating = [
        p
        for p in pods
        if p["metadata"].get("deletionTimestamp")
        and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
    ]
    # A pod that has failed but whose process is still in its grace period is terminating too.
    terminating_count = len(terminating)

    completions = int(spec.get("completions") or 1)
    success = status["succeeded"] >= completions

    # Decide a failure, in the real controller's order: pod failure policy, backoff, deadline.
    if failure_target is None and not success:
        backoff_limit = int(spec.get("backoffLimit", 6))
        deadline = spec.get("activeDeadlineSeconds")
        if new_failure is not None:
            failure_target = _condition(
                "FailureTarget", new_failure_reason, new_failure.message, now
            )
        elif status["failed"] > backoff_limit:
            failure_target = _condition(
                "FailureTarget", REASON_BACKOFF_LIMIT, MESSAGE_BACKOFF_LIMIT, now
            )
        elif deadline is not None and now >= start + timedelta(seconds=int(deadline)):
            failure_target = _condition("FailureTarget", REASON_DEADLINE, MESSAGE_DEADLINE, now)
        if failure_target is not None:
            status["conditions"].append(failure_target)

    if failure_target is not None:
        # Delete what still runs; Failed only when nothing runs or terminates any more.
        result.delete_pods = [p["metadata"]["name"] for p in active]
        still = len(active) + terminating_count
        if still == 0 and not _has_condition(status, "Failed"):
            status["conditions"].append(
                _condition("Failed", failure_target["reason"], failure_target["message"], now)
            )
            ttl = spec.get("ttlSecondsAfterFinished")
            if ttl is not None:
                result.requeue_after = float(ttl)
        status["active"] = 0
        status["terminating"] = still
        status["ready"] = 0
    elif success:
        if not _has_condition(status, "SuccessCriteriaMet"):
            status["conditions"].append(
                _condition(
                    "SuccessCriteriaMet",
                    REASON_COMPLETIONS_REACHED,
                    MESSAGE_COMPLETIONS_REACHED,
                    now,
                )
            )
        result.delete_pods = [p["metadata"]["name"] for p in active]
        if not active and terminating_count == 0:
            status["conditions"].append(
                _condition("Complete", REASON_COMPLETIONS_REACHED, MESSAGE_COMPLETIONS_REACHED, now)
            )
            status["completionTime"] = format_time(now)
            ttl = spec.get("ttlSecondsAfterFinished")
            if ttl is not None:
                result.requeue_after = float(ttl)
        status["active"] = len(active)
        status["terminating"] = terminating_count
        status["ready"] = sum(1 for p in active if _is_pod_ready(p))
    else:
        # Running: make sure one pod is active (or replace a failed one after the backoff).
        replaceable = terminating_count == 0 if only_failed else True
        if not active and replaceable:
            wait = 0.0
            if tracking.last_failure_at is not None:
                ready_at = tracking.last_failure_at + timedelta(seconds=settings.backoff_seconds)
                wait = max(0.0, (ready_at - now).total_seconds())
            if wait > 0:
                result.requeue_after = wait
            else:
                result.create_pod = pod_from_job(job)
        status["active"] = len(active) + (1 if result.create_pod is not None else 0)
        status["terminating"] = terminating_count
        status["ready"] = sum(1 for p in active if _is_pod_ready(p))
        deadline = spec.get("activeDeadlineSeconds")
        if deadline is not None:
            due = start + timedelta(seconds=int(deadline))
            left = max(0.0, (due - now).total_seconds()) + 0.01
            result.requeue_after = min(result.requeue_after or left, left)

    status.setdefault("uncountedTerminatedPods", {})
    if not status["conditions"]:
        del status["conditions"]
    if status != old_status:
        result.status = status
    return result


# ---------------------------------------------------------------------------------------------
# The controller


def _job_path(ns: str, name: str = "") -> str:
    base = f"/apis/batch/v1/namespaces/{ns}/jobs"
    return f"{base}/{name}" if name else base


class JobController:
    """Runs :func:`sync_job` for every Job on Job and Pod events (and periodically)."""

    def __init__(self, kube: JsonKube, settings: JobControllerSettings | None = None) -> None:
        self.kube = kube
        self.settings = settings or JobControllerSettings()
        self.jobs = Informer(
            kube,
            "/apis/batch/v1/jobs",
            self._on_job,
            watch_timeout_seconds=self.settings.watch_timeout_seconds,
        )
        self.pods = Informer(
            kube,
            "/api/v1/pods",
            self._on_pod,
            watch_timeout_seconds=self.settings.watch_timeout_seconds,
        )
        self.tracking: dict[str, JobTracking] = {}
        self.events = EventRecorder(kube, "job-controller", enabled=self.settings.events)
        self._queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._queued: set[tuple[str, str]] = set()
        self._processing: set[tuple[str, str]] = set()
        self._dirty: set[tuple[str, str]] = set()
        self._timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._tasks: list[asyncio.Task[None]] = []
        # Job uid -> refused pod creates in a row (the retry backoff)
        self._create_failures: dict[str, int] = {}
        # (Job uid, message) -> (Event name, count, first time), for counting repeats
        self._failed_create_events: dict[tuple[str, str], tuple[str, int, datetime]] = {}

    async def start(self) -> None:
        self.pods.start()
        self.jobs.start()
        await asyncio.wait_for(self.pods.synced.wait(), 30)
        await asyncio.wait_for(self.jobs.synced.wait(), 30)
        self._tasks = [
            asyncio.create_task(self._worker(), name=f"job controller {i}")
            for i in range(self.settings.workers)
        ]
        self._tasks.append(asyncio.create_task(self._resync(), name="job controller resync"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for timer in self._timers.values():
            timer.cancel()
        await self.events.flush()
        await self.jobs.stop()
        await self.pods.stop()

    def enqueue(self, key: tuple[str, str]) -> None:
        """Queue ``key`` once; a key being synced is re-queued when that sync ends."""
        if key in self._processing:
            self._dirty.add(key)
            return
        if key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    def enqueue_after(self, key: tuple[str, str], seconds: float) -> None:
        old = self._timers.pop(key, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        self._timers[key] = loop.call_later(seconds, self.enqueue, key)

    def _on_job(self, kind: str, job: Obj) -> None:
        meta = job.get("metadata") or {}
        if kind == "DELETED":
            uid = str(meta.get("uid"))
            self.tracking.pop(uid, None)
            self._create_failures.pop(uid, None)
            for key in [k for k in self._failed_create_events if k[0] == uid]:
                del self._failed_create_events[key]
            return
        self.enqueue((str(meta.get("namespace")), str(meta.get("name"))))

    def _on_pod(self, kind: str, pod: Obj) -> None:
        meta = pod.get("metadata") or {}
        for ref in meta.get("ownerReferences") or []:
            if ref.get("kind") == "Job" and ref.get("controller"):
                self.enqueue((str(meta.get("namespace")), str(ref.get("name"))))

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(self.settings.resync_seconds)
            for key in list(self.jobs.cache):
                self.enqueue(key)

    async def _worker(self) -> None:
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            self._processing.add(key)
            try:
                await self._sync(key)
            except Exception as exc:
                log.warning("job sync %s/%s failed: %s; retrying", key[0], key[1], exc)
                self.enqueue_after(key, 0.5)
            finally:
                self._processing.discard(key)
                if key in self._dirty:
                    self._dirty.discard(key)
                    self.enqueue(key)

    def pods_of(self, job: Obj) -> list[Obj]:
        ns = job["metadata"].get("namespace")
        return [p for (pns, _), p in self.pods.cache.items() if pns == ns and is_owned_by(p, job)]

    def _emit_transitions(self, job: Obj, status: Obj) -> None:
        """The real controller's Events for a newly reached FailureTarget or Complete."""
        before = job.get("status") or {}
        if _has_condition(status, "FailureTarget") and not _has_condition(before, "FailureTarget"):
            cond = _has_condition(status, "FailureTarget") or {}
            self.events.emit(job, str(cond.get("reason")), str(cond.get("message")), warning=True)
        if _has_condition(status, "Complete") and not _has_condition(before, "Complete"):
            self.events.emit(job, "Completed", "Job completed")

    async def _sync(self, key: tuple[str, str]) -> None:
        job = self.jobs.cache.get(key)
        if job is None:
            return
        ns, name = key
        uid = str(job["metadata"].get("uid"))
        tracking = self.tracking.setdefault(uid, JobTracking())
        result = sync_job(job, self.pods_of(job), tracking, now_utc(), self.settings)
        if result.delete_job:
            log.info("ttl: deleting finished job %s/%s", ns, name)
            await self.kube.delete(_job_path(ns, name), propagationPolicy="Background")
            return
        job = {"apiVersion": "batch/v1", "kind": "Job", **job}
        refused = False
        if result.create_pod is not None:
            try:
                pod = await self.kube.create(f"/api/v1/namespaces/{ns}/pods", result.create_pod)
            except KubeError as exc:
                refused = True
                await self._failed_create(job, f"Error creating: {exc.message}")
                if result.status is not None:
                    result.status["active"] = max(0, int(result.status.get("active") or 1) - 1)
                    if result.status == (job.get("status") or {}):
                        result.status = None  # a retry that changes nothing writes nothing
            else:
                self._create_failures.pop(uid, None)
                # cache it at once so a quick re-sync never creates a second pod
                self.pods.cache[(ns, pod["metadata"]["name"])] = pod
                tracking.last_seen[_pod_uid(pod)] = pod
                self.events.emit(job, "SuccessfulCreate", f"Created pod: {pod['metadata']['name']}")
        for pod_name in result.delete_pods:
            await self.kube.delete(f"/api/v1/namespaces/{ns}/pods/{pod_name}")
            self.events.emit(job, "SuccessfulDelete", f"Deleted pod: {pod_name}")
        if result.status is not None:
            updated = await self.kube.merge_patch(
                f"{_job_path(ns, name)}/status", {"status": result.status}
            )
            self.jobs.cache[key] = updated
            self._emit_transitions(job, result.status)
        if refused:
            failures = self._create_failures.get(uid, 0) + 1
            self._create_failures[uid] = failures
            retry = min(
                self.settings.create_retry_seconds * 2 ** (failures - 1),
                self.settings.create_retry_max_seconds,
            )
            result.requeue_after = min(result.requeue_after or retry, retry)
        if result.requeue_after is not None:
            self.enqueue_after(key, result.requeue_after)

    async def _failed_create(self, job: Obj, message: str) -> None:
        """The FailedCreate Warning Event; a repeat within 10 minutes is counted on the Event
        already recorded (``count``, ``lastTimestamp``), as client-go's correlator does."""
        if not self.settings.events:
            return
        meta = job.get("metadata") or {}
        ns = str(meta.get("namespace") or "default")
        uid = str(meta.get("uid") or "")
        now = now_utc()
        seen = self._failed_create_events.get((uid, message))
        if seen is not None and (now - seen[2]).total_seconds() < EVENT_SERIES_SECONDS:
            name, count, first = seen
            try:
                await self.kube.merge_patch(
                    f"/api/v1/namespaces/{ns}/events/{name}",
                    {"count": count + 1, "lastTimestamp": format_time(now)},
                )
                self._failed_create_events[(uid, message)] = (name, count + 1, first)
                return
            except KubeError:
                pass  # gone (or refused): record a new one
        stamp = format_time(now)
        name = f"{meta.get('name')}.{secrets.token_hex(8)}"
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": ns},
            "involvedObject": {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "name": meta.get("name"),
                "namespace": ns,
                "uid": uid,
                "resourceVersion": meta.get("resourceVersion"),
            },
            "reason": REASON_FAILED_CREATE,
            "message": message,
            "type": "Warning",
            "source": {"component": "job-controller"},
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "eventTime": None,
            "count": 1,
            "reportingComponent": "job-controller",
            "reportingInstance": "",
        }
        try:
            await self.kube.create(f"/api/v1/namespaces/{ns}/events", event)
        except KubeError as exc:
            log.debug("FailedCreate event for %s not recorded: %s", meta.get("name"), exc)
            return
        self._failed_create_events[(uid, message)] = (name, 1, now)

"""A fake kubelet (plus scheduler) for one node: runs each pod's container as a local subprocess.

Per pod, as a real node does (the pure steps are module functions that unit tests call):

1. Scheduling: sets ``spec.nodeName`` (a merge patch stands in for the binding) and
   ``PodScheduled=True``; with the ``unschedulable`` fault: ``PodScheduled=False`` reason
   ``Unschedulable`` and the scheduler's message, re-tried until the fault is gone.
2. Volumes: ``secret``, ``configMap`` (``items``, ``optional``) and ``emptyDir``, each mount a fresh
   directory under the kubelet's state dir. Secret/ConfigMap files are projected as the kubelet
   does (a ``..<timestamp>`` dir, a ``..data`` symlink to it, one symlink per key). A missing
   Secret/ConfigMap volume keeps the container in ``ContainerCreating`` (real: a FailedMount event)
   and is retried. Mounts at a path of ``image_filesystem`` (dev: ``/agents``) default to that
   host directory, as if the image held it, unless a volume is mounted there.
3. Env: ``envFrom`` (secretRef/configMapRef, ``prefix``, ``optional``) then ``env`` (``value`` with
   ``$(VAR)`` expansion, ``secretKeyRef``, ``configMapKeyRef``, ``fieldRef`` metadata.name/
   namespace/uid, spec.nodeName, status.podIP). A missing Secret/ConfigMap or key that is not
   optional: waiting reason ``CreateContainerConfigError`` with the real message (``secret "x"
   not found``, ``couldn't find key k in Secret ns/x``), re-tried every ``config_retry_seconds``.
   Values starting with a container mount path are rewritten to the host path; an emptyDir at
   /tmp sets ``TMPDIR``; the container's terminationMessagePath is a host file, exported as
   ``AGENTRUN_TERMINATION_MESSAGE_PATH``. The host environment is NOT inherited, except
   ``passthrough_env`` (PATH, locale, Python paths) - a container sees only its own env.
4. Run: ``command`` + ``args`` (``$(VAR)`` expanded) via ``asyncio.create_subprocess_exec`` in a new
   session; ``python``/``python3`` mean this interpreter and other bare names are looked up next
   to it first (the "image" is this Python environment). A missing executable terminates the
   container with reason ``StartError``, exit 128, as containerd does.
5. Logs: stdout and stderr lines with RFC3339Nano timestamps, kept in memory (bounded) until the
   pod object is deleted, served through the apiserver's PodLogProvider hook.
6. Status: phase Pending -> Running -> Succeeded/Failed, containerStatuses (waiting/running/
   terminated: exitCode, reason Completed/Error/OOMKilled, message, startedAt/finishedAt),
   conditions PodReadyToStartContainers, Initialized, Ready, ContainersReady, PodScheduled;
   termination message from the file, or with ``FallbackToLogsOnError`` and a non-zero exit and
   an empty file, the last 80 lines / 2048 bytes of the log.
7. Deletion (deletionTimestamp): SIGTERM to the container's main process (as the runtime signals
   PID 1), SIGKILL to its whole process group after ``deletionGracePeriodSeconds``, then the final
   status (phase Failed unless it exited 0) and ``DELETE`` with ``gracePeriodSeconds=0``. When
   the main process exits, any process it left in its group is SIGKILLed (container teardown).

Not emulated: securityContext (processes run as the current user), resources/limits, probes,
init containers, restartPolicy other than Never, more than one container (only the first runs;
the others are reported as never started).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import re
import shutil
import signal
import sys
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agentrun_contract.runner import ENV_TERMINATION_MESSAGE_PATH
from agentrun_kube.errors import KubeError
from pydantic import BaseModel, Field

from agentrun_devcluster.faults import Fault, FaultInjector
from agentrun_devcluster.kube_json import EventRecorder, Informer, JsonKube, Obj

log = logging.getLogger(__name__)

NODE_NAME = "agentrun-dev-node"
POD_IP = "127.0.0.1"
FALLBACK_LOG_LINES = 80
FALLBACK_LOG_BYTES = 2048
TERMINATION_MESSAGE_MAX_BYTES = 4096
UNSCHEDULABLE_MESSAGE = (
    "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. "
    "preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling."
)


class KubeletSettings(BaseModel):
    """The fake node's behaviour (tests set the intervals small)."""

    node_name: str = Field(default=NODE_NAME, description="The one node's name.")
    state_dir: Path = Field(
        default=Path(".agentrun-dev/kubelet"),
        description="Pod scratch space: volumes, termination message files.",
    )
    image_filesystem: dict[str, str] = Field(
        default_factory=dict,
        description="Container path -> host directory, as if the image held it (e.g. /agents).",
    )
    config_retry_seconds: float = Field(
        default=2.0, description="Retry interval for a missing Secret/ConfigMap (env or volume)."
    )
    image_pull_retry_seconds: float = Field(
        default=2.0, description="Interval between ErrImagePull and ImagePullBackOff reports."
    )
    schedule_retry_seconds: float = Field(
        default=1.0, description="Re-check interval for pods held unschedulable by a fault."
    )
    fault_poll_seconds: float = Field(
        default=0.25, description="How often a running pod checks for evict/oom_kill faults."
    )
    log_max_bytes: int = Field(
        default=8 * 1024 * 1024, description="Log bytes kept per container (oldest dropped)."
    )
    watch_timeout_seconds: int = Field(
        default=60, description="timeoutSeconds of each pod watch request before it is renewed."
    )
    events: bool = Field(default=True, description="Post core/v1 Events as a real node does.")
    default_grace_seconds: int = Field(
        default=30, description="Grace period when a deleted pod carries none."
    )
    passthrough_env: list[str] = Field(
        default_factory=lambda: [
            "PATH",
            "LANG",
            "LC_ALL",
            "PYTHONPATH",
            "VIRTUAL_ENV",
            "PYENV_VERSION",
            "SYSTEMROOT",
        ],
        description="Host env vars a container inherits (the 'image' is this Python env).",
    )
    python_executable: str = Field(
        default=sys.executable, description="What `python`/`python3` in a command mean."
    )


# ---------------------------------------------------------------------------------------------
# Child processes die with the node

PR_SET_PDEATHSIG = 1


def _load_prctl() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()  # resolved in the parent: the child only calls it


def die_with_parent() -> None:
    """preexec_fn: SIGKILL this child when the process (thread) that started it dies, so a
    crashed ``agentrun dev`` or test run leaves no container process behind (Linux only)."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGKILL)


# ---------------------------------------------------------------------------------------------
# Time


def rfc3339(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_nano(t: datetime) -> str:
    """RFC3339NanoFixed, as the kubelet prefixes log lines (``timestamps=true``)."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


# ---------------------------------------------------------------------------------------------
# Pod logs


@dataclass
class ContainerLog:
    """One container's log lines (each ending in a newline), bounded by ``max_bytes``."""

    max_bytes: int
    lines: deque[tuple[datetime, bytes]] = field(default_factory=deque)
    size: int = 0
    dropped: int = 0
    """Lines dropped from the front by the bound (absolute index of ``lines[0]``)."""
    started: bool = False
    finished: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def append(self, line: bytes, at: datetime | None = None) -> None:
        if not line.endswith(b"\n"):
            line += b"\n"
        self.lines.append((at or datetime.now(UTC), line))
        self.size += len(line)
        while self.size > self.max_bytes and len(self.lines) > 1:
            _, old = self.lines.popleft()
            self.size -= len(old)
            self.dropped += 1
        self._wake()

    def finish(self) -> None:
        self.finished = True
        self._wake()

    def _wake(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    def text_tail(self, max_lines: int, max_bytes: int) -> str:
        """The last ``max_lines`` lines, at most ``max_bytes`` (Kubernetes' log fallback)."""
        picked = [line for _, line in list(self.lines)[-max_lines:]]
        data = b"".join(picked)
        if len(data) > max_bytes:
            data = data[-max_bytes:]
        return data.decode("utf-8", errors="replace")


def render_line(at: datetime, line: bytes, timestamps: bool) -> bytes:
    if timestamps:
        return rfc3339_nano(at).encode() + b" " + line
    return line


class PodLogStore:
    """Every container log of the node; implements the apiserver's PodLogProvider."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._logs: dict[tuple[str, str, str], ContainerLog] = {}

    def open(self, namespace: str, pod: str, container: str) -> ContainerLog:
        key = (namespace, pod, container)
        if key not in self._logs:
            self._logs[key] = ContainerLog(self.max_bytes)
        return self._logs[key]

    def get(self, namespace: str, pod: str, container: str | None) -> ContainerLog | None:
        if container is not None:
            return self._logs.get((namespace, pod, container))
        for (ns, name, _), clog in self._logs.items():
            if ns == namespace and name == pod:
                return clog
        return None

    def drop_pod(self, namespace: str, pod: str) -> None:
        for key in [k for k in self._logs if k[0] == namespace and k[1] == pod]:
            clog = self._logs.pop(key)
            clog.finish()

    async def read_log(
        self,
        namespace: str,
        pod: str,
        container: str | None,
        *,
        follow: bool,
        since_time: datetime | None,
        tail_lines: int | None,
        timestamps: bool,
    ) -> AsyncIterator[bytes]:
        """The log as the kubelet serves it: tail first, then sinceTime, then follow."""
        clog = self.get(namespace, pod, container)
        if clog is None:
            return
        end = clog.dropped + len(clog.lines)
        next_index = clog.dropped
        if tail_lines is not None:
            next_index = max(clog.dropped, end - max(0, tail_lines))
        while True:
            waiter = clog.changed
            while next_index < clog.dropped + len(clog.lines):
                position = max(next_index, clog.dropped) - clog.dropped
                at, line = clog.lines[position]
                next_index = clog.dropped + position + 1
                if since_time is None or at >= since_time:
                    yield render_line(at, line, timestamps)
            if not follow or clog.finished:
                return
            await waiter.wait()


# ---------------------------------------------------------------------------------------------
# Env, volumes, commands (pure)


class ContainerConfigError(Exception):
    """The container cannot be created yet (reason CreateContainerConfigError)."""


class VolumeNotReady(Exception):
    """A volume's Secret/ConfigMap is missing (container stays ContainerCreating)."""


def referenced_objects(pod: Obj) -> set[tuple[str, str]]:
    """The (kind, name) of every Secret/ConfigMap the pod's first container or volumes use."""
    refs: set[tuple[str, str]] = set()
    container = first_container(pod)
    for src in container.get("envFrom") or []:
        if src.get("secretRef"):
            refs.add(("Secret", src["secretRef"]["name"]))
        if src.get("configMapRef"):
            refs.add(("ConfigMap", src["configMapRef"]["name"]))
    for var in container.get("env") or []:
        vf = var.get("valueFrom") or {}
        if vf.get("secretKeyRef"):
            refs.add(("Secret", vf["secretKeyRef"]["name"]))
        if vf.get("configMapKeyRef"):
            refs.add(("ConfigMap", vf["configMapKeyRef"]["name"]))
    for vol in (pod.get("spec") or {}).get("volumes") or []:
        if vol.get("secret"):
            refs.add(("Secret", vol["secret"]["secretName"]))
        if vol.get("configMap"):
            refs.add(("ConfigMap", vol["configMap"]["name"]))
    return refs


def object_data(obj: Obj) -> dict[str, bytes]:
    """A Secret's (base64 ``data`` + ``stringData``) or ConfigMap's data, as bytes."""
    out: dict[str, bytes] = {}
    if obj.get("kind") == "Secret" or "type" in obj:
        for k, v in (obj.get("data") or {}).items():
            out[k] = base64.b64decode(v or "")
        for k, v in (obj.get("stringData") or {}).items():
            out[k] = str(v).encode()
    else:
        for k, v in (obj.get("data") or {}).items():
            out[k] = str(v).encode()
        for k, v in (obj.get("binaryData") or {}).items():
            out[k] = base64.b64decode(v or "")
    return out


_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_VAR_REF = re.compile(r"\$\$|\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)")


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: known vars are replaced, ``$$`` is a literal ``$``."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env[name] if name in env else m.group(0)

    return _VAR_REF.sub(sub, value)


def _missing(kind: str, namespace: str, name: str, key: str | None) -> str:
    if key is None:
        return f'{kind.lower()} "{name}" not found'
    return f"couldn't find key {key} in {kind} {namespace}/{name}"


def resolve_env(pod: Obj, objects: dict[tuple[str, str], Obj | None]) -> dict[str, str]:
    """The container's environment (before path rewriting), as the kubelet builds it.

    Raises ContainerConfigError with the kubelet's message when a non-optional Secret,
    ConfigMap or key is missing.
    """
    container = first_container(pod)
    meta = pod.get("metadata") or {}
    namespace = str(meta.get("namespace") or "default")
    env: dict[str, str] = {}
    for src in container.get("envFrom") or []:
        prefix = str(src.get("prefix") or "")
        for kind, ref_key in (("Secret", "secretRef"), ("ConfigMap", "configMapRef")):
            ref = src.get(ref_key)
            if not ref:
                continue
            obj = objects.get((kind, ref["name"]))
            if obj is None:
                if ref.get("optional"):
                    continue
                raise ContainerConfigError(_missing(kind, namespace, ref["name"], None))
            for k, v in object_data(obj).items():
                name = prefix + k
                if _ENV_NAME.match(name):
                    env[name] = v.decode("utf-8", errors="replace")
    for var in container.get("env") or []:
        name = var["name"]
        if "value" in var:
            env[name] = expand(str(var.get("value") or ""), env)
            continue
        vf = var.get("valueFrom") or {}
        if not vf:
            env[name] = ""
            continue
        for kind, ref_key in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
            ref = vf.get(ref_key)
            if not ref:
                continue
            obj = objects.get((kind, ref["name"]))
            if obj is None:
                if ref.get("optional"):
                    break
                raise ContainerConfigError(_missing(kind, namespace, ref["name"], None))
            data = object_data(obj)
            if ref["key"] not in data:
                if ref.get("optional"):
                    break
                raise ContainerConfigError(_missing(kind, namespace, ref["name"], ref["key"]))
            env[name] = data[ref["key"]].decode("utf-8", errors="replace")
        fref = vf.get("fieldRef")
        if fref:
            env[name] = _field_value(pod, str(fref.get("fieldPath")))
    return env


def _field_value(pod: Obj, path: str) -> str:
    meta = pod.get("metadata") or {}
    m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if m:
        return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
    values = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": (pod.get("spec") or {}).get("nodeName"),
        "spec.serviceAccountName": (pod.get("spec") or {}).get("serviceAccountName"),
        "status.podIP": POD_IP,
        "status.hostIP": POD_IP,
    }
    return str(values.get(path) or "")


def first_container(pod: Obj) -> Obj:
    containers = (pod.get("spec") or {}).get("containers") or [{}]
    result: Obj = containers[0]
    return result


@dataclass
class MountPlan:
    """Container path -> host directory (or file, for the termination message)."""

    mounts: dict[str, Path] = field(default_factory=dict)
    termination_file: Path | None = None
    tmpdir: Path | None = None
    workdir: Path | None = None


def _project(target: Path, files: dict[str, bytes], modes: dict[str, int]) -> None:
    """Write ``files`` as the kubelet's atomic writer does: ..<ts>/, ..data -> it, key links."""
    target.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("..%Y_%m_%d_%H_%M_%S.%f")
    data_dir = target / stamp
    data_dir.mkdir()
    for rel, content in files.items():
        path = data_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        path.chmod(modes.get(rel, 0o644))
    (target / "..data").symlink_to(stamp)
    for rel in {r.split("/", 1)[0] for r in files}:
        (target / rel).symlink_to(Path("..data") / rel)


def plan_mounts(
    pod: Obj,
    objects: dict[tuple[str, str], Obj | None],
    pod_dir: Path,
    image_filesystem: dict[str, str],
) -> MountPlan:
    """Create the pod's volumes under ``pod_dir`` and map the container's mounts to them.

    Raises VolumeNotReady when a non-optional Secret/ConfigMap (or item key) is missing.
    """
    spec = pod.get("spec") or {}
    container = first_container(pod)
    meta = pod.get("metadata") or {}
    namespace = str(meta.get("namespace") or "default")
    volumes = {v["name"]: v for v in spec.get("volumes") or []}
    plan = MountPlan()
    vol_dirs: dict[str, Path] = {}
    for name, vol in volumes.items():
        vdir = pod_dir / "volumes" / name
        for kind, key, ref_name_key in (
            ("Secret", "secret", "secretName"),
            ("ConfigMap", "configMap", "name"),
        ):
            src = vol.get(key)
            if src is None:
                continue
            obj = objects.get((kind, src[ref_name_key]))
            files: dict[str, bytes] = {}
            modes: dict[str, int] = {}
            default_mode = int(src.get("defaultMode", 0o644))
            if obj is None:
                if not src.get("optional"):
                    raise VolumeNotReady(
                        f'MountVolume.SetUp failed for volume "{name}" : '
                        + _missing(kind, namespace, src[ref_name_key], None)
                    )
            else:
                data = object_data(obj)
                items = src.get("items")
                if items:
                    for item in items:
                        if item["key"] not in data:
                            if src.get("optional"):
                                continue
                            raise VolumeNotReady(
                                f'MountVolume.SetUp failed for volume "{name}" : configmap '
                                f"references non-existent config key: {item['key']}"
                                if kind == "ConfigMap"
                                else f'MountVolume.SetUp failed for volume "{name}" : '
                                f"references non-existent secret key: {item['key']}"
                            )
                        files[item["path"]] = data[item["key"]]
                        modes[item["path"]] = int(item.get("mode", default_mode))
                else:
                    files = data
                    modes = dict.fromkeys(data, default_mode)
            if vdir.exists():
                shutil.rmtree(vdir)
            _project(vdir, files, modes)
        if "emptyDir" in vol:
            vdir.mkdir(parents=True, exist_ok=True)
        vol_dirs[name] = vdir
    for mount in container.get("volumeMounts") or []:
        vdir = vol_dirs.get(mount["name"])
        if vdir is None:
            continue
        host = vdir / mount["subPath"] if mount.get("subPath") else vdir
        plan.mounts[mount["mountPath"].rstrip("/") or "/"] = host
        if (
            "emptyDir" in volumes.get(mount["name"], {})
            and mount["mountPath"].rstrip("/") == "/tmp"
        ):
            plan.tmpdir = host
    for cpath, hpath in image_filesystem.items():
        plan.mounts.setdefault(cpath.rstrip("/"), Path(hpath))
    term_path = container.get("terminationMessagePath") or "/dev/termination-log"
    plan.termination_file = pod_dir / "termination-log"
    plan.termination_file.parent.mkdir(parents=True, exist_ok=True)
    plan.termination_file.write_bytes(b"")
    plan.mounts.setdefault(term_path, plan.termination_file)
    workdir = container.get("workingDir")
    plan.workdir = map_path(workdir, plan.mounts) if workdir else None
    if plan.workdir is None or not Path(plan.workdir).is_dir():
        plan.workdir = pod_dir / "rootfs"
        plan.workdir.mkdir(parents=True, exist_ok=True)
    return plan


def map_path(value: str, mounts: dict[str, Path]) -> Path | None:
    """The host path for a container path under one of ``mounts`` (longest mount wins)."""
    for cpath in sorted(mounts, key=len, reverse=True):
        if value == cpath or value.startswith(cpath + "/"):
            return Path(str(mounts[cpath]) + value[len(cpath) :])
    return None


def host_env(env: dict[str, str], plan: MountPlan, passthrough: dict[str, str]) -> dict[str, str]:
    """The process environment: host passthrough, then the container env with paths mapped."""
    out = dict(passthrough)
    for name, value in env.items():
        mapped = map_path(value, plan.mounts) if value.startswith("/") else None
        out[name] = str(mapped) if mapped is not None else value
    if plan.tmpdir is not None:
        out["TMPDIR"] = str(plan.tmpdir)
    if plan.termination_file is not None:
        out[ENV_TERMINATION_MESSAGE_PATH] = str(plan.termination_file)
    return out


def resolve_argv(container: Obj, env: dict[str, str], settings: KubeletSettings) -> list[str]:
    """``command`` + ``args`` with ``$(VAR)`` expanded and the executable found on this host."""
    argv = [expand(str(a), env) for a in (container.get("command") or [])]
    argv += [expand(str(a), env) for a in (container.get("args") or [])]
    if not argv:
        raise FileNotFoundError("no command: the emulated node has no image entrypoint")
    exe = argv[0]
    if exe in ("python", "python3"):
        argv[0] = settings.python_executable
    elif "/" not in exe:
        beside = Path(settings.python_executable).parent / exe
        if beside.exists():
            argv[0] = str(beside)
        else:
            found = shutil.which(exe, path=env.get("PATH"))
            if found is None:
                raise FileNotFoundError(
                    f'exec: "{exe}": executable file not found in $PATH: unknown'
                )
            argv[0] = found
    return argv


def termination_message(policy: str | None, file_text: str, exit_code: int, log_tail: str) -> str:
    """The container's termination message as the kubelet reports it."""
    text = file_text.encode()[:TERMINATION_MESSAGE_MAX_BYTES].decode("utf-8", errors="ignore")
    if text or policy != "FallbackToLogsOnError" or exit_code == 0:
        return text
    return log_tail


def signal_exit_code(returncode: int) -> int:
    """A container's exit code: 128 + signal for a signal death."""
    return 128 - returncode if returncode < 0 else returncode


# ---------------------------------------------------------------------------------------------
# Pod status builders (pure)


def _cond(
    ctype: str, ok: bool, now: str, reason: str | None = None, message: str | None = None
) -> Obj:
    c: Obj = {
        "type": ctype,
        "status": "True" if ok else "False",
        "lastProbeTime": None,
        "lastTransitionTime": now,
    }
    if reason:
        c["reason"] = reason
    if message:
        c["message"] = message
    return c


def merge_conditions(old: list[Obj], new: list[Obj]) -> list[Obj]:
    """``new`` conditions replacing same-typed ones, keeping lastTransitionTime when unchanged."""
    by_type = {c["type"]: c for c in old}
    out = [c for c in old if c["type"] not in {n["type"] for n in new}]
    for c in new:
        prev = by_type.get(c["type"])
        if prev is not None and prev.get("status") == c.get("status"):
            c = {**c, "lastTransitionTime": prev.get("lastTransitionTime")}
        out.append(c)
    order = [
        "DisruptionTarget",
        "PodReadyToStartContainers",
        "Initialized",
        "Ready",
        "ContainersReady",
        "PodScheduled",
    ]
    out.sort(key=lambda c: order.index(c["type"]) if c["type"] in order else len(order))
    return out


def container_status(container: Obj, state: Obj, *, ready: bool, started: bool) -> Obj:
    return {
        "name": container.get("name", "main"),
        "image": container.get("image", ""),
        "imageID": "",
        "containerID": "",
        "ready": ready,
        "started": started,
        "restartCount": 0,
        "state": state,
        "lastState": {},
    }


# ---------------------------------------------------------------------------------------------
# The kubelet


def _pod_path(ns: str, name: str) -> str:
    return f"/api/v1/namespaces/{ns}/pods/{name}"


def _pod_ref(pod: Obj) -> Obj:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": pod.get("metadata") or {}}


class Kubelet:
    """Schedules pending pods onto its node and runs them (one task per pod)."""

    def __init__(
        self,
        kube: JsonKube,
        settings: KubeletSettings | None = None,
        faults: FaultInjector | None = None,
        logs: PodLogStore | None = None,
    ) -> None:
        self.kube = kube
        self.settings = settings or KubeletSettings()
        self.faults = faults or FaultInjector()
        self.logs = logs or PodLogStore(self.settings.log_max_bytes)
        self.pods = Informer(
            kube,
            "/api/v1/pods",
            self._on_pod,
            watch_timeout_seconds=self.settings.watch_timeout_seconds,
        )
        self.workers: dict[str, PodWorker] = {}
        self.events = EventRecorder(
            kube, "kubelet", self.settings.node_name, enabled=self.settings.events
        )
        self.scheduler_events = EventRecorder(
            kube, "default-scheduler", enabled=self.settings.events
        )
        self._schedulers: dict[str, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        self.pods.start()
        await asyncio.wait_for(self.pods.synced.wait(), 30)

    async def stop(self) -> None:
        """Stop watching and kill every container (SIGKILL), as a node that is switched off."""
        await self.pods.stop()
        for task in self._schedulers.values():
            task.cancel()
        workers = list(self.workers.values())
        for worker in workers:
            worker.kill_now()
        for worker in workers:
            await worker.cancel()
        self.workers.clear()
        await self.events.flush()
        await self.scheduler_events.flush()

    def running_pids(self) -> list[int]:
        return [
            w.process.pid
            for w in self.workers.values()
            if w.process is not None and w.process.returncode is None
        ]

    def _on_pod(self, kind: str, pod: Obj) -> None:
        meta = pod.get("metadata") or {}
        uid = str(meta.get("uid"))
        ns, name = str(meta.get("namespace")), str(meta.get("name"))
        if kind == "DELETED":
            sched = self._schedulers.pop(uid, None)
            if sched is not None:
                sched.cancel()
            worker = self.workers.get(uid)
            if worker is not None:
                worker.object_gone()
            else:
                self.logs.drop_pod(ns, name)
            return
        node = (pod.get("spec") or {}).get("nodeName")
        if not node:
            if meta.get("deletionTimestamp") or uid in self._schedulers:
                return
            self._schedulers[uid] = asyncio.create_task(self._schedule(pod), name=f"sched {name}")
            return
        if node != self.settings.node_name:
            return
        worker = self.workers.get(uid)
        if worker is None:
            phase = (pod.get("status") or {}).get("phase")
            if phase in ("Succeeded", "Failed"):
                # finished before we (re)started: only finish a pending deletion
                if meta.get("deletionTimestamp"):
                    task = asyncio.create_task(self._force_delete(ns, name))
                    self._background.add(task)
                    task.add_done_callback(self._background.discard)
                return
            worker = PodWorker(self, pod)
            self.workers[uid] = worker
            worker.start()
        else:
            worker.update(pod)

    async def _force_delete(self, ns: str, name: str) -> None:
        with contextlib.suppress(KubeError):
            await self.kube.delete(_pod_path(ns, name), gracePeriodSeconds=0)

    async def _schedule(self, pod: Obj) -> None:
        meta = pod["metadata"]
        ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
        reported = False
        try:
            while self.faults.find(meta.get("labels"), Fault.UNSCHEDULABLE) is not None:
                if not reported:
                    now = rfc3339(datetime.now(UTC))
                    status = {
                        "phase": "Pending",
                        "conditions": [
                            _cond(
                                "PodScheduled", False, now, "Unschedulable", UNSCHEDULABLE_MESSAGE
                            )
                        ],
                    }
                    await self.kube.merge_patch(f"{_pod_path(ns, name)}/status", {"status": status})
                    self.scheduler_events.emit(
                        _pod_ref(pod), "FailedScheduling", UNSCHEDULABLE_MESSAGE, warning=True
                    )
                    reported = True
                await asyncio.sleep(self.settings.schedule_retry_seconds)
            await self.kube.merge_patch(
                _pod_path(ns, name), {"spec": {"nodeName": self.settings.node_name}}
            )
            self.scheduler_events.emit(
                _pod_ref(pod),
                "Scheduled",
                f"Successfully assigned {ns}/{name} to {self.settings.node_name}",
            )
        except KubeError as exc:
            log.debug("scheduling %s/%s: %s", ns, name, exc)
        finally:
            self._schedulers.pop(uid, None)


class PodWorker:
    """Runs one pod on the node: create, run, report, terminate, delete."""

    def __init__(self, kubelet: Kubelet, pod: Obj) -> None:
        self.kubelet = kubelet
        self.settings = kubelet.settings
        self.pod = pod
        meta = pod["metadata"]
        self.ns: str = meta["namespace"]
        self.name: str = meta["name"]
        self.uid: str = meta["uid"]
        self.container = first_container(pod)
        self.cname: str = self.container.get("name", "main")
        self.process: asyncio.subprocess.Process | None = None
        self.deleting = asyncio.Event()
        self.gone = False
        self.status: Obj = dict(pod.get("status") or {})
        self.pod_dir = self.settings.state_dir / "pods" / self.uid
        self._task: asyncio.Task[None] | None = None
        self._readers: list[asyncio.Task[None]] = []
        self._oom = False

    def event(self, reason: str, message: str, *, warning: bool = False) -> None:
        self.kubelet.events.emit(_pod_ref(self.pod), reason, message, warning=warning)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"pod {self.ns}/{self.name}")
        if self.pod["metadata"].get("deletionTimestamp"):
            self.deleting.set()

    def update(self, pod: Obj) -> None:
        self.pod = pod
        if pod["metadata"].get("deletionTimestamp"):
            self.deleting.set()

    def object_gone(self) -> None:
        """The pod object was deleted (force, or our own final delete)."""
        self.gone = True
        self.deleting.set()
        self.kill_now()

    def kill_now(self) -> None:
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)

    async def cancel(self) -> None:
        """Stop the worker; its process (group) is killed and reaped."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self.kill_now()
        if self.process is not None:
            with contextlib.suppress(TimeoutError, ProcessLookupError):
                await asyncio.wait_for(self.process.wait(), 5)
        for reader in self._readers:
            reader.cancel()
        for reader in self._readers:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader

    # status -----------------------------------------------------------------------------

    async def _write_status(self, **changes: Any) -> None:
        conditions = changes.pop("conditions", None)
        if conditions is not None:
            self.status["conditions"] = merge_conditions(
                list(self.status.get("conditions") or []), conditions
            )
        self.status.update(changes)
        if self.gone:
            return
        try:
            await self.kubelet.kube.merge_patch(
                f"{_pod_path(self.ns, self.name)}/status", {"status": self.status}
            )
        except KubeError as exc:
            if exc.status == 404:
                self.gone = True
            else:
                log.warning("pod %s/%s status write failed: %s", self.ns, self.name, exc)

    async def _waiting(self, reason: str, message: str | None = None) -> None:
        now = rfc3339(datetime.now(UTC))
        state: Obj = {"waiting": {"reason": reason}}
        if message:
            state["waiting"]["message"] = message
        await self._write_status(
            phase="Pending",
            hostIP=POD_IP,
            hostIPs=[{"ip": POD_IP}],
            podIP=POD_IP,
            podIPs=[{"ip": POD_IP}],
            startTime=self.status.get("startTime") or now,
            qosClass=self.status.get("qosClass") or "BestEffort",
            containerStatuses=[container_status(self.container, state, ready=False, started=False)],
            conditions=[
                _cond("PodReadyToStartContainers", True, now),
                _cond("Initialized", True, now),
                _cond(
                    "Ready",
                    False,
                    now,
                    "ContainersNotReady",
                    f"containers with unready status: [{self.cname}]",
                ),
                _cond(
                    "ContainersReady",
                    False,
                    now,
                    "ContainersNotReady",
                    f"containers with unready status: [{self.cname}]",
                ),
                _cond("PodScheduled", True, now),
            ],
        )

    # lifecycle --------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._lifecycle()
        except asyncio.CancelledError:
            self.kill_now()
            raise
        except Exception:
            log.exception("pod %s/%s: kubelet worker failed", self.ns, self.name)
        finally:
            self.kubelet.workers.pop(self.uid, None)
            if self.gone:
                self.kubelet.logs.drop_pod(self.ns, self.name)
            shutil.rmtree(self.pod_dir, ignore_errors=True)

    async def _sleep_or_deleted(self, seconds: float) -> bool:
        """Sleep; True if the pod got deleted meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.deleting.wait(), seconds)
        return self.deleting.is_set()

    async def _prepare(self) -> tuple[list[str], dict[str, str], Path] | None:
        """Pull (faults), resolve config, mount volumes; None if deleted before it could run."""
        await self._waiting("ContainerCreating")
        labels = self.pod["metadata"].get("labels")
        pulled_fail = False
        while self.kubelet.faults.find(labels, Fault.IMAGE_PULL) is not None:
            image = self.container.get("image", "")
            if not pulled_fail:
                message = (
                    f'rpc error: code = NotFound desc = failed to pull and unpack image "{image}": '
                    f'failed to resolve reference "{image}": {image}: not found'
                )
                await self._waiting("ErrImagePull", message)
                self.event("Failed", f'Failed to pull image "{image}": {message}', warning=True)
                self.event("Failed", "Error: ErrImagePull", warning=True)
            else:
                await self._waiting("ImagePullBackOff", f'Back-off pulling image "{image}"')
                self.event("BackOff", f'Back-off pulling image "{image}"')
            pulled_fail = not pulled_fail
            if await self._sleep_or_deleted(self.settings.image_pull_retry_seconds):
                return None
        last_error: tuple[str, str] | None = None
        while True:
            objects: dict[tuple[str, str], Obj | None] = {}
            for kind, name in referenced_objects(self.pod):
                plural = "secrets" if kind == "Secret" else "configmaps"
                obj = await self.kubelet.kube.get_or_none(
                    f"/api/v1/namespaces/{self.ns}/{plural}/{name}"
                )
                if obj is not None:
                    obj.setdefault("kind", kind)
                objects[(kind, name)] = obj
            try:
                plan = plan_mounts(self.pod, objects, self.pod_dir, self.settings.image_filesystem)
                env = resolve_env(self.pod, objects)
                passthrough = {
                    k: os.environ[k] for k in self.settings.passthrough_env if k in os.environ
                }
                passthrough["HOSTNAME"] = self.name
                passthrough.setdefault("HOME", str(plan.tmpdir or plan.workdir))
                penv = host_env(env, plan, passthrough)
                argv = resolve_argv(self.container, penv, self.settings)
                return argv, penv, plan.workdir or self.pod_dir
            except ContainerConfigError as exc:
                error = ("CreateContainerConfigError", str(exc))
                event = ("Failed", f"Error: {exc}")
            except VolumeNotReady as exc:
                log.info("pod %s/%s: %s", self.ns, self.name, exc)
                error = ("ContainerCreating", "")
                event = ("FailedMount", str(exc))
            if error != last_error:
                await self._waiting(error[0], error[1] or None)
                self.event(event[0], event[1], warning=True)
                last_error = error
            if await self._sleep_or_deleted(self.settings.config_retry_seconds):
                return None

    async def _lifecycle(self) -> None:
        if self.deleting.is_set():
            await self._finish_never_started()
            return
        try:
            prepared = await self._prepare()
        except FileNotFoundError as exc:
            await self._terminated_without_start("StartError", 128, str(exc))
            await self._wait_deleted_then_remove()
            return
        if prepared is None or self.deleting.is_set():
            # deleted before the container started: it never starts
            await self._finish_never_started()
            return
        argv, env, workdir = prepared
        image = self.container.get("image", "")
        self.event("Pulled", f'Container image "{image}" already present on machine')
        self.event("Created", f"Created container: {self.cname}")
        clog = self.kubelet.logs.open(self.ns, self.name, self.cname)
        try:
            self.process = await asyncio.create_subprocess_exec(
                *argv,
                cwd=str(workdir),
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
                preexec_fn=die_with_parent,
                limit=4 * 1024 * 1024,
            )
        except OSError as exc:
            await self._terminated_without_start("StartError", 128, str(exc))
            await self._wait_deleted_then_remove()
            return
        started = datetime.now(UTC)
        clog.started = True
        readers = self._readers = [
            asyncio.create_task(self._pump(self.process.stdout, clog)),
            asyncio.create_task(self._pump(self.process.stderr, clog)),
        ]
        now = rfc3339(started)
        await self._write_status(
            phase="Running",
            containerStatuses=[
                container_status(
                    self.container, {"running": {"startedAt": now}}, ready=True, started=True
                )
            ],
            conditions=[
                _cond("Ready", True, now),
                _cond("ContainersReady", True, now),
            ],
        )
        self.event("Started", f"Started container {self.cname}")
        log.info("pod %s/%s: started pid %s", self.ns, self.name, self.process.pid)
        returncode = await self._supervise()
        # container teardown: whatever the main process left behind goes too
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*readers), 5)
        for r in readers:
            r.cancel()
        clog.finish()
        finished = datetime.now(UTC)
        exit_code = signal_exit_code(returncode)
        reason = "OOMKilled" if self._oom else ("Completed" if exit_code == 0 else "Error")
        file_text = ""
        term = self._termination_file()
        if term is not None:
            with contextlib.suppress(OSError):
                file_text = term.read_text(errors="replace")
        message = termination_message(
            self.container.get("terminationMessagePolicy"),
            file_text,
            exit_code,
            clog.text_tail(FALLBACK_LOG_LINES, FALLBACK_LOG_BYTES),
        )
        terminated: Obj = {
            "exitCode": exit_code,
            "reason": reason,
            "startedAt": rfc3339(started),
            "finishedAt": rfc3339(finished),
            "containerID": "",
        }
        if message:
            terminated["message"] = message
        fnow = rfc3339(finished)
        await self._write_status(
            phase="Succeeded" if exit_code == 0 else "Failed",
            containerStatuses=[
                container_status(
                    self.container, {"terminated": terminated}, ready=False, started=False
                )
            ],
            conditions=[
                _cond("PodReadyToStartContainers", False, fnow),
                _cond("Ready", False, fnow, "PodCompleted"),
                _cond("ContainersReady", False, fnow, "PodCompleted"),
            ],
        )
        log.info("pod %s/%s: exited %s (%s)", self.ns, self.name, exit_code, reason)
        await self._wait_deleted_then_remove()

    def _termination_file(self) -> Path | None:
        path = self.pod_dir / "termination-log"
        return path if path.exists() else None

    async def _pump(self, stream: asyncio.StreamReader | None, clog: ContainerLog) -> None:
        if stream is None:
            return
        while True:
            try:
                line = await stream.readline()
            except ValueError:  # a line longer than the limit: take what is buffered
                line = await stream.read(4 * 1024 * 1024)
            if not line:
                return
            clog.append(line)

    async def _supervise(self) -> int:
        """Wait for the process; handle deletion (SIGTERM, grace, SIGKILL) and faults."""
        assert self.process is not None
        proc = self.process
        labels = self.pod["metadata"].get("labels")
        running_since = time.monotonic()
        wait_task = asyncio.create_task(proc.wait())
        delete_task = asyncio.create_task(self.deleting.wait())
        evicted = False
        try:
            while True:
                done, _ = await asyncio.wait(
                    {wait_task, delete_task},
                    timeout=self.settings.fault_poll_seconds,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if wait_task in done:
                    return wait_task.result()
                if delete_task in done:
                    return await self._terminate(proc, wait_task)
                elapsed = time.monotonic() - running_since
                oom = self.kubelet.faults.find(labels, Fault.OOM_KILL)
                if oom is not None and elapsed >= oom.after_seconds:
                    self._oom = True
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    return await wait_task
                evict = self.kubelet.faults.find(labels, Fault.EVICT)
                if evict is not None and not evicted and elapsed >= evict.after_seconds:
                    evicted = True
                    await self._evict()
        finally:
            delete_task.cancel()
            if not wait_task.done():
                wait_task.cancel()

    async def _evict(self) -> None:
        """What the eviction API does: DisruptionTarget, then a graceful delete."""
        now = rfc3339(datetime.now(UTC))
        await self._write_status(
            conditions=[
                _cond(
                    "DisruptionTarget", True, now, "EvictionByEvictionAPI", "Eviction API: evicting"
                )
            ]
        )
        with contextlib.suppress(KubeError):
            await self.kubelet.kube.delete(_pod_path(self.ns, self.name))

    def _grace_seconds(self) -> float:
        meta = self.pod["metadata"]
        grace = meta.get("deletionGracePeriodSeconds")
        if grace is None:
            grace = (self.pod.get("spec") or {}).get("terminationGracePeriodSeconds")
        if grace is None:
            grace = self.settings.default_grace_seconds
        return float(grace)

    async def _terminate(
        self, proc: asyncio.subprocess.Process, wait_task: asyncio.Task[int]
    ) -> int:
        grace = 0.0 if self.gone else self._grace_seconds()
        log.info("pod %s/%s: deleting, SIGTERM then SIGKILL after %ss", self.ns, self.name, grace)
        self.event("Killing", f"Stopping container {self.cname}")
        with contextlib.suppress(ProcessLookupError, PermissionError):
            proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(asyncio.shield(wait_task), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            return await wait_task

    async def _terminated_without_start(self, reason: str, code: int, message: str) -> None:
        self.event("Failed", f"Error: {message}", warning=True)
        now = rfc3339(datetime.now(UTC))
        await self._write_status(
            phase="Failed",
            containerStatuses=[
                container_status(
                    self.container,
                    {
                        "terminated": {
                            "exitCode": code,
                            "reason": reason,
                            "message": message,
                            "startedAt": None,
                            "finishedAt": now,
                            "containerID": "",
                        }
                    },
                    ready=False,
                    started=False,
                )
            ],
            conditions=[
                _cond("Ready", False, now, "PodFailed"),
                _cond("ContainersReady", False, now, "PodFailed"),
            ],
        )

    async def _finish_never_started(self) -> None:
        """Deleted before the container ran: report it failed, then remove the object."""
        if not self.gone:
            now = rfc3339(datetime.now(UTC))
            await self._write_status(
                phase="Failed",
                containerStatuses=[
                    container_status(
                        self.container,
                        {
                            "terminated": {
                                "exitCode": 137,
                                "reason": "ContainerStatusUnknown",
                                "message": "The container could not be located when "
                                "the pod was terminated",
                                "startedAt": None,
                                "finishedAt": now,
                            }
                        },
                        ready=False,
                        started=False,
                    )
                ],
            )
        await self._remove()

    async def _wait_deleted_then_remove(self) -> None:
        await self.deleting.wait()
        await self._remove()

    async def _remove(self) -> None:
        if not self.gone:
            with contextlib.suppress(KubeError):
                await self.kubelet.kube.delete(_pod_path(self.ns, self.name), gracePeriodSeconds=0)
        self.gone = True

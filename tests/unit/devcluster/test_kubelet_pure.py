"""Pure kubelet logic: env and volume mapping, termination message, the pod log store."""

from __future__ import annotations

import asyncio
import base64
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from agentrun_devcluster.faults import Fault, FaultInjector
from agentrun_devcluster.kubelet import (
    ContainerConfigError,
    KubeletSettings,
    PodLogStore,
    VolumeNotReady,
    expand,
    host_env,
    map_path,
    plan_mounts,
    referenced_objects,
    resolve_argv,
    resolve_env,
    rfc3339_nano,
    signal_exit_code,
    termination_message,
)


def secret(name: str, **data: str) -> dict[str, Any]:
    return {
        "kind": "Secret",
        "metadata": {"name": name},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def configmap(name: str, **data: str) -> dict[str, Any]:
    return {"kind": "ConfigMap", "metadata": {"name": name}, "data": dict(data)}


def pod(container: dict[str, Any], volumes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": "p-abcde", "namespace": "ns", "uid": "u1"},
        "spec": {
            "containers": [{"name": "runner", **container}],
            "volumes": volumes or [],
            "nodeName": "agentrun-dev-node",
        },
    }


def test_env_from_then_env_with_expansion_field_refs_and_prefix() -> None:
    p = pod(
        {
            "envFrom": [
                {"secretRef": {"name": "creds"}},
                {"configMapRef": {"name": "cfg"}, "prefix": "CFG_"},
            ],
            "env": [
                {"name": "A", "value": "x"},
                {"name": "B", "value": "$(A)-$(OPENAI_API_KEY)-$(NOPE)-$$(A)"},
                {"name": "OPENAI_API_KEY", "value": "override"},
                {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "K", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "mode"}}},
            ],
        }
    )
    objects = {
        ("Secret", "creds"): secret("creds", OPENAI_API_KEY="sk", **{"bad key": "z"}),
        ("ConfigMap", "cfg"): configmap("cfg", mode="fast"),
    }
    assert referenced_objects(p) == {("Secret", "creds"), ("ConfigMap", "cfg")}
    env = resolve_env(p, objects)  # type: ignore[arg-type]
    assert env["B"] == "x-sk-$(NOPE)-$(A)"
    assert env["OPENAI_API_KEY"] == "override"
    assert env["CFG_mode"] == "fast"
    assert env["NAME"] == "p-abcde"
    assert env["NS"] == "ns"
    assert env["K"] == "fast"
    assert "bad key" not in env


@pytest.mark.parametrize(
    ("container", "message"),
    [
        ({"envFrom": [{"secretRef": {"name": "gone"}}]}, 'secret "gone" not found'),
        ({"envFrom": [{"configMapRef": {"name": "gone"}}]}, 'configmap "gone" not found'),
        (
            {"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k"}}}]},
            'secret "gone" not found',
        ),
        (
            {"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "have", "key": "k"}}}]},
            "couldn't find key k in Secret ns/have",
        ),
        (
            {"env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}}]},
            "couldn't find key k in ConfigMap ns/cm",
        ),
    ],
)
def test_missing_config_messages(container: dict[str, Any], message: str) -> None:
    objects = {
        ("Secret", "gone"): None,
        ("ConfigMap", "gone"): None,
        ("Secret", "have"): secret("have", other="1"),
        ("ConfigMap", "cm"): configmap("cm"),
    }
    with pytest.raises(ContainerConfigError) as err:
        resolve_env(pod(container), objects)  # type: ignore[arg-type]
    assert str(err.value) == message


def test_optional_references_are_skipped() -> None:
    p = pod(
        {
            "envFrom": [{"secretRef": {"name": "gone", "optional": True}}],
            "env": [
                {
                    "name": "X",
                    "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k", "optional": True}},
                }
            ],
        }
    )
    assert resolve_env(p, {("Secret", "gone"): None}) == {}


def test_volumes_projected_and_paths_mapped(tmp_path: Path) -> None:
    agents = tmp_path / "image-agents"
    agents.mkdir()
    p = pod(
        {
            "terminationMessagePath": "/dev/termination-log",
            "volumeMounts": [
                {"name": "input", "mountPath": "/var/run/agentrun/input"},
                {"name": "tmp", "mountPath": "/tmp"},
                {"name": "cfg", "mountPath": "/etc/cfg"},
            ],
        },
        volumes=[
            {"name": "input", "secret": {"secretName": "in"}},
            {"name": "tmp", "emptyDir": {}},
            {
                "name": "cfg",
                "configMap": {"name": "cm", "items": [{"key": "a", "path": "sub/a.txt"}]},
            },
        ],
    )
    objects = {
        ("Secret", "in"): secret("in", prompt="hi\nthere", **{"agents.yaml": "x: 1"}),
        ("ConfigMap", "cm"): configmap("cm", a="A", b="B"),
    }
    plan = plan_mounts(p, objects, tmp_path / "pod", {"/agents": str(agents)})  # type: ignore[arg-type]
    input_dir = plan.mounts["/var/run/agentrun/input"]
    assert (input_dir / "prompt").read_text() == "hi\nthere"
    assert (input_dir / "..data").is_symlink()
    assert (input_dir / "prompt").is_symlink()
    assert (plan.mounts["/etc/cfg"] / "sub" / "a.txt").read_text() == "A"
    assert not (plan.mounts["/etc/cfg"] / "b").exists()
    assert plan.mounts["/agents"] == agents
    assert plan.tmpdir == plan.mounts["/tmp"]
    env = host_env(
        {
            "AGENTRUN_PROMPT_FILE": "/var/run/agentrun/input/prompt",
            "AGENTRUN_AGENT_DIR": "/agents",
            "PLAIN": "value",
            "ELSEWHERE": "/var/run/other",
        },
        plan,
        {"PATH": "/usr/bin"},
    )
    assert Path(env["AGENTRUN_PROMPT_FILE"]).read_text() == "hi\nthere"
    assert env["AGENTRUN_AGENT_DIR"] == str(agents)
    assert env["PLAIN"] == "value"
    assert env["ELSEWHERE"] == "/var/run/other"
    assert env["TMPDIR"] == str(plan.tmpdir)
    assert env["AGENTRUN_TERMINATION_MESSAGE_PATH"] == str(plan.termination_file)
    assert env["PATH"] == "/usr/bin"


def test_mounted_volume_wins_over_image_directory(tmp_path: Path) -> None:
    p = pod(
        {"volumeMounts": [{"name": "agents", "mountPath": "/agents"}]},
        volumes=[{"name": "agents", "configMap": {"name": "agent-cm"}}],
    )
    objects = {("ConfigMap", "agent-cm"): configmap("agent-cm", **{"agents.yaml": "roles: {}"})}
    plan = plan_mounts(p, objects, tmp_path / "pod", {"/agents": "/nonexistent"})  # type: ignore[arg-type]
    assert (plan.mounts["/agents"] / "agents.yaml").read_text() == "roles: {}"


def test_missing_volume_source_is_not_ready(tmp_path: Path) -> None:
    p = pod(
        {"volumeMounts": [{"name": "input", "mountPath": "/in"}]},
        volumes=[{"name": "input", "secret": {"secretName": "gone"}}],
    )
    with pytest.raises(VolumeNotReady, match='secret "gone" not found'):
        plan_mounts(p, {("Secret", "gone"): None}, tmp_path, {})


def test_map_path_longest_mount_wins() -> None:
    mounts = {"/a": Path("/h1"), "/a/b": Path("/h2")}
    assert map_path("/a/b/c", mounts) == Path("/h2/c")
    assert map_path("/a/x", mounts) == Path("/h1/x")
    assert map_path("/ab", mounts) is None


def test_expand_rules() -> None:
    assert expand("$(X)$(Y)$$", {"X": "1"}) == "1$(Y)$"


def test_resolve_argv_python_and_missing() -> None:
    settings = KubeletSettings(python_executable=sys.executable)
    argv = resolve_argv({"command": ["python", "-m", "x"], "args": ["$(A)"]}, {"A": "v"}, settings)
    assert argv == [sys.executable, "-m", "x", "v"]
    with pytest.raises(FileNotFoundError, match="executable file not found"):
        resolve_argv({"command": ["definitely-missing-xyz"]}, {"PATH": "/nonexistent"}, settings)


def test_termination_message_rules() -> None:
    tail = "last lines\n"
    assert termination_message("FallbackToLogsOnError", "", 1, tail) == tail
    assert termination_message("FallbackToLogsOnError", "file", 1, tail) == "file"
    assert termination_message("FallbackToLogsOnError", "", 0, tail) == ""
    assert termination_message("File", "", 1, tail) == ""
    assert len(termination_message("File", "x" * 10000, 1, tail)) == 4096


def test_signal_exit_codes() -> None:
    assert signal_exit_code(-15) == 143
    assert signal_exit_code(-9) == 137
    assert signal_exit_code(3) == 3


def test_rfc3339_nano_fixed_width() -> None:
    t = datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=UTC)
    assert rfc3339_nano(t) == "2026-01-02T03:04:05.600000000Z"


async def _collect(store: PodLogStore, **kw: Any) -> list[bytes]:
    return [chunk async for chunk in store.read_log("ns", "p", None, **kw)]


async def test_log_store_tail_since_timestamps_and_bound() -> None:
    store = PodLogStore(max_bytes=1000)
    clog = store.open("ns", "p", "runner")
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    for i in range(5):
        clog.append(f"line {i}".encode(), t0 + timedelta(seconds=i))
    base = {"follow": False, "since_time": None, "tail_lines": None, "timestamps": False}
    assert await _collect(store, **base) == [f"line {i}\n".encode() for i in range(5)]
    assert await _collect(store, **{**base, "tail_lines": 2}) == [b"line 3\n", b"line 4\n"]
    assert await _collect(store, **{**base, "since_time": t0 + timedelta(seconds=3)}) == [
        b"line 3\n",
        b"line 4\n",
    ]
    stamped = await _collect(store, **{**base, "tail_lines": 1, "timestamps": True})
    assert stamped == [b"2026-01-01T00:00:04.000000000Z line 4\n"]
    small = PodLogStore(max_bytes=20)
    c2 = small.open("ns", "p", "runner")
    for i in range(10):
        c2.append(f"l{i}".encode())
    kept = [chunk async for chunk in small.read_log("ns", "p", None, **base)]
    assert kept[-1] == b"l9\n"
    assert sum(len(x) for x in kept) <= 20


async def test_log_store_follow_until_finished() -> None:
    store = PodLogStore(max_bytes=10_000)
    clog = store.open("ns", "p", "runner")
    clog.append(b"first")

    async def produce() -> None:
        for i in range(3):
            await asyncio.sleep(0.01)
            clog.append(f"more {i}".encode())
        clog.finish()

    task = asyncio.create_task(produce())
    got = await asyncio.wait_for(
        _collect(store, follow=True, since_time=None, tail_lines=None, timestamps=False), 5
    )
    await task
    assert got == [b"first\n", b"more 0\n", b"more 1\n", b"more 2\n"]


async def test_log_store_follow_ends_when_pod_dropped() -> None:
    store = PodLogStore(max_bytes=10_000)
    store.open("ns", "p", "runner").append(b"x")
    reader = asyncio.create_task(
        _collect(store, follow=True, since_time=None, tail_lines=None, timestamps=False)
    )
    await asyncio.sleep(0.02)
    assert not reader.done()
    store.drop_pod("ns", "p")
    assert await asyncio.wait_for(reader, 5) == [b"x\n"]


def test_fault_injector_matching() -> None:
    faults = FaultInjector()
    faults.add({"run": "a"}, "evict", after_seconds=1.5)
    faults.add({"run": "a", "x": "y"}, Fault.OOM_KILL)
    rule = faults.find({"run": "a", "other": "z"}, Fault.EVICT)
    assert rule is not None
    assert rule.after_seconds == 1.5
    assert faults.find({"run": "a"}, Fault.OOM_KILL) is None
    assert faults.find({"run": "a", "x": "y"}, Fault.OOM_KILL) is not None
    assert faults.find(None, Fault.EVICT) is None
    with pytest.raises(ValueError, match="nope"):
        faults.add({}, "nope")
    faults.clear()
    assert faults.rules() == []

"""Helpers shared by the chart tests (importable: conftest puts this folder on sys.path)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "agentrun"
SCENARIOS = sorted((CHART / "ci").glob("*.yaml"))
RELEASE = "rel"
NAMESPACE = "agents"
FULLNAME = f"{RELEASE}-agentrun"

Manifest = dict[str, Any]


def find_helm() -> str:
    """The helm binary: .tools/bin/helm (tools/install-kube-tools), else PATH; else FAIL."""
    local = REPO / ".tools" / "bin" / "helm"
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    found = shutil.which("helm")
    if found:
        return found
    pytest.fail(
        "helm not found: run tools/install-kube-tools (installs helm into .tools/bin)",
        pytrace=False,
    )


def run_helm(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [helm, *args], capture_output=True, text=True, timeout=120, check=False, cwd=REPO
    )


def helm_template(
    helm: str,
    *,
    values_files: tuple[Path, ...] = (),
    sets: tuple[str, ...] = (),
    namespace: str = NAMESPACE,
    release: str = RELEASE,
) -> list[Manifest]:
    args = ["template", release, str(CHART), "--namespace", namespace]
    for path in values_files:
        args += ["-f", str(path)]
    for item in sets:
        args += ["--set", item]
    proc = run_helm(helm, *args)
    assert proc.returncode == 0, f"helm template failed:\n{proc.stderr}"
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def of_kind(docs: list[Manifest], kind: str) -> list[Manifest]:
    return [d for d in docs if d.get("kind") == kind]


def named(docs: list[Manifest], kind: str, name: str) -> Manifest:
    matches = [d for d in of_kind(docs, kind) if d["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, got {len(matches)}"
    return matches[0]


def container_env(deployment: Manifest) -> dict[str, dict[str, Any]]:
    """name -> env entry of the Deployment's first container."""
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e for e in container.get("env", [])}


def pod_specs(docs: list[Manifest]) -> list[tuple[str, Manifest]]:
    """(name, pod spec) of every workload that makes pods."""
    found = []
    for d in docs:
        if d.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            found.append((d["metadata"]["name"], d["spec"]["template"]["spec"]))
        elif d.get("kind") == "Pod":
            found.append((d["metadata"]["name"], d["spec"]))
    return found

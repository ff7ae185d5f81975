"""The run's inputs, read from the files and environment variables the contract names.

Pure functions over an environment mapping and the filesystem; no PraisonAI. Shared with the
tiny test runner (agentrun_devcluster.tiny_runner) so both read inputs the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from agentrun_contract.runner import (
    AGENT_DIR,
    DEFAULT_AGENT_FILE,
    ENV_AGENT_DIR,
    ENV_AGENT_FILE,
    ENV_AGENT_YAML_FILE,
    ENV_FRAMEWORK,
    ENV_NONCE,
    ENV_PROMPT_FILE,
    ENV_RUN_ID,
    ENV_SESSION_ID,
    PROMPT_PATH,
)

DEFAULT_FRAMEWORK = "praisonai"


class InputError(Exception):
    """A missing, unreadable or invalid input: final, reason ``bad_input``; the message names
    the input and the fix."""


@dataclass(frozen=True)
class RunInputs:
    run_id: str
    nonce: str
    prompt: str
    framework: str
    agent_path: Path | None
    """The agent YAML to run (an absolute, resolved path); None only for the tiny runner when no
    agent location is configured at all."""
    agent_label: str | None
    """What the ``start`` event reports: the relative agent file, or ``inline``."""
    session_id: str | None
    agent_config: dict[str, Any] | None = None
    """The agent YAML, parsed (None when there is no agent file)."""


def identity(env: Mapping[str, str]) -> tuple[str, str]:
    """The run id and nonce ('' when unset: events are still written, the operator ignores
    them, and the bad_input error says what is missing)."""
    return env.get(ENV_RUN_ID, ""), env.get(ENV_NONCE, "")


def resolve_agent_file(agent_dir: str, agent_file: str) -> Path:
    """The agent file ``agent_file`` inside ``agent_dir``, resolved.

    ``agent_file`` must be relative and must not contain ``..``. Symlinks are followed (a
    ConfigMap mount is ``agents.yaml -> ..data/agents.yaml -> ..<timestamp>/agents.yaml``) but
    the target must stay inside the agent directory.
    """
    if not agent_file or not agent_file.strip():
        raise InputError("the agent file name is empty")
    relative = PurePosixPath(agent_file)
    if relative.is_absolute() or agent_file.startswith("\\"):
        raise InputError(
            f"agent file {agent_file!r} is an absolute path; give a path relative to the "
            f"agent directory {agent_dir}"
        )
    if ".." in relative.parts:
        raise InputError(f"agent file {agent_file!r} must not contain '..'")
    try:
        base = Path(agent_dir).resolve(strict=True)
    except OSError as exc:
        raise InputError(
            f"the agent directory {agent_dir} does not exist ({exc.strerror}); mount the agents "
            "ConfigMap there or use the runner image's default"
        ) from exc
    try:
        target = (base / relative).resolve(strict=True)
    except OSError as exc:
        raise InputError(
            f"agent file {agent_file!r} was not found in the agent directory {agent_dir}"
        ) from exc
    if not target.is_relative_to(base):
        raise InputError(f"agent file {agent_file!r} points outside the agent directory")
    if not target.is_file():
        raise InputError(f"agent file {agent_file!r} in {agent_dir} is not a file")
    return target


def check_agent_yaml(path: Path, label: str) -> dict[str, Any]:
    """The agent YAML at ``path``; raises :class:`InputError` unless it is readable YAML holding
    a mapping."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the agent YAML ({label}): {exc}") from exc
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InputError(f"the agent YAML ({label}) is not valid YAML: {exc}") from exc
    if not isinstance(document, dict):
        raise InputError(f"the agent YAML ({label}) must be a mapping (e.g. with 'roles:')")
    return document


def read_prompt(env: Mapping[str, str]) -> str:
    path = env.get(ENV_PROMPT_FILE) or PROMPT_PATH
    try:
        prompt = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise InputError(f"the prompt file {path} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the prompt file {path}: {exc}") from exc
    if not prompt.strip():
        raise InputError(f"the prompt file {path} is empty")
    return prompt


def read_inputs(env: Mapping[str, str], *, require_agent: bool = True) -> RunInputs:
    """All inputs of the run; raises :class:`InputError` (bad_input) for anything wrong.

    ``require_agent=False`` (tiny runner only): when neither the inline YAML file nor the agent
    directory is configured, no agent file is required.
    """
    run_id, nonce = identity(env)
    if not run_id:
        raise InputError(f"{ENV_RUN_ID} is not set")
    if not nonce:
        raise InputError(f"{ENV_NONCE} is not set")
    prompt = read_prompt(env)
    framework = (env.get(ENV_FRAMEWORK) or DEFAULT_FRAMEWORK).strip()
    inline = env.get(ENV_AGENT_YAML_FILE)
    agent_path: Path | None
    label: str | None
    if inline:
        agent_path, label = Path(inline), "inline"
        if not agent_path.is_file():
            raise InputError(f"the inline agent YAML file {inline} does not exist")
        agent_path = agent_path.resolve()
    elif not require_agent and not env.get(ENV_AGENT_DIR):
        agent_path, label = None, None
    else:
        label = env.get(ENV_AGENT_FILE) or DEFAULT_AGENT_FILE
        agent_path = resolve_agent_file(env.get(ENV_AGENT_DIR) or AGENT_DIR, label)
    config = None
    if agent_path is not None and label is not None:
        config = check_agent_yaml(agent_path, label)
    return RunInputs(
        run_id=run_id,
        nonce=nonce,
        prompt=prompt,
        framework=framework,
        agent_path=agent_path,
        agent_label=label,
        session_id=env.get(ENV_SESSION_ID) or None,
        agent_config=config,
    )

"""Running the agent the way PraisonAI's own jobs server does (praisonai/jobs/executor.py).

- The framework name is resolved through PraisonAI's adapter registry.
- Frameworks whose adapter supports native workflows (``praisonai``): ``praisonai.arun(
  agent_file=..., framework=..., cli_config={"topic": prompt})``, which returns a string starting
  ``### PraisonAI Output ###`` and raises when a task fails.
- Others (crewai, autogen), when installed: also ``praisonai.arun`` with that framework. (The
  jobs server's legacy path, ``PraisonAI(agent_file, framework).run()``, parses the process's
  command line and drops the prompt; arun runs every registered adapter and keeps the topic.)
- A framework that is unknown or not installed is a ``bad_input`` error, raised at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agentrun_runner.inputs import InputError


def resolve_framework(name: str) -> str:
    """The registry's name for ``name``; raises InputError when the framework is unknown or not
    installed in this image."""
    from praisonai.framework_adapters.registry import get_default_registry

    registry = get_default_registry()
    known = [str(n) for n in registry.list_registered()]
    resolved = str(registry.resolve_or_default(name))
    if resolved.lower() not in [k.lower() for k in known]:
        raise InputError(f"unknown framework {name!r}; known frameworks: {', '.join(known)}")
    if not registry.is_available(resolved):
        installed = [k for k in known if registry.is_available(k)]
        raise InputError(
            f"framework {name} is not installed in this runner image (installed: "
            f"{', '.join(installed)}); use one of those or build the image with it"
        )
    return resolved


def _as_text(result: Any) -> str:
    if result is None:
        return ""
    return result if isinstance(result, str) else str(result)


async def run_agent(framework: str, agent_path: Path, prompt: str) -> str:
    """Run the agent with ``framework`` (a name from :func:`resolve_framework`); its result as
    text. Raises whatever the agent raises when it fails."""
    from praisonai import arun

    result = await arun(
        agent_file=str(agent_path), framework=framework, cli_config={"topic": prompt}
    )
    return _as_text(result)

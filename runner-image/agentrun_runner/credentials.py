"""Which LLM credentials a run needs, decided by the provider of each model it will call.

The Job loads the whole LLM credentials Secret with ``envFrom``, so the keys are whatever the
install put there, under litellm's names. PraisonAI sends every agent of an agent YAML through
litellm, so litellm's own answer is the truth: :func:`litellm.get_llm_provider` names the
provider, :func:`litellm.validate_environment` the variables it requires (``OPENAI_API_KEY``;
``ANTHROPIC_API_KEY``; ``GEMINI_API_KEY`` or ``GOOGLE_API_KEY``; ``AZURE_API_KEY``,
``AZURE_API_BASE`` and ``AZURE_API_VERSION``; ``OLLAMA_API_BASE`` and no key; ...).

- The models come from ``MODEL_NAME`` (default :data:`agentrun_contract.runner.
  DEFAULT_MODEL_NAME`) for agents without their own ``llm``, and from the agent YAML for agents
  with one (a key or base URL written there counts as given).
- A blank variable counts as unset (an empty Secret value reaches the pod as ``KEY=``).
- A model whose provider litellm does not know, or whose needs it does not list, is never
  refused here: it is reported as a note, and the agent's own call decides.

:func:`models_of_run` is pure. :func:`check_credentials` imports litellm (seconds): call it only
once the SIGTERM handler is installed and the run's events have started.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from agentrun_contract.runner import DEFAULT_MODEL_NAME, ENV_CREDENTIALS_SECRET, ENV_MODEL_NAME

from agentrun_runner.environment import TELEMETRY_OFF

DEFAULT_CREDENTIALS_SECRET = "agentrun-llm-credentials"
ENV_OPENAI_MODEL_NAME = "OPENAI_MODEL_NAME"
"""PraisonAI's older spelling of MODEL_NAME; MODEL_NAME wins."""
LOCAL_COST_MAP = "LITELLM_LOCAL_MODEL_COST_MAP"
DEFAULT_SOURCE = f"the default, as {ENV_MODEL_NAME} is not set"
AGENT_SECTIONS = ("roles", "agents")
"""Where an agent YAML lists its agents (``roles:`` in PraisonAI's classic format, ``agents:`` in
its workflow format), each optionally with its own ``llm`` (or ``model``)."""


@dataclass(frozen=True)
class ModelUse:
    """One model the run will call, and where the run got it from."""

    model: str
    source: str
    """For messages: ``MODEL_NAME``, :data:`DEFAULT_SOURCE`, ``agent 'writer' in the agent
    YAML``."""
    api_key: str | None = None
    """A key written in the agent YAML for this model (then no key variable is required)."""
    api_base: str | None = None
    """A base URL written in the agent YAML for this model."""


@dataclass(frozen=True)
class CredentialCheck:
    """The decision: ``missing`` is the user-facing ``missing_credentials`` message (None: the
    run may go on); ``notes`` say which models the check could not judge."""

    missing: str | None
    notes: tuple[str, ...] = field(default=())


def _text(value: object) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def default_model(env: Mapping[str, str]) -> ModelUse:
    """The model of agents without their own ``llm``: MODEL_NAME, else OPENAI_MODEL_NAME, else
    the default (OpenAI's)."""
    for name in (ENV_MODEL_NAME, ENV_OPENAI_MODEL_NAME):
        model = _text(env.get(name))
        if model:
            return ModelUse(model, name)
    return ModelUse(DEFAULT_MODEL_NAME, DEFAULT_SOURCE)


def pin_default_model(env: MutableMapping[str, str]) -> None:
    """Set MODEL_NAME to :func:`default_model`'s choice, so PraisonAI runs exactly the model the
    credentials were checked for (unpinned, it picks a model from whichever provider key it finds
    first, by its own catalogue's ranking)."""
    env[ENV_MODEL_NAME] = default_model(env).model


def _agents(config: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    found: list[tuple[str, Mapping[str, Any]]] = []
    for section in AGENT_SECTIONS:
        value = config.get(section)
        if isinstance(value, Mapping):
            found += [(str(k), v) for k, v in value.items() if isinstance(v, Mapping)]
        elif isinstance(value, list):
            found += [
                (str(v.get("name") or v.get("role") or i), v)
                for i, v in enumerate(value)
                if isinstance(v, Mapping)
            ]
    return found


def models_of_run(env: Mapping[str, str], config: Mapping[str, Any] | None) -> list[ModelUse]:
    """Every distinct model the run will call: each agent's own ``llm`` (a name, or a mapping
    with ``model`` and optionally ``api_key``, ``base_url``/``api_base``), the YAML's
    ``manager_llm``, and the default model when an agent has none or no agent is found."""
    fallback = default_model(env)
    uses: list[ModelUse] = []
    agents = _agents(config or {})
    needs_default = not agents
    for name, details in agents:
        spec = details.get("llm") or details.get("model")
        source = f"agent {name!r} in the agent YAML"
        if isinstance(spec, Mapping):
            model = _text(spec.get("model"))
            uses.append(
                ModelUse(
                    model or fallback.model,
                    source if model else fallback.source,
                    api_key=_text(spec.get("api_key")),
                    api_base=_text(spec.get("base_url")) or _text(spec.get("api_base")),
                )
            )
        elif _text(spec):
            uses.append(ModelUse(str(_text(spec)), source))
        else:
            needs_default = True
    manager = _text((config or {}).get("manager_llm"))
    if manager:
        uses.append(ModelUse(manager, "manager_llm in the agent YAML"))
    if needs_default:
        uses.insert(0, fallback)
    distinct: dict[tuple[str, str | None, str | None], ModelUse] = {}
    for use in uses:
        distinct.setdefault((use.model, use.api_key, use.api_base), use)
    return list(distinct.values())


@contextlib.contextmanager
def _environ(env: Mapping[str, str]) -> Iterator[None]:
    """``os.environ`` is ``env`` for the duration (litellm reads only os.environ)."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _litellm() -> Any:
    # Fetching the cost map at import would stall offline (agentrun_runner.environment); the
    # runner has set this already, other callers (the tiny runner) may not have.
    os.environ.setdefault(LOCAL_COST_MAP, TELEMETRY_OFF[LOCAL_COST_MAP])
    import litellm

    # Its provider lookup otherwise prints a banner on stdout, the events' channel.
    litellm.suppress_debug_info = True
    return litellm


def provider_of(model: str) -> str | None:
    """litellm's provider for ``model`` (``openai``, ``anthropic``, ``azure``, ``ollama``, ...),
    or None when litellm cannot route it."""
    litellm = _litellm()
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            _, provider, _, _ = litellm.get_llm_provider(model=model)
        except Exception:  # litellm raises its BadRequestError for an unroutable model
            return None
    return str(provider) if provider else None


def _missing(env: Mapping[str, str], use: ModelUse) -> list[str]:
    """The variables litellm requires for ``use`` that ``env`` lacks (litellm names every
    variable of a group when one of them is missing)."""
    litellm = _litellm()
    with _environ(env), contextlib.redirect_stdout(io.StringIO()):
        verdict = litellm.validate_environment(
            model=use.model, api_key=use.api_key, api_base=use.api_base
        )
    return [str(key) for key in verdict.get("missing_keys") or [] if str(key) not in env]


def _requirement(env: Mapping[str, str], use: ModelUse, missing: list[str]) -> str:
    """``missing`` in words: alternatives (any one of them satisfies litellm) or all of them."""
    alone = [key for key in missing if not _missing({**env, key: "set"}, use)]
    if len(alone) > 1:
        return f"none of {', '.join(alone)} is set (any one of them will do)"
    return f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set"


def check_credentials(env: Mapping[str, str], uses: list[ModelUse]) -> CredentialCheck:
    """Decide whether ``env`` holds what each model of ``uses`` needs (see the module doc)."""
    present = {key: value for key, value in env.items() if value.strip()}
    secret = _text(env.get(ENV_CREDENTIALS_SECRET)) or DEFAULT_CREDENTIALS_SECRET
    problems: list[str] = []
    failed: list[ModelUse] = []
    first_key: str | None = None
    notes: list[str] = []
    for use in uses:
        provider = provider_of(use.model)
        if provider is None:
            notes.append(
                f"cannot tell which credentials model {use.model!r} ({use.source}) needs: "
                "litellm knows no provider for it; name it as provider/model, e.g. "
                f"openai/{use.model.rsplit('/', 1)[-1]} for an OpenAI-compatible endpoint at "
                "OPENAI_BASE_URL"
            )
            continue
        missing = _missing(present, use)
        if not missing:
            continue
        first_key = first_key or missing[0]
        failed.append(use)
        problems.append(
            f"model {use.model!r} ({use.source}; provider {provider}): "
            f"{_requirement(present, use, missing)}"
        )
    if not problems:
        return CredentialCheck(None, tuple(notes))
    hint = ""
    if any(use.source == DEFAULT_SOURCE for use in failed):
        hint = (
            f" To use another provider, also set {ENV_MODEL_NAME} there (as litellm names "
            "models, e.g. anthropic/claude-sonnet-4-5, gemini/gemini-2.5-flash, "
            "azure/<deployment>, ollama/llama3.2)."
        )
    patch = json.dumps({"stringData": {first_key: "<value>"}}, separators=(",", ":"))
    message = (
        f"no LLM credentials for {'; '.join(problems)}. Set "
        f"{'it' if len(problems) == 1 and ',' not in problems[0] else 'them'} in the Secret "
        f"{secret!r} in "
        f"the run's namespace (the runner gets all its keys as environment variables), e.g. "
        f"kubectl patch secret {secret} -p '{patch}'.{hint}"
    )
    return CredentialCheck(message, tuple(notes))


def credentials_problem(
    env: Mapping[str, str], config: Mapping[str, Any] | None
) -> CredentialCheck:
    """:func:`check_credentials` for the models of a run of agent YAML ``config``."""
    return check_credentials(env, models_of_run(env, config))

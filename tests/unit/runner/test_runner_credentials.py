"""The runner's credential decision: the provider of each model the run calls (as litellm routes
it) decides which variables of the credentials Secret must be set."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
from agentrun_contract import runner as contract
from agentrun_runner.credentials import (
    DEFAULT_SOURCE,
    ModelUse,
    check_credentials,
    credentials_problem,
    default_model,
    models_of_run,
    pin_default_model,
    provider_of,
)

SECRET = {contract.ENV_CREDENTIALS_SECRET: "team-llm"}


def decide(config: dict[str, Any] | None = None, **env: str) -> str | None:
    """The missing_credentials message for a run of ``config`` (None: the run may go on)."""
    return credentials_problem(SECRET | env, config).missing


def assert_missing(message: str | None, *keys: str, model: str) -> str:
    assert message is not None, "the run must fail with missing_credentials"
    assert message.startswith(f"no LLM credentials for model {model!r}"), message
    for key in keys:
        assert key in message, (key, message)
    assert "Secret 'team-llm'" in message
    assert "kubectl patch secret team-llm" in message
    return message


# -- one provider each ---------------------------------------------------------------------------


def test_openai_needs_openai_api_key_and_says_for_which_model() -> None:
    assert decide(MODEL_NAME="openai/gpt-4o", OPENAI_API_KEY="sk") is None
    message = assert_missing(
        decide(MODEL_NAME="openai/gpt-4o"), "OPENAI_API_KEY", model="openai/gpt-4o"
    )
    assert "(MODEL_NAME; provider openai): OPENAI_API_KEY is not set" in message
    # A blank value is how an empty Secret key arrives: not a key.
    assert_missing(
        decide(MODEL_NAME="gpt-4o-mini", OPENAI_API_KEY="  "), "OPENAI_API_KEY", model="gpt-4o-mini"
    )


def test_the_default_model_is_openais_and_the_message_says_how_to_choose_another() -> None:
    assert decide(OPENAI_API_KEY="sk") is None
    message = assert_missing(
        decide(ANTHROPIC_API_KEY="sk-ant"), "OPENAI_API_KEY", model="gpt-4o-mini"
    )
    assert f"({DEFAULT_SOURCE}; provider openai)" in message
    assert "also set MODEL_NAME there" in message
    assert "anthropic/claude-sonnet-4-5" in message


def test_anthropic_needs_only_anthropics_key() -> None:
    model = "anthropic/claude-sonnet-4-5"
    assert decide(MODEL_NAME=model, ANTHROPIC_API_KEY="sk-ant") is None
    message = assert_missing(
        decide(MODEL_NAME=model, OPENAI_API_KEY="sk"), "ANTHROPIC_API_KEY", model=model
    )
    assert "provider anthropic" in message
    assert "OPENAI_API_KEY" not in message
    assert '{"stringData":{"ANTHROPIC_API_KEY":"<value>"}}' in message


def test_gemini_takes_either_of_its_two_key_names() -> None:
    model = "gemini/gemini-2.5-flash"
    assert decide(MODEL_NAME=model, GEMINI_API_KEY="g") is None
    assert decide(MODEL_NAME=model, GOOGLE_API_KEY="g") is None
    message = assert_missing(
        decide(MODEL_NAME=model, OPENAI_API_KEY="sk"),
        "GOOGLE_API_KEY",
        "GEMINI_API_KEY",
        model=model,
    )
    assert "any one of them will do" in message


def test_azure_needs_key_base_and_version_and_names_only_what_is_missing() -> None:
    model = "azure/my-gpt4o-deployment"
    azure = {
        "AZURE_API_KEY": "k",
        "AZURE_API_BASE": "https://example.openai.azure.com",
        "AZURE_API_VERSION": "2024-10-21",
    }
    assert decide(MODEL_NAME=model, **azure) is None
    without_version = {k: v for k, v in azure.items() if k != "AZURE_API_VERSION"}
    message = assert_missing(
        decide(MODEL_NAME=model, **without_version), "AZURE_API_VERSION", model=model
    )
    assert "provider azure): AZURE_API_VERSION is not set" in message
    assert "AZURE_API_KEY" not in message
    message = assert_missing(
        decide(MODEL_NAME=model, OPENAI_API_KEY="sk"),
        "AZURE_API_KEY",
        "AZURE_API_BASE",
        "AZURE_API_VERSION",
        model=model,
    )
    assert "are not set" in message


def test_ollama_needs_a_base_url_and_no_key() -> None:
    model = "ollama/llama3.2"
    assert decide(MODEL_NAME=model, OLLAMA_API_BASE="http://ollama.llm:11434") is None
    message = assert_missing(decide(MODEL_NAME=model), "OLLAMA_API_BASE", model=model)
    assert "provider ollama" in message
    assert "OPENAI_API_KEY" not in message


@pytest.mark.parametrize("model", ["acme/model-x", "my-finetune"])
def test_a_model_litellm_cannot_route_is_not_refused_but_noted(model: str) -> None:
    check = credentials_problem(SECRET | {"MODEL_NAME": model}, None)
    assert check.missing is None, "only a key known to be missing fails the run"
    (note,) = check.notes
    assert f"model {model!r} (MODEL_NAME) needs" in note
    assert "litellm knows no provider for it" in note
    assert f"openai/{model.split('/')[-1]}" in note


# -- the models of a run -----------------------------------------------------------------------


def test_agents_with_their_own_llm_do_not_need_the_default_models_key() -> None:
    config = {
        "roles": {
            "writer": {"role": "W", "llm": "anthropic/claude-sonnet-4-5"},
            "critic": {"role": "C", "llm": {"model": "anthropic/claude-haiku-4-5"}},
        }
    }
    assert decide(config, ANTHROPIC_API_KEY="sk-ant") is None
    config["roles"]["editor"] = {"role": "E"}  # no llm: MODEL_NAME, i.e. the default
    assert_missing(
        decide(config, ANTHROPIC_API_KEY="sk-ant"), "OPENAI_API_KEY", model="gpt-4o-mini"
    )
    config["roles"]["editor"] = {"role": "E", "llm": "gemini/gemini-2.5-flash"}
    message = assert_missing(
        decide(config, ANTHROPIC_API_KEY="sk-ant"),
        "GEMINI_API_KEY",
        model="gemini/gemini-2.5-flash",
    )
    assert "agent 'editor' in the agent YAML" in message


def test_a_key_or_base_url_in_the_agent_yaml_counts_as_given() -> None:
    config = {
        "roles": {
            "a": {"llm": {"model": "anthropic/claude-sonnet-4-5", "api_key": "inline"}},
            "b": {"llm": {"model": "ollama/llama3.2", "base_url": "http://ollama:11434"}},
        }
    }
    assert decide(config) is None


def test_models_of_run_lists_each_model_once_with_its_source() -> None:
    env = {"MODEL_NAME": "openai/gpt-4o"}
    config = {
        "manager_llm": "openai/gpt-4o-mini",
        "agents": [{"name": "x", "llm": "openai/gpt-4o"}, {"name": "y"}],
    }
    assert models_of_run(env, config) == [
        ModelUse("openai/gpt-4o", "MODEL_NAME"),
        ModelUse("openai/gpt-4o-mini", "manager_llm in the agent YAML"),
    ]
    assert models_of_run({}, {"roles": {}}) == [ModelUse("gpt-4o-mini", DEFAULT_SOURCE)]


def test_default_model_and_pinning_it_for_praisonai() -> None:
    assert default_model({}).model == contract.DEFAULT_MODEL_NAME == "gpt-4o-mini"
    assert default_model({"MODEL_NAME": " ", "OPENAI_MODEL_NAME": "x/y"}) == ModelUse(
        "x/y", "OPENAI_MODEL_NAME"
    )
    env: dict[str, str] = {}
    pin_default_model(env)
    assert env == {"MODEL_NAME": "gpt-4o-mini"}
    env = {"MODEL_NAME": "anthropic/claude-sonnet-4-5"}
    pin_default_model(env)
    assert env == {"MODEL_NAME": "anthropic/claude-sonnet-4-5"}


# -- side effects --------------------------------------------------------------------------------


def test_the_check_leaves_the_process_environment_as_it_was() -> None:
    before = dict(os.environ)
    check_credentials({"MODEL_NAME": "azure/d"}, [ModelUse("azure/d", "MODEL_NAME")])
    assert dict(os.environ) == before


def test_nothing_reaches_stdout_the_events_channel() -> None:
    """litellm prints a banner on stdout for a model it cannot route."""
    code = (
        "from agentrun_runner.credentials import credentials_problem, provider_of\n"
        "assert provider_of('acme/x') is None\n"
        "assert provider_of('anthropic/claude-sonnet-4-5') == 'anthropic'\n"
        "credentials_problem({'MODEL_NAME': 'my-finetune'}, None)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout == ""


def test_provider_of_follows_litellm() -> None:
    assert provider_of("gpt-4o-mini") == "openai"
    assert provider_of("azure/d") == "azure"
    assert provider_of("ollama_chat/llama3.2") == "ollama_chat"
    assert provider_of("nonsense") is None


def test_the_operators_missing_secret_message_does_not_assume_openai() -> None:
    """When the Secret itself is missing the pod never starts and the operator says what to
    create: the model's name and its provider's keys, not necessarily OpenAI's."""
    from agentrun_operator.pod_start_problems import missing_credentials_message

    message = missing_credentials_message("team-llm")
    assert "create Secret team-llm" in message
    assert contract.ENV_MODEL_NAME in message
    assert "--from-literal=ANTHROPIC_API_KEY=" in message


def test_litellm_is_imported_only_by_the_check_itself() -> None:
    """Importing the runner's task module (done right after the SIGTERM handler) stays light:
    litellm, seconds to import, loads when the credentials are checked."""
    code = (
        "import sys, agentrun_runner.run, agentrun_runner.credentials\n"
        "print(','.join(m for m in ('litellm', 'praisonai', 'praisonaiagents') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == ""

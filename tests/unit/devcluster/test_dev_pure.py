"""Pure parts of `agentrun dev`: credentials, banner text, runner commands."""

from __future__ import annotations

import argparse

import pytest
from agentrun_cli.dev_args import add_dev_arguments
from agentrun_devcluster.dev import (
    RUNNER_COMMANDS,
    credentials_from_env,
    seed_curl,
    stub_credentials,
)


def test_credentials_only_with_a_key() -> None:
    assert credentials_from_env({"OPENAI_BASE_URL": "http://x"}) is None
    assert credentials_from_env({"OPENAI_API_KEY": ""}) is None
    creds = credentials_from_env(
        {"OPENAI_API_KEY": "sk", "OPENAI_BASE_URL": "http://x/v1", "MODEL_NAME": "m", "HOME": "/"}
    )
    assert creds == {"OPENAI_API_KEY": "sk", "OPENAI_BASE_URL": "http://x/v1", "MODEL_NAME": "m"}


def test_credentials_of_any_provider() -> None:
    anthropic = {"ANTHROPIC_API_KEY": "k", "MODEL_NAME": "anthropic/claude-sonnet-4-5", "PATH": "/"}
    assert credentials_from_env(anthropic) == {
        "ANTHROPIC_API_KEY": "k",
        "MODEL_NAME": "anthropic/claude-sonnet-4-5",
    }
    azure = {"AZURE_API_KEY": "k", "AZURE_API_BASE": "https://a", "AZURE_API_VERSION": "v"}
    assert credentials_from_env(azure) == azure
    # Ollama needs no key, only its base URL
    ollama = {"OLLAMA_API_BASE": "http://127.0.0.1:11434", "MODEL_NAME": "ollama_chat/llama3"}
    assert credentials_from_env(ollama) == ollama


def test_stub_credentials_point_at_the_stub() -> None:
    assert stub_credentials("http://127.0.0.1:5/v1") == {
        "OPENAI_API_KEY": "stub",
        "OPENAI_BASE_URL": "http://127.0.0.1:5/v1",
        "MODEL_NAME": "openai/agentrun-stub",
    }


def test_seed_curl_targets_the_api() -> None:
    text = seed_curl("http://127.0.0.1:9999")
    assert text.startswith("curl -X POST http://127.0.0.1:9999/api/v1/runs")
    assert '"prompt": "Analyze the quarterly sales data"' in text


def test_runner_choices_match_cli() -> None:
    parser = argparse.ArgumentParser()
    add_dev_arguments(parser)
    args = parser.parse_args(["--runner", "tiny", "--port", "1234", "--stub-llm"])
    assert RUNNER_COMMANDS[args.runner] == ["python", "-m", "agentrun_devcluster.tiny_runner"]
    assert args.port == 1234
    assert args.stub_llm
    defaults = parser.parse_args([])
    assert RUNNER_COMMANDS[defaults.runner] == ["agentrun-runner"]
    assert (defaults.host, defaults.port) == ("127.0.0.1", 8005)


def test_port_in_use_is_reported_with_the_fix() -> None:
    import socket

    import pytest
    from agentrun_devcluster.dev import PortInUse, check_port_free

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortInUse, match="--port"):
            check_port_free("127.0.0.1", port)
    check_port_free("127.0.0.1", port)  # free again: no error


def test_dev_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    from agentrun_devcluster.dev import DevSettings

    monkeypatch.setenv("AGENTRUN_DEV_KUBELET__CONFIG_RETRY_SECONDS", "0.5")
    monkeypatch.setenv("AGENTRUN_DEV_JOB_CONTROLLER__BACKOFF_SECONDS", "3")
    monkeypatch.setenv("AGENTRUN_DEV_SHUTDOWN_GRACE_SECONDS", "4")
    settings = DevSettings()
    assert settings.kubelet.config_retry_seconds == 0.5
    assert settings.job_controller.backoff_seconds == 3
    assert settings.shutdown_grace_seconds == 4
    assert settings.ready_timeout_seconds == 120
    for model in (DevSettings, type(settings.kubelet), type(settings.job_controller)):
        undocumented = [n for n, f in model.model_fields.items() if not f.description]
        assert undocumented == [], f"{model.__name__} fields without a description"

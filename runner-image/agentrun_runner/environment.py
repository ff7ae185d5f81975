"""The process environment the agent runs in: no phone-home, nothing written outside TMPDIR.

Applied before PraisonAI is imported (its modules read these variables at import time).
Standard library only.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import MutableMapping
from pathlib import Path

TMP_DIR = "/tmp"
"""agentrun_contract.runner.TMP_DIR: the only writable path in the pod."""

TELEMETRY_OFF: dict[str, str] = {
    # The common opt-out honoured by PraisonAI and many libraries.
    "DO_NOT_TRACK": "true",
    # praisonaiagents (telemetry/telemetry.py, _config.py) reads all three spellings.
    "PRAISONAI_TELEMETRY_DISABLED": "true",
    "PRAISONAI_DISABLE_TELEMETRY": "true",
    "PRAISONAI_TELEMETRY_ENABLED": "false",
    # praisonai/__init__.py defaults OpenTelemetry on when langfuse is configured.
    "OTEL_SDK_DISABLED": "true",
    # litellm: use the bundled model cost map instead of fetching it at import.
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    # Optional libraries an agent may pull in (memory, crewai, Hugging Face).
    "ANONYMIZED_TELEMETRY": "False",
    "CREWAI_DISABLE_TELEMETRY": "true",
    "HF_HUB_DISABLE_TELEMETRY": "1",
}
"""Defaults only: a value already in the environment (e.g. from the credentials Secret) wins, so
an install can deliberately turn something back on."""


def bundled_tiktoken_cache() -> str | None:
    """litellm's bundled tiktoken cache (cl100k_base, o200k_base, ... named as tiktoken's own
    cache names them), located without importing litellm; None when absent."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "litellm_core_utils" / "tokenizers"
        if candidate.is_dir():
            return str(candidate)
    return None


def _writable(path: str | None) -> bool:
    return bool(path) and os.path.isdir(path or "") and os.access(path or "", os.W_OK)


def prepare_environment(env: MutableMapping[str, str]) -> None:
    """Set telemetry opt-outs, TMPDIR/HOME/XDG dirs, the tiktoken cache and LLM URL aliases."""
    for key, value in TELEMETRY_OFF.items():
        env.setdefault(key, value)
    tmp = env.get("TMPDIR") or TMP_DIR
    env["TMPDIR"] = tmp
    if not _writable(env.get("HOME")):
        # Read-only root filesystem and a uid without a home: everything under TMPDIR.
        env["HOME"] = tmp
        for key, sub in (
            ("XDG_CACHE_HOME", ".cache"),
            ("XDG_CONFIG_HOME", ".config"),
            ("XDG_DATA_HOME", ".local/share"),
        ):
            env.setdefault(key, os.path.join(tmp, sub))
    if not env.get("TIKTOKEN_CACHE_DIR"):
        # Without it praisonaiagents downloads a tokenizer file at start (stalls offline).
        cache = bundled_tiktoken_cache()
        if cache:
            env["TIKTOKEN_CACHE_DIR"] = cache
    # The OpenAI SDK reads OPENAI_BASE_URL, litellm and older code OPENAI_API_BASE.
    base = env.get("OPENAI_BASE_URL") or env.get("OPENAI_API_BASE")
    if base:
        env.setdefault("OPENAI_BASE_URL", base)
        env.setdefault("OPENAI_API_BASE", base)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    # Bytecode is precompiled in the image; writing .pyc on a read-only root only fails.
    sys.dont_write_bytecode = True

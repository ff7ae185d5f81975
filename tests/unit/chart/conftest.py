"""Fixtures for the Helm chart tests: the real helm binary and rendered manifests.

helm comes from tools/install-kube-tools (into .tools/bin). Without it these tests FAIL, naming
the install script: a chart that is never rendered in CI is a chart that silently rots.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from chart_manifests import Manifest, find_helm, helm_template

Render = Callable[..., list[Manifest]]


@pytest.fixture(scope="session")
def helm() -> str:
    return find_helm()


@pytest.fixture(scope="session")
def render(helm: str) -> Render:
    """``render(*values_files, sets=(...))`` -> the rendered documents (memoised per session)."""
    cache: dict[tuple[Any, ...], list[Manifest]] = {}

    def _render(*values_files: Path, sets: tuple[str, ...] = ()) -> list[Manifest]:
        key = (values_files, sets)
        if key not in cache:
            cache[key] = helm_template(helm, values_files=values_files, sets=sets)
        return cache[key]

    return _render


@pytest.fixture(scope="session")
def default_docs(render: Render) -> list[Manifest]:
    return render()

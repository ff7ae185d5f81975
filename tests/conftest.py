"""Suite-wide options. The ``e2e`` marker is opt-in and never skipped silently when asked for."""

from __future__ import annotations

import os

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--e2e",
        action="store_true",
        default=False,
        help="run end-to-end tests against a real cluster (KUBECONFIG, AGENTRUN_E2E_IMAGE)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--e2e"):
        # Asked for: missing prerequisites must fail loudly, not skip.
        missing = [v for v in ("KUBECONFIG", "AGENTRUN_E2E_IMAGE") if not os.environ.get(v)]
        if missing:
            raise pytest.UsageError(
                f"--e2e needs {', '.join(missing)} set (a real cluster and a runner image)"
            )
        return
    skip = pytest.mark.skip(reason="end-to-end: opt in with --e2e (needs a real cluster)")
    for item in items:
        if "e2e" in item.keywords:
            item.add_marker(skip)

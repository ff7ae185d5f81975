"""Fixtures: a real webhook receiver on 127.0.0.1 verifying signatures with standardwebhooks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from agentrun_webhooks.receiver import WebhookReceiver


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    instance = WebhookReceiver().start()
    try:
        yield instance
    finally:
        instance.stop()

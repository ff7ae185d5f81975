"""kopf app for the webhook integration tests: only the webhook handlers (run with ``kopf run``,
never imported by pytest). Settings come from AGENTRUN_OPERATOR_* like the real operator's."""

from __future__ import annotations

import logging
from typing import Any

import kopf
from agentrun_operator import webhook_handlers  # noqa: F401 - registers the handlers


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.StatusProgressStorage(field="status.kopf.progress")
    settings.persistence.diffbase_storage = kopf.StatusDiffBaseStorage(field="status.kopf.diffbase")
    settings.peering.standalone = True
    settings.watching.server_timeout = 5
    settings.posting.level = logging.WARNING

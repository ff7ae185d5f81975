"""Shared fakes of the operator's unit tests."""

from __future__ import annotations

import copy
import json
from typing import Any


class Raw:
    """A raw (``_preload_content=False``) response of the Kubernetes client."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.status = 200
        self.reason = "OK"
        self.body = body

    async def json(self) -> dict[str, Any]:
        return copy.deepcopy(self.body)

    async def text(self) -> str:
        return json.dumps(self.body)

    def release(self) -> None:
        return None

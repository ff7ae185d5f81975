"""Typed Kubernetes errors: what callers retry and what is final."""

from __future__ import annotations

import json

import pytest
from agentrun_kube import errors
from kubernetes_asyncio.client.exceptions import ApiException


def _exc(status: int, reason: str, message: str) -> ApiException:
    exc = ApiException(status=status, reason="x")
    exc.body = json.dumps({"kind": "Status", "reason": reason, "message": message})
    return exc


@pytest.mark.parametrize(
    ("status", "reason", "message", "kind", "retryable"),
    [
        (404, "NotFound", 'agentruns "x" not found', errors.NotFound, False),
        (409, "AlreadyExists", 'agentruns "x" already exists', errors.AlreadyExists, False),
        (409, "Conflict", "the object has been modified", errors.Conflict, True),
        # the real apiserver's answer to a JSON-patch test that did not hold
        (422, "Invalid", "testing value /status/phase failed: test failed", errors.Conflict, True),
        (422, "Invalid", "spec.prompt: Required value", errors.Invalid, False),
        (410, "Expired", "too old resource version", errors.Gone, True),
        (503, "ServiceUnavailable", "etcd down", errors.Unavailable, True),
        (429, "TooManyRequests", "slow down", errors.Unavailable, True),
    ],
)
def test_mapping(
    status: int, reason: str, message: str, kind: type[errors.KubeError], retryable: bool
) -> None:
    mapped = errors.from_api_exception(_exc(status, reason, message))
    assert type(mapped) is kind
    assert mapped.retryable is retryable
    assert mapped.message == message


def test_body_that_is_not_json_keeps_the_reason() -> None:
    exc = ApiException(status=500, reason="Internal Server Error")
    exc.body = "<html>"
    mapped = errors.from_api_exception(exc)
    assert isinstance(mapped, errors.Unavailable)
    assert mapped.message == "Internal Server Error"

"""Kubernetes ``Status`` errors, worded as the real apiserver words them.

Every failure the emulator answers is an :class:`APIError`; the HTTP layer turns it into a
``meta/v1 Status`` body with the same ``code``, ``reason`` and ``details`` shape the real
apiserver sends (k8s.io/apimachinery/pkg/api/errors), so clients' typed error handling works.
"""

from __future__ import annotations

from typing import Any


class APIError(Exception):
    """A failed request: answered as a ``Status`` object with ``code`` as the HTTP status."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict[str, Any]:
        """The ``Status`` body for this error."""
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def qualified(group: str, plural: str) -> str:
    """``plural.group`` (or just ``plural`` for the core group), as messages name resources."""
    return f"{plural}.{group}" if group else plural


def not_found(group: str, plural: str, name: str) -> APIError:
    return APIError(
        404,
        "NotFound",
        f'{qualified(group, plural)} "{name}" not found',
        details={"name": name, "group": group, "kind": plural},
    )


def already_exists(group: str, plural: str, name: str) -> APIError:
    return APIError(
        409,
        "AlreadyExists",
        f'{qualified(group, plural)} "{name}" already exists',
        details={"name": name, "group": group, "kind": plural},
    )


def conflict(group: str, plural: str, name: str) -> APIError:
    """The optimistic-concurrency failure for a stale ``metadata.resourceVersion``."""
    return APIError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {qualified(group, plural)} "{name}": the object has '
        "been modified; please apply your changes to the latest version and try again",
        details={"name": name, "group": group, "kind": plural},
    )


def bad_request(message: str) -> APIError:
    return APIError(400, "BadRequest", message)


def method_not_allowed(
    message: str = "the server does not allow this method on the requested resource",
) -> APIError:
    return APIError(405, "MethodNotAllowed", message)


def page_not_found() -> APIError:
    return APIError(404, "NotFound", "the server could not find the requested resource")


def invalid(kind: str, group: str, name: str, causes: list[tuple[str, str]]) -> APIError:
    """422 Invalid listing field errors as ``field: message``, joined like the real server.

    ``causes`` holds ``(field, message)`` pairs, e.g. ``("spec.prompt", "Required value")``.
    The message reads ``AgentRun.agentrun.dev "x" is invalid: spec.prompt: Required value``
    (several causes are wrapped in ``[...]`` and comma-separated, as apimachinery does).
    """
    kind_group = f"{kind}.{group}" if group else kind
    rendered = [f"{field}: {msg}" if field else msg for field, msg in causes]
    joined = rendered[0] if len(rendered) == 1 else "[" + ", ".join(rendered) + "]"
    return APIError(
        422,
        "Invalid",
        f'{kind_group} "{name}" is invalid: {joined}',
        details={
            "name": name,
            "group": group,
            "kind": kind,
            "causes": [
                {"reason": _cause_reason(msg), "message": msg, "field": field}
                for field, msg in causes
            ],
        },
    )


def _cause_reason(message: str) -> str:
    if message.startswith("Required value"):
        return "FieldValueRequired"
    if message.startswith("Unsupported value"):
        return "FieldValueNotSupported"
    if message.startswith("Too long"):
        return "FieldValueTooLong"
    if message.startswith("Forbidden"):
        return "FieldValueForbidden"
    return "FieldValueInvalid"


def gone(message: str) -> APIError:
    """410 Expired: a watch or list from a resourceVersion older than the retained window."""
    return APIError(410, "Expired", message)

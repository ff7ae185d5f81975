"""Pod logs: the provider interface the fake kubelet implements, and the endpoint's rules.

``GET /api/v1/namespaces/{ns}/pods/{name}/log`` answers ``text/plain``. The bytes come from a
:class:`PodLogProvider` registered in the same process (the fake kubelet); without one the log
is empty but well-formed. Parameter handling mirrors the real kubelet/apiserver:

- ``container``: required when the pod has several containers (400 otherwise, real wording);
- a container that has not started yet -> 400 ``container "c" in pod "p" is waiting to start:
  ContainerCreating`` (or the waiting reason from its status);
- ``sinceTime`` (RFC3339, second resolution) and ``sinceSeconds`` are mutually exclusive;
- ``tailLines``, ``timestamps``, ``follow``, ``limitBytes`` (cut after that many bytes).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from .errors import APIError, bad_request


class PodLogProvider(Protocol):
    """Serves a container's log bytes (the kubelet's side of ``pods/log``).

    ``since_time``: only lines logged at or after it. ``tail_lines``: only the last N lines
    (applied before following). ``timestamps``: prefix each line with its RFC3339Nano time and a
    space. ``follow``: after the existing lines, keep yielding new ones until the container
    ends (or the consumer stops iterating).
    """

    def read_log(
        self,
        namespace: str,
        pod: str,
        container: str | None,
        *,
        follow: bool,
        since_time: datetime | None,
        tail_lines: int | None,
        timestamps: bool,
    ) -> AsyncIterator[bytes]: ...


class EmptyLogProvider:
    """The default: every log is empty."""

    async def read_log(
        self,
        namespace: str,
        pod: str,
        container: str | None,
        *,
        follow: bool,
        since_time: datetime | None,
        tail_lines: int | None,
        timestamps: bool,
    ) -> AsyncIterator[bytes]:
        return
        yield b""  # pragma: no cover - makes this an async generator


def parse_rfc3339(value: str) -> datetime:
    """Parse ``sinceTime``: RFC3339 with ``Z`` or an offset, fractional seconds allowed."""
    text = value.strip()
    if text.endswith("Z") or text.endswith("z"):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise bad_request(
            f'parsing time "{value}" as "2006-01-02T15:04:05Z07:00": cannot parse'
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def _bool(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1")


def _int(name: str, value: str | None) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise bad_request(f'strconv.ParseInt: parsing "{value}": invalid syntax ({name})') from None


class LogRequest:
    """The validated query of a pods/log request."""

    def __init__(self, query: dict[str, str], pod: dict[str, Any]) -> None:
        meta, spec, status = pod["metadata"], pod.get("spec") or {}, pod.get("status") or {}
        containers = [c.get("name") for c in spec.get("containers") or []]
        self.container = query.get("container") or None
        if self.container is None:
            if len(containers) > 1:
                raise bad_request(
                    f"a container name must be specified for pod {meta['name']}, choose one of: "
                    f"[{' '.join(str(c) for c in containers)}]"
                )
            self.container = containers[0] if containers else None
        elif containers and self.container not in containers:
            raise bad_request(f"container {self.container} is not valid for pod {meta['name']}")
        self.follow = _bool(query.get("follow"))
        self.timestamps = _bool(query.get("timestamps"))
        self.tail_lines = _int("tailLines", query.get("tailLines"))
        self.limit_bytes = _int("limitBytes", query.get("limitBytes"))
        since_seconds = _int("sinceSeconds", query.get("sinceSeconds"))
        since_time = query.get("sinceTime")
        if since_seconds is not None and since_time:
            raise APIError(
                422,
                "Invalid",
                'PodLogOptions "" is invalid: []: Forbidden: at most one of `sinceTime` or '
                "`sinceSeconds` may be specified",
            )
        if self.tail_lines is not None and self.tail_lines < 0:
            raise APIError(
                422,
                "Invalid",
                'PodLogOptions "" is invalid: tailLines: Invalid value: '
                f"{self.tail_lines}: must be greater than or equal to 0",
            )
        self.since: datetime | None = None
        if since_time:
            # sinceTime has second resolution (metav1.Time).
            self.since = parse_rfc3339(since_time).replace(microsecond=0)
        elif since_seconds is not None:
            if since_seconds < 1:
                raise APIError(
                    422,
                    "Invalid",
                    'PodLogOptions "" is invalid: sinceSeconds: Invalid '
                    "value: must be greater than 0",
                )
            self.since = datetime.now(UTC) - timedelta(seconds=since_seconds)
        self._check_started(meta["name"], status)

    def _check_started(self, pod_name: str, status: dict[str, Any]) -> None:
        """A container that never ran has no log: the real kubelet answers 400."""
        for cs in status.get("containerStatuses") or []:
            if cs.get("name") != self.container:
                continue
            state = cs.get("state") or {}
            last = cs.get("lastState") or {}
            if "waiting" in state and "terminated" not in last:
                reason = (state.get("waiting") or {}).get("reason") or "ContainerCreating"
                raise bad_request(
                    f'container "{self.container}" in pod "{pod_name}" is waiting to start: {reason}'
                )
            return
        # No status for the container yet: it has not been started.
        if status.get("phase", "Pending") == "Pending":
            raise bad_request(
                f'container "{self.container}" in pod "{pod_name}" is waiting to start: '
                "ContainerCreating"
            )

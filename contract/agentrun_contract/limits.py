"""Fixed bounds from shared/CONTRACT.md. Limits an install configures live in settings, not here."""

from typing import Final

KIB: Final = 1024

PROMPT_MAX_BYTES: Final = 64 * KIB
"""`prompt`: at most 64 KiB of UTF-8."""

AGENT_YAML_MAX_BYTES: Final = 64 * KIB
"""Inline `agent_yaml`: at most 64 KiB of UTF-8."""

AGENT_FILE_MAX_CHARS: Final = 255
"""`agent_file`: a relative path inside the runner's agent directory."""

SESSION_ID_MAX_CHARS: Final = 256
WEBHOOK_URL_MAX_CHARS: Final = 2048
FRAMEWORK_MAX_CHARS: Final = 63

TIMEOUT_MIN_SECONDS: Final = 1
TIMEOUT_DEFAULT_SECONDS: Final = 3600
TIMEOUT_CONFIGURED_MAX_DEFAULT: Final = 86400
TIMEOUT_ABSOLUTE_MAX_SECONDS: Final = 7 * 86400
"""The CRD's absolute ceiling; an install's configured maximum (default 1 day) is lower."""

NAME_MAX_CHARS: Final = 52
"""AgentRun names, so that Job (name) and pod (name + 6) names fit in 63."""

IDEMPOTENCY_KEY_MAX_CHARS: Final = 255

RESULT_MAX_BYTES: Final = 512 * KIB
"""The full result, stored in the run's AgentRunResult."""

RESULT_EXCERPT_MAX_BYTES: Final = 4 * KIB
"""`status.resultExcerpt`, and the `result` of a `complete` event."""

TRANSCRIPT_CAP_DEFAULT_BYTES: Final = 256 * KIB
"""Per-run transcript cap (configurable); past it the head and the tail are kept."""

WEBHOOK_PAYLOAD_MAX_BYTES: Final = 20 * 1000
"""A webhook body stays under 20 KB; a longer result is cut with `result_truncated: true`."""

MESSAGE_MAX_CHARS: Final = 4096
"""`status.message` and `error` sentences."""

TERMINATION_MESSAGE_MAX_BYTES: Final = 4096
"""What Kubernetes keeps of a container's termination message."""

"""Parse and validate the body of ``POST /api/v1/runs`` (pure; no I/O but the webhook check).

Rules: shared/CONTRACT.md, "Body of POST /runs". The status code of each failure is the
contract's: 400 for the prompt, malformed JSON and the Idempotency-Key; 422 for every other
invalid field. (413 and 415 are decided before the body is parsed, in the route.)
Fields the contract does not name are ignored, as upstream does (e.g. PraisonAI's client sends
``idempotency_scope``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final

from agentrun_contract import limits, names

DEFAULT_AGENT_FILE: Final = "agents.yaml"
DEFAULT_FRAMEWORK: Final = "praisonai"

_WINDOWS_DRIVE: Final = re.compile(r"^[A-Za-z]:")


class SubmissionError(Exception):
    """A request the API refuses; ``detail`` is a sentence a person can act on."""

    def __init__(self, status_code: int, detail: str, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.retry_after = retry_after
        """Seconds for a Retry-After header (503s)."""


@dataclass(frozen=True)
class SubmitRequest:
    """A validated submission with defaults applied: exactly what the AgentRun's spec gets."""

    prompt: str
    agent_file: str | None
    agent_yaml: str | None
    framework: str
    timeout: int
    webhook_url: str | None
    session_id: str | None
    idempotency_key: str | None

    def fingerprint_fields(self) -> dict[str, Any]:
        """What makes two submissions "the same request": everything but the key itself."""
        fields = asdict(self)
        del fields["idempotency_key"]
        return fields


def _bad(detail: str) -> SubmissionError:
    return SubmissionError(400, detail)


def _invalid(detail: str) -> SubmissionError:
    return SubmissionError(422, detail)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def decode_json_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object, or a 400 that says what is wrong with it."""
    if not body.strip():
        raise _bad('The request body is empty; send a JSON object such as {"prompt": "..."}.')
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad("The request body is not valid UTF-8; send UTF-8 encoded JSON.") from exc
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except RecursionError as exc:
        raise _bad("The request body is nested too deeply; send a flat JSON object.") from exc
    except ValueError as exc:
        raise _bad(f"The request body is not valid JSON ({exc}); send a JSON object.") from exc
    if not isinstance(value, dict):
        raise _bad(
            f"The request body must be a JSON object, not {type(value).__name__}; "
            'send {"prompt": "..."}.'
        )
    return value


def _is_unicode(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _optional_string(body: Mapping[str, Any], field: str) -> str | None:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _invalid(f"`{field}` must be a string, not {type(value).__name__}.")
    if not _is_unicode(value):
        raise _invalid(f"`{field}` contains invalid Unicode (a lone surrogate); send valid text.")
    return value


def _validate_prompt(body: Mapping[str, Any]) -> str:
    if "prompt" not in body or body["prompt"] is None:
        raise _bad("`prompt` is required: send the task for the agent as a string.")
    prompt = body["prompt"]
    if not isinstance(prompt, str):
        raise _bad(f"`prompt` must be a string, not {type(prompt).__name__}.")
    if not prompt.strip():
        raise _bad("`prompt` is blank: send the task for the agent.")
    if not _is_unicode(prompt):
        raise _bad("`prompt` contains invalid Unicode (a lone surrogate); send valid text.")
    size = len(prompt.encode("utf-8"))
    if size > limits.PROMPT_MAX_BYTES:
        raise _invalid(
            f"`prompt` is {size} bytes of UTF-8; the limit is {limits.PROMPT_MAX_BYTES} "
            "(64 KiB). Shorten it or move the material into the agent's files."
        )
    return prompt


def resolve_idempotency_key(header_key: str | None, body: Mapping[str, Any]) -> str | None:
    """The run's key: the header wins; a body key alone is accepted; both but different is 400."""
    body_key = body.get("idempotency_key")
    if body_key is not None and not isinstance(body_key, str):
        raise _bad(f"`idempotency_key` must be a string, not {type(body_key).__name__}.")
    for source, key in (("Idempotency-Key header", header_key), ("`idempotency_key`", body_key)):
        if key is None:
            continue
        try:
            names.validate_idempotency_key(key)
        except names.InvalidIdempotencyKey as exc:
            raise _bad(f"The {source} is invalid: {exc}.") from exc
    if header_key is not None and body_key is not None and header_key != body_key:
        raise _bad(
            "The Idempotency-Key header and the body's `idempotency_key` differ; send one, or "
            "the same value in both."
        )
    return header_key if header_key is not None else body_key


def _validate_agent_file(value: str) -> str:
    if not value:
        raise _invalid("`agent_file` is empty; omit it to use agents.yaml.")
    if len(value) > limits.AGENT_FILE_MAX_CHARS:
        raise _invalid(f"`agent_file` is longer than {limits.AGENT_FILE_MAX_CHARS} characters.")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise _invalid("`agent_file` contains control characters; give a plain relative path.")
    if value.startswith(("/", "\\")) or _WINDOWS_DRIVE.match(value):
        raise _invalid(
            f"`agent_file` must be a path relative to the agent directory, not absolute "
            f"({value!r}); e.g. agents.yaml or team/agents.yaml."
        )
    if ".." in re.split(r"[/\\]", value):
        raise _invalid("`agent_file` must stay inside the agent directory: '..' is not allowed.")
    return value


def _validate_timeout(body: Mapping[str, Any], timeout_max: int) -> int:
    value = body.get("timeout")
    if value is None:
        return limits.TIMEOUT_DEFAULT_SECONDS
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(f"`timeout` must be an integer number of seconds, not {value!r}.")
    if not limits.TIMEOUT_MIN_SECONDS <= value <= timeout_max:
        raise _invalid(
            f"`timeout` must be between {limits.TIMEOUT_MIN_SECONDS} and {timeout_max} seconds; "
            f"got {value}."
        )
    return value


def _refuse_unsupported(body: Mapping[str, Any]) -> None:
    for field in ("recipe_name", "recipe_config"):
        if body.get(field) is not None:
            raise _invalid(
                f"`{field}` is not supported by this server: recipes are not run here. "
                "Use `agent_file` or `agent_yaml` instead."
            )
    config = body.get("config")
    if config is not None and config != {} and config != []:
        raise _invalid(
            "`config` is not supported by this server and would be ignored; remove it "
            "(put agent settings in `agent_yaml` or the agent file)."
        )


def parse_submission(
    body: Mapping[str, Any],
    *,
    header_key: str | None,
    frameworks: Sequence[str],
    timeout_max: int,
) -> SubmitRequest:
    """Validate a decoded body; defaults applied. Raises :class:`SubmissionError`.

    400s first (prompt, key), then 422s, so a request with several faults gets the contract's
    most specific answer for the prompt and the key.
    """
    prompt = _validate_prompt(body)
    key = resolve_idempotency_key(header_key, body)
    _refuse_unsupported(body)

    agent_yaml = _optional_string(body, "agent_yaml")
    if agent_yaml is not None:
        size = len(agent_yaml.encode("utf-8"))
        if size > limits.AGENT_YAML_MAX_BYTES:
            raise _invalid(
                f"`agent_yaml` is {size} bytes; the limit is {limits.AGENT_YAML_MAX_BYTES} "
                "(64 KiB)."
            )
        if not agent_yaml.strip():
            raise _invalid("`agent_yaml` is blank; omit it or send the agents' YAML.")
    agent_file = _optional_string(body, "agent_file")
    if agent_file is not None:
        agent_file = _validate_agent_file(agent_file)
        if agent_yaml is not None:
            raise _invalid("Send `agent_file` or `agent_yaml`, not both.")
    elif agent_yaml is None:
        agent_file = DEFAULT_AGENT_FILE

    framework = _optional_string(body, "framework")
    if framework is None:
        framework = DEFAULT_FRAMEWORK
    if framework not in frameworks:
        allowed = ", ".join(sorted(frameworks))
        raise _invalid(f"`framework` {framework!r} is not allowed here; use one of: {allowed}.")

    timeout = _validate_timeout(body, timeout_max)

    webhook_url = _optional_string(body, "webhook_url")
    if webhook_url is not None and len(webhook_url) > limits.WEBHOOK_URL_MAX_CHARS:
        raise _invalid(f"`webhook_url` is longer than {limits.WEBHOOK_URL_MAX_CHARS} characters.")

    session_id = _optional_string(body, "session_id")
    if session_id is not None and len(session_id) > limits.SESSION_ID_MAX_CHARS:
        raise _invalid(
            f"`session_id` is longer than {limits.SESSION_ID_MAX_CHARS} characters; use a "
            "shorter identifier."
        )

    return SubmitRequest(
        prompt=prompt,
        agent_file=agent_file,
        agent_yaml=agent_yaml,
        framework=framework,
        timeout=timeout,
        webhook_url=webhook_url,
        session_id=session_id,
        idempotency_key=key,
    )

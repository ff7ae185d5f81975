"""Names, labels, annotations and id derivation, shared by the API, the operator and kubectl users.

- An API-created AgentRun is ``run-<suffix>`` and its ``job_id`` is ``run_<suffix>``.
- With an Idempotency-Key the suffix is derived from (namespace, key), so two API replicas racing on
  one key create one AgentRun: Kubernetes' AlreadyExists is the lock.
- A kubectl-created AgentRun under any other name has ``job_id`` = its name.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from typing import Final

from agentrun_contract import limits

DOMAIN: Final = "agentrun.dev"

RUN_NAME_PREFIX: Final = "run-"
JOB_ID_PREFIX: Final = "run_"
SUFFIX_CHARS: Final = 24
"""120 bits of base32: collisions are not a concern, and ``run-`` + 24 fits in 52."""

# Labels
LABEL_RUN: Final = f"{DOMAIN}/run"
"""On every object owned by a run (Job, pod, Secret, transcript chunks, result): the run's name."""
LABEL_SESSION: Final = f"{DOMAIN}/session"
"""On AgentRuns: :func:`session_label_value` of ``spec.sessionId``."""
LABEL_SUBMITTER: Final = f"{DOMAIN}/submitter"
"""On AgentRuns made through the API with auth on: :func:`submitter_label_value` of the
submitting token's name. The API shows a run only to that token and to the admin tokens; a run
without it (kubectl-made, or submitted with auth off) is visible to admin tokens only."""
LABEL_PHASE: Final = f"{DOMAIN}/phase"
"""On AgentRuns: the phase, lowercase (written by the operator, as it owns the phase)."""
LABEL_COMPONENT: Final = f"{DOMAIN}/component"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
MANAGED_BY: Final = "agentrun"

# Annotations
ANNOTATION_IDEMPOTENCY_KEY: Final = f"{DOMAIN}/idempotency-key"
ANNOTATION_FINGERPRINT: Final = f"{DOMAIN}/fingerprint"
ANNOTATION_SUBMITTED_BY: Final = f"{DOMAIN}/submitted-by"
"""The name of the API token that submitted the run (never the token)."""
ANNOTATION_REDELIVER: Final = f"{DOMAIN}/redeliver"
"""``kubectl annotate agentrun NAME agentrun.dev/redeliver=<new value>`` re-sends the webhook."""

FINALIZER: Final = f"{DOMAIN}/operator"


class InvalidIdempotencyKey(ValueError):
    """The key is not 1 to 255 printable ASCII characters."""


def validate_idempotency_key(key: str) -> str:
    """Return the key if it is 1..255 printable ASCII characters (0x20..0x7E), else raise."""
    if not 1 <= len(key) <= limits.IDEMPOTENCY_KEY_MAX_CHARS:
        raise InvalidIdempotencyKey(
            f"Idempotency-Key must be 1 to {limits.IDEMPOTENCY_KEY_MAX_CHARS} characters"
        )
    if any(not (0x20 <= ord(c) <= 0x7E) for c in key):
        raise InvalidIdempotencyKey("Idempotency-Key must be printable ASCII (0x20-0x7E)")
    return key


def _b32(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").lower().rstrip("=")


def suffix_from_key(namespace: str, key: str, scope: str | None = None) -> str:
    """Deterministic suffix for an Idempotency-Key, scoped to the namespace and, when given, to
    ``scope`` (the submitting token's name: each token has its own key space)."""
    material = f"{namespace}\x00{key}" if scope is None else f"{namespace}\x00{scope}\x00{key}"
    digest = hashlib.sha256(material.encode()).digest()
    return _b32(digest)[:SUFFIX_CHARS]


def random_suffix() -> str:
    return _b32(secrets.token_bytes(16))[:SUFFIX_CHARS]


def run_name_for_suffix(suffix: str) -> str:
    return f"{RUN_NAME_PREFIX}{suffix}"


def run_name_for_key(namespace: str, key: str | None, scope: str | None = None) -> str:
    """The AgentRun name: derived from the key (and ``scope``) when there is one, random
    otherwise."""
    suffix = suffix_from_key(namespace, key, scope) if key is not None else random_suffix()
    return run_name_for_suffix(suffix)


def job_id_for_run_name(name: str) -> str:
    """``run-<suffix>`` → ``run_<suffix>``; any other (kubectl-made) name is its own job_id."""
    if name.startswith(RUN_NAME_PREFIX):
        return JOB_ID_PREFIX + name[len(RUN_NAME_PREFIX) :]
    return name


def run_name_for_job_id(job_id: str) -> str:
    """Inverse of :func:`job_id_for_run_name`. Kubernetes names have no underscores, so a
    ``run_`` prefix can only come from :func:`job_id_for_run_name`."""
    if job_id.startswith(JOB_ID_PREFIX):
        return RUN_NAME_PREFIX + job_id[len(JOB_ID_PREFIX) :]
    return job_id


def session_label_value(session_id: str) -> str:
    """Label values are at most 63 characters of a restricted set: store a hash."""
    return hashlib.sha256(session_id.encode()).hexdigest()[:40]


def submitter_label_value(token_name: str) -> str:
    """The :data:`LABEL_SUBMITTER` value of a token name (any string): a hash, as for sessions."""
    return hashlib.sha256(token_name.encode()).hexdigest()[:40]


# Names of the objects a run owns. A run name is at most 52 characters.
def job_name(run_name: str) -> str:
    return run_name


def input_secret_name(run_name: str) -> str:
    """The Secret holding the prompt (and inline agent YAML) as files."""
    return f"{run_name}-input"


def result_name(run_name: str) -> str:
    return f"{run_name}-result"


def transcript_chunk_name(run_name: str, index: int) -> str:
    return f"{run_name}-t{index:05d}"


def transcript_gap_name(run_name: str) -> str:
    return f"{run_name}-tgap"

"""The request fingerprint: SHA-256 of the canonical JSON of the validated request.

Defaults are applied before hashing, so the seed's curl (which omits framework) and PraisonAI's
client (which always sends framework and timeout) fingerprint alike. The key itself is left
out: it is what the fingerprint is compared under.
"""

from __future__ import annotations

import hashlib
import json

from agentrun_api.submission import SubmitRequest

FINGERPRINT_VERSION = "v1"
"""Prefix of the stored value, so a future change of the canonical form is recognisable."""


def canonical_json(request: SubmitRequest) -> bytes:
    """Sorted keys, no whitespace, UTF-8 (not ASCII-escaped): one byte string per request."""
    return json.dumps(
        request.fingerprint_fields(), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")


def request_fingerprint(request: SubmitRequest) -> str:
    """``v1:<hex sha256>``, stored in the agentrun.dev/fingerprint annotation."""
    return f"{FINGERPRINT_VERSION}:{hashlib.sha256(canonical_json(request)).hexdigest()}"

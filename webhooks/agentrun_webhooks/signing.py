"""Standard Webhooks headers (https://www.standardwebhooks.com/), signed with the
``standardwebhooks`` library.

- ``webhook-id``: one id per delivery (``msg_`` + 27 random base62-ish characters), the same on
  every attempt and on a redelivery by annotation, so receivers can de-duplicate;
- ``webhook-timestamp``: seconds since the epoch, of this attempt (so a retry hours later is
  still within the receiver's tolerance window, 5 minutes in the library);
- ``webhook-signature``: one ``v1,<base64 HMAC-SHA256>`` per configured secret, separated by
  spaces; during a key rotation the receiver accepts whichever of its secrets matches.

Without any secret the headers carry no ``webhook-signature`` (the contract signs "when a
signing secret is configured").
"""

from __future__ import annotations

import base64
import secrets as random_secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from standardwebhooks import Webhook

from agentrun_webhooks.settings import WebhookDeliverySettings

SECRET_PREFIX: Final = "whsec_"
CONTENT_TYPE: Final = "application/json"


class InvalidSigningSecret(ValueError):
    """A configured signing secret is not ``whsec_<base64>`` (or plain base64). Final: fix the
    Secret (e.g. generate one with ``python -c "import secrets,base64;
    print('whsec_'+base64.b64encode(secrets.token_bytes(32)).decode())"``)."""


def new_webhook_id() -> str:
    """A fresh ``webhook-id`` (Standard Webhooks' style: ``msg_`` and a random token)."""
    return "msg_" + random_secrets.token_urlsafe(20).replace("-", "a").replace("_", "b")


def generate_secret() -> str:
    """A new ``whsec_`` secret of 32 random bytes (what the README tells people to create)."""
    return SECRET_PREFIX + base64.b64encode(random_secrets.token_bytes(32)).decode("ascii")


def _signer(secret: str, where: str) -> Webhook:
    raw = secret.strip()
    body = raw[len(SECRET_PREFIX) :] if raw.startswith(SECRET_PREFIX) else raw
    try:
        unpadded = body.rstrip("=")
        base64.b64decode(unpadded + "=" * (-len(unpadded) % 4), validate=True)
        return Webhook(raw)
    except Exception as exc:  # binascii.Error, EmptyWebhookSecretError, RuntimeError
        raise InvalidSigningSecret(
            f"signing secret {where} is not 'whsec_<base64>' or base64 ({type(exc).__name__}); "
            "put a secret made like 'whsec_' + base64 of 32 random bytes in the Secret"
        ) from exc


def load_signing_secrets(settings: WebhookDeliverySettings) -> list[str]:
    """Every configured secret: files of ``signing_secrets_dir`` (sorted by name; names starting
    with '.' are skipped, which covers Kubernetes' ``..data`` bookkeeping), then
    ``signing_secrets``. Empty files are skipped. Raises InvalidSigningSecret for a bad one.

    Blocking file I/O: call it with ``asyncio.to_thread`` from async code."""
    found: list[str] = []
    directory = settings.signing_secrets_dir
    if directory is not None and directory.is_dir():
        for path in sorted(Path(directory).iterdir()):
            if path.name.startswith(".") or not path.is_file():
                continue
            value = path.read_text(encoding="utf-8").strip()
            if value:
                _signer(value, f"file {path.name}")
                found.append(value)
    for index, secret in enumerate(settings.signing_secrets):
        value = secret.get_secret_value().strip()
        if value:
            _signer(value, f"#{index} of signing_secrets")
            found.append(value)
    return found


def sign_headers(
    webhook_id: str, body: bytes, secrets: Sequence[str], now: datetime
) -> dict[str, str]:
    """The Standard Webhooks headers (plus Content-Type) of one attempt sending ``body``."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    now = now.astimezone(UTC)
    headers = {
        "content-type": CONTENT_TYPE,
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(now.timestamp())),
    }
    if secrets:
        text = body.decode("utf-8")
        # The library signs floor(timestamp) of a datetime it treats as UTC: pass UTC.
        signatures = [
            _signer(secret, f"#{i}").sign(webhook_id, now, text) for i, secret in enumerate(secrets)
        ]
        headers["webhook-signature"] = " ".join(signatures)
    return headers

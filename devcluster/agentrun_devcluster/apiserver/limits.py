"""The real size limits, with the real apiserver's answers.

- Request bodies over 3 MiB: 413 ``Request entity too large: limit is 3145728``
  (apiserver ``--max-request-body-bytes`` default, k8s.io/apiserver/pkg/server/config.go).
- ``metadata.annotations`` over 256 KiB in total (keys + values): 422
  ``metadata.annotations: Too long: must have at most 262144 bytes``
  (apimachinery/pkg/api/validation/objectmeta.go, TotalAnnotationSizeLimitB).
- ConfigMap/Secret data over 1 MiB (1048576 bytes, data + binaryData): 422
  ``data: Too long: must have at most 1048576 bytes`` (core/validation, MaxSecretSize).
- A stored object over 1.5 MiB is refused by etcd (``--max-request-bytes`` 1.5 MiB default); the
  apiserver passes the etcd error through as 500 ``etcdserver: request is too large``, which
  is what a client of a real cluster sees.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from . import errors

MAX_REQUEST_BODY_BYTES = 3 * 1024 * 1024
MAX_ANNOTATIONS_BYTES = 256 * 1024
MAX_CONFIG_DATA_BYTES = 1024 * 1024
MAX_OBJECT_BYTES = 1536 * 1024


def check_sizes(kind: str, group: str, obj: dict[str, Any]) -> None:
    """Raise the real error when ``obj`` breaks an admission size limit.

    The 1.5 MiB object limit is etcd's, enforced where objects are stored (state.py).
    """
    meta = obj.get("metadata") or {}
    name = str(meta.get("name", ""))
    annotations = meta.get("annotations") or {}
    total = sum(len(str(k)) + len(str(v)) for k, v in annotations.items())
    if total > MAX_ANNOTATIONS_BYTES:
        raise errors.invalid(
            kind,
            group,
            name,
            [
                (
                    "metadata.annotations",
                    f"Too long: must have at most {MAX_ANNOTATIONS_BYTES} bytes",
                )
            ],
        )
    if group == "" and kind in ("ConfigMap", "Secret"):
        size = 0
        for field in ("data", "binaryData", "stringData"):
            for value in (obj.get(field) or {}).values():
                text = str(value)
                if (kind == "Secret" and field == "data") or field == "binaryData":
                    try:
                        size += len(base64.b64decode(text, validate=False))
                    except ValueError:
                        size += len(text)
                else:
                    size += len(text.encode())
        if size > MAX_CONFIG_DATA_BYTES:
            field = "data" if kind == "Secret" else ""
            raise errors.invalid(
                kind,
                group,
                name,
                [(field, f"Too long: must have at most {MAX_CONFIG_DATA_BYTES} bytes")],
            )


def encoded_size(obj: dict[str, Any]) -> int:
    """The object's size as stored (compact JSON; etcd holds protobuf, of similar size)."""
    return len(json.dumps(obj, separators=(",", ":")))

"""Generate the CustomResourceDefinitions from the typed models.

``agentrun crd`` (or ``python -m agentrun_contract.crd``) writes deploy/crds/agentrun.dev.yaml;
the Helm chart templates the same file, and tests/unit/test_crd.py fails when the committed file
drifts from the models.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any, Final

import yaml
from pydantic import BaseModel

from agentrun_contract import limits, names, resource

CRD_FILE: Final = Path("deploy/crds/agentrun.dev.yaml")
CHART_CRD_FILE: Final = Path("charts/agentrun/files/crds.yaml")
"""The Helm chart's copy (a chart cannot read files outside its directory); kept identical."""

_DROP_KEYS: Final = {"title", "discriminator"}


def _structural(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Turn a pydantic JSON Schema node into a Kubernetes structural schema node.

    Inlines ``$ref``, turns ``X | None`` into an optional ``X``, drops titles, and maps pydantic's
    ``const``/``Literal`` to ``enum``.
    """
    node = copy.deepcopy(schema)
    if "$ref" in node:
        ref = node.pop("$ref").split("/")[-1]
        merged = {**copy.deepcopy(defs[ref]), **node}
        return _structural(merged, defs)
    if "anyOf" in node:
        options = [o for o in node.pop("anyOf") if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"unsupported union in CRD schema: {options}")
        inner = _structural(options[0], defs)
        # keep the outer description/default
        inner.update({k: v for k, v in node.items() if k not in _DROP_KEYS})
        node = inner
    if "const" in node:
        node["enum"] = [node.pop("const")]
    for key in _DROP_KEYS:
        node.pop(key, None)
    if node.get("default") is None:
        node.pop("default", None)
    if "properties" in node:
        node["properties"] = {k: _structural(v, defs) for k, v in node["properties"].items()}
        if not node["properties"] and node.get("x-kubernetes-preserve-unknown-fields"):
            node.pop("properties")
    if "items" in node:
        node["items"] = _structural(node["items"], defs)
    if isinstance(node.get("additionalProperties"), dict):
        node["additionalProperties"] = _structural(node["additionalProperties"], defs)
    elif node.get("additionalProperties") is True:
        node.pop("additionalProperties")
    if node.get("type") == "object" and node.get("x-kubernetes-preserve-unknown-fields"):
        node.pop("additionalProperties", None)
    if node.get("type") == "integer" and node.get("maximum", 0) > 2**53:
        node.pop("maximum")
    if node.get("format") == "date-time" or node.get("format") == "uri":
        pass
    return node


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of ``model`` (by alias, as stored)."""
    raw = model.model_json_schema(by_alias=True, mode="serialization")
    defs = raw.pop("$defs", {})
    return _structural(raw, defs)


def _object_schema(spec: type[BaseModel], status: type[BaseModel] | None) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {
            "type": "object",
            "properties": {"name": {"type": "string", "maxLength": limits.NAME_MAX_CHARS}},
        },
        "spec": model_schema(spec),
    }
    if status is not None:
        properties["status"] = model_schema(status)
    return {"type": "object", "required": ["spec"], "properties": properties}


def _crd(
    *,
    kind: str,
    plural: str,
    singular: str,
    short_names: list[str],
    schema: dict[str, Any],
    status_subresource: bool,
    printer_columns: list[dict[str, Any]],
    description: str,
) -> dict[str, Any]:
    schema = {"description": description, **schema}
    version: dict[str, Any] = {
        "name": resource.VERSION,
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": schema},
        "additionalPrinterColumns": printer_columns,
    }
    if status_subresource:
        version["subresources"] = {"status": {}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{resource.GROUP}",
            "labels": {names.LABEL_MANAGED_BY: names.MANAGED_BY},
        },
        "spec": {
            "group": resource.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": singular,
                "shortNames": short_names,
                # Not "agentrun": kubectl expands a category before it maps a resource name, so
                # a category equal to AgentRun's singular made `kubectl get|annotate agentrun
                # NAME` fail ("you must specify only one resource"), on real clusters too.
                "categories": ["agentrun-all"],
            },
            "versions": [version],
        },
    }


def agentrun_crd() -> dict[str, Any]:
    columns: list[dict[str, Any]] = [
        {"name": "Status", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Reason", "type": "string", "jsonPath": ".status.reason", "priority": 1},
        {"name": "Session", "type": "string", "jsonPath": ".spec.sessionId"},
        {"name": "Duration", "type": "number", "jsonPath": ".status.durationSeconds"},
        {"name": "Webhook", "type": "string", "jsonPath": ".status.webhook.state"},
        {"name": "Job", "type": "string", "jsonPath": ".status.jobName", "priority": 1},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    return _crd(
        kind=resource.KIND,
        plural=resource.PLURAL,
        singular=resource.SINGULAR,
        short_names=list(resource.SHORT_NAMES),
        schema=_object_schema(resource.AgentRunSpec, resource.AgentRunStatus),
        status_subresource=True,
        printer_columns=columns,
        description="An agent task run as a Kubernetes Job. Spec by the API or kubectl; status "
        "by the operator only.",
    )


def transcript_crd() -> dict[str, Any]:
    columns: list[dict[str, Any]] = [
        {"name": "Run", "type": "string", "jsonPath": ".spec.runName"},
        {"name": "First", "type": "integer", "jsonPath": ".spec.firstEventId"},
        {"name": "Last", "type": "integer", "jsonPath": ".spec.lastEventId"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    return _crd(
        kind=resource.TRANSCRIPT_KIND,
        plural=resource.TRANSCRIPT_PLURAL,
        singular=resource.TRANSCRIPT_KIND.lower(),
        short_names=["artx"],
        schema=_object_schema(resource.AgentRunTranscriptSpec, None),
        status_subresource=False,
        printer_columns=columns,
        description="One chunk of an AgentRun's event transcript. Written by the operator only.",
    )


def result_crd() -> dict[str, Any]:
    columns: list[dict[str, Any]] = [
        {"name": "Run", "type": "string", "jsonPath": ".spec.runName"},
        {"name": "Bytes", "type": "integer", "jsonPath": ".spec.bytes"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    return _crd(
        kind=resource.RESULT_KIND,
        plural=resource.RESULT_PLURAL,
        singular=resource.RESULT_KIND.lower(),
        short_names=["arres"],
        schema=_object_schema(resource.AgentRunResultSpec, None),
        status_subresource=False,
        printer_columns=columns,
        description="The full result of a finished AgentRun. Written by the operator only.",
    )


def all_crds() -> list[dict[str, Any]]:
    return [agentrun_crd(), transcript_crd(), result_crd()]


def render_crds_yaml() -> str:
    header = "# Generated by `agentrun crd` from agentrun_contract.resource. Do not edit by hand.\n"
    body = yaml.safe_dump_all(all_crds(), sort_keys=False, width=100)
    return header + "---\n" + body


def main(argv: list[str] | None = None) -> int:
    """Write the CRDs to the given path, or '-' for stdout.

    Without a path: deploy/crds/agentrun.dev.yaml and the Helm chart's identical copy.
    """
    args = sys.argv[1:] if argv is None else argv
    targets = [args[0]] if args else [str(CRD_FILE), str(CHART_CRD_FILE)]
    text = render_crds_yaml()
    for target in targets:
        if target == "-":
            sys.stdout.write(text)
        else:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            Path(target).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Structural-schema handling (pruning, defaulting, validation, CEL) against the contract's CRDs."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from agentrun_devcluster.apiserver.errors import APIError
from agentrun_devcluster.apiserver.resources import ResourceType, resources_from_crd
from agentrun_devcluster.apiserver.schema import admit_object

CRD_FILE = Path(__file__).resolve().parents[3] / "deploy" / "crds" / "agentrun.dev.yaml"


def _types() -> dict[str, ResourceType]:
    docs = [d for d in yaml.safe_load_all(CRD_FILE.read_text()) if d]
    return {rt.plural: rt for doc in docs for rt in resources_from_crd(doc)}


TYPES = _types()
AGENTRUNS = TYPES["agentruns"]


def run(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "agentrun.dev/v1alpha1",
        "kind": "AgentRun",
        "metadata": {"name": "r", "namespace": "default"},
        "spec": {"prompt": "hello", **spec},
    }


def rejected(obj: dict[str, Any], old: dict[str, Any] | None = None) -> str:
    with pytest.raises(APIError) as info:
        admit_object(AGENTRUNS, obj, old)
    assert info.value.code == 422
    assert info.value.reason == "Invalid"
    return info.value.message


def test_defaults_applied_and_unknown_fields_pruned() -> None:
    obj = run(unknown="x")
    obj["extra"] = {"a": 1}
    obj["status"] = {
        "phase": "Running",
        "bogus": 1,
        "transcript": {},
        "kopf": {"anything": {"x": 1}},
    }
    admitted = admit_object(AGENTRUNS, obj, None)
    assert admitted["spec"] == {"prompt": "hello", "framework": "praisonai", "timeoutSeconds": 3600}
    assert "extra" not in admitted
    assert "bogus" not in admitted["status"]
    assert admitted["status"]["kopf"] == {"anything": {"x": 1}}  # preserve-unknown-fields
    assert admitted["status"]["transcript"]["runnerSeq"] == -1  # nested defaults
    assert obj["spec"]["unknown"] == "x"  # the input is not mutated


def test_null_of_non_nullable_field_is_dropped_then_defaulted() -> None:
    admitted = admit_object(AGENTRUNS, run(timeoutSeconds=None), None)
    assert admitted["spec"]["timeoutSeconds"] == 3600


def test_required_prompt_message_is_the_real_wording() -> None:
    obj = run()
    del obj["spec"]["prompt"]
    assert rejected(obj) == 'AgentRun.agentrun.dev "r" is invalid: spec.prompt: Required value'


def test_bounds_types_enums_and_lengths() -> None:
    assert (
        "spec.timeoutSeconds: Invalid value: 604801: spec.timeoutSeconds in body should be less than or equal to 604800"
        in rejected(run(timeoutSeconds=604801))
    )
    assert "should be greater than or equal to 1" in rejected(run(timeoutSeconds=0))
    assert (
        'spec.timeoutSeconds: Invalid value: "string": spec.timeoutSeconds in body must be of type integer: "string"'
        in rejected(run(timeoutSeconds="10"))
    )
    assert "spec.prompt: Too long: may not be more than 65536 bytes" in rejected(
        run(prompt="x" * 65537)
    )
    assert "should be at least 1 chars long" in rejected(run(prompt=""))
    bad_phase = run()
    bad_phase["status"] = {"phase": "Bogus"}
    assert (
        'status.phase: Unsupported value: "Bogus": supported values: "Queued", "Running"'
        in rejected(bad_phase)
    )
    # Booleans are not integers.
    assert "must be of type integer" in rejected(run(timeoutSeconds=True))


def test_several_errors_are_listed_together() -> None:
    message = rejected(run(timeoutSeconds=0, prompt=""))
    assert message.startswith('AgentRun.agentrun.dev "r" is invalid: [')
    assert "spec.prompt" in message
    assert "spec.timeoutSeconds" in message


def test_url_format_is_lenient_like_go() -> None:
    admit_object(AGENTRUNS, run(webhookUrl="https://example.com/hook?x=1"), None)
    admit_object(AGENTRUNS, run(webhookUrl="relative/path"), None)  # url.Parse accepts it
    assert "must be of type uri" in rejected(run(webhookUrl="http://exa mple.com/"))
    assert "must be of type uri" in rejected(run(webhookUrl="http://example.com/%zz"))


def test_date_time_format() -> None:
    ok = run()
    ok["status"] = {
        "startedAt": "2026-01-01T00:00:00Z",
        "completedAt": "2026-01-01T00:00:00.123456+02:00",
    }
    admit_object(AGENTRUNS, ok, None)
    bad = run()
    bad["status"] = {"startedAt": "yesterday"}
    assert "status.startedAt" in rejected(bad)


def test_metadata_name_max_length_from_schema() -> None:
    obj = run()
    obj["metadata"]["name"] = "a" * 53
    assert "metadata.name: Too long: may not be more than 52 bytes" in rejected(obj)


def test_cel_rule_on_create() -> None:
    message = rejected(run(agentFile="a.yaml", agentYaml="x: 1"))
    assert (
        'spec: Invalid value: "object": set spec.agentFile or spec.agentYaml, not both' in message
    )


def test_transition_rules_only_on_update() -> None:
    old = admit_object(AGENTRUNS, run(), None)
    # Immutable spec: a prompt change is refused on update...
    changed = copy.deepcopy(old)
    changed["spec"]["prompt"] = "other"
    assert "spec is immutable after creation, except spec.cancelRequested" in rejected(changed, old)
    # ...cancelRequested may be set...
    cancelled = copy.deepcopy(old)
    cancelled["spec"]["cancelRequested"] = True
    admitted = admit_object(AGENTRUNS, cancelled, old)
    # ...but never unset again.
    unset = copy.deepcopy(admitted)
    unset["spec"]["cancelRequested"] = False
    assert "spec.cancelRequested cannot be unset once true" in rejected(unset, admitted)
    # A status-only change passes the spec rules.
    with_status = copy.deepcopy(admitted)
    with_status["status"] = {"phase": "Running"}
    admit_object(AGENTRUNS, with_status, admitted)


def test_transcript_and_result_crds_validate() -> None:
    transcripts = TYPES["agentruntranscripts"]
    chunk = {
        "apiVersion": "agentrun.dev/v1alpha1",
        "kind": "AgentRunTranscript",
        "metadata": {"name": "r-0"},
        "spec": {"runName": "r", "index": 0, "firstEventId": 1, "lastEventId": 2},
    }
    admitted = admit_object(transcripts, chunk, None)
    assert admitted["spec"]["events"] == ""
    assert admitted["spec"]["sealed"] is False
    with pytest.raises(APIError) as info:
        admit_object(transcripts, dict(chunk, spec={"runName": "r"}), None)
    assert "spec.index: Required value" in info.value.message
    results = TYPES["agentrunresults"]
    with pytest.raises(APIError) as info:
        admit_object(
            results,
            {
                "apiVersion": "agentrun.dev/v1alpha1",
                "kind": "AgentRunResult",
                "metadata": {"name": "r"},
                "spec": {"runName": "r", "result": "x" * 524289, "bytes": 1, "sha256": "s"},
            },
            None,
        )
    assert "spec.result: Too long" in info.value.message


def test_label_values_are_validated_for_every_kind() -> None:
    obj = run()
    obj["metadata"]["labels"] = {"agentrun.dev/run": "not valid!"}
    assert "a valid label must be an empty string" in rejected(obj)
    obj["metadata"]["labels"] = {"bad key!": "v"}
    assert 'metadata.labels: Invalid value: "bad key!"' in rejected(obj)

from __future__ import annotations

import re

import pytest
from agentrun_contract import limits, names

K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def test_key_derived_name_is_deterministic_and_namespaced() -> None:
    a = names.run_name_for_key("team-a", "unique-key-123")
    assert a == names.run_name_for_key("team-a", "unique-key-123")
    assert a != names.run_name_for_key("team-b", "unique-key-123")
    assert a != names.run_name_for_key("team-a", "unique-key-124")
    assert K8S_NAME.match(a)
    assert len(a) <= limits.NAME_MAX_CHARS


def test_random_names_differ_and_are_valid() -> None:
    made = {names.run_name_for_key("ns", None) for _ in range(200)}
    assert len(made) == 200
    assert all(K8S_NAME.match(n) and len(n) <= limits.NAME_MAX_CHARS for n in made)


def test_job_id_round_trip() -> None:
    name = names.run_name_for_key("ns", "k")
    job_id = names.job_id_for_run_name(name)
    assert job_id.startswith("run_")
    assert "-" not in job_id
    assert names.run_name_for_job_id(job_id) == name
    # kubectl-made runs: the name is the job id
    assert names.job_id_for_run_name("nightly-report") == "nightly-report"
    assert names.run_name_for_job_id("nightly-report") == "nightly-report"


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there", "é", "nul\x00"])
def test_invalid_idempotency_keys(key: str) -> None:
    with pytest.raises(names.InvalidIdempotencyKey):
        names.validate_idempotency_key(key)


@pytest.mark.parametrize("key", ["a", "x" * 255, "unique-key-123", " spaced key ~!"])
def test_valid_idempotency_keys(key: str) -> None:
    assert names.validate_idempotency_key(key) == key


def test_owned_object_names_fit() -> None:
    longest = "r" * limits.NAME_MAX_CHARS
    for made in (
        names.input_secret_name(longest),
        names.result_name(longest),
        names.transcript_chunk_name(longest, 99999),
        names.transcript_gap_name(longest),
    ):
        assert len(made) <= 63
    # pod names are the job name plus "-" and 5 characters
    assert len(names.job_name(longest)) + 6 <= 63


def test_session_label_is_a_valid_label_value() -> None:
    value = names.session_label_value("project alpha / ünïcode " * 20)
    assert len(value) <= 63
    assert re.fullmatch(r"[a-f0-9]+", value)

"""Golden cases of map_run_status: real-shaped Job and Pod objects -> phase, reason, message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from agentrun_contract.resource import AgentRun
from agentrun_operator.run_status import map_run_status, parse_time

GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(GOLDEN.glob("*.yaml"))


def make_run(partial: dict[str, Any]) -> AgentRun:
    spec = {"prompt": "hello", "timeoutSeconds": 60, **(partial.get("spec") or {})}
    return AgentRun.model_validate(
        {
            "metadata": {
                "name": "run-abc",
                "namespace": partial.get("namespace") or "default",
                "uid": "u-1",
            },
            "spec": spec,
            "status": partial.get("status") or {},
        }
    )


def test_every_issue_case_has_a_golden() -> None:
    names = {p.stem for p in CASES}
    required = {
        "success",
        "agent_error",
        "deadline_exceeded",
        "image_pull",
        "unschedulable",
        "evicted",
        "oom_killed",
        "missing_credentials",
        "pod_deleted",
        "job_deleted",
        # the Job controller's FailedCreate, one per admission refusal the emulator reproduces
        "failed_create_service_account",
        "failed_create_quota",
        "failed_create_pod_security",
    }
    assert required <= names


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_golden(path: Path) -> None:
    case = yaml.safe_load(path.read_text())
    assert str(case["source"]).startswith(("hand-written", "recorded")), "source line missing"
    run = make_run(case["run"])
    decision = map_run_status(
        run,
        case["job"],
        case["pods"],
        parse_time(case["now"]),  # type: ignore[arg-type]
        pending_timeout_seconds=case.get("pendingTimeoutSeconds", 600),
        credentials_secret=case.get("credentialsSecret", "agentrun-llm-credentials"),
        events=case.get("events") or [],
    )
    expected = case["expected"]
    got = decision.to_yaml_dict()
    assert got["phase"] == expected["phase"], got
    assert got["reason"] == expected.get("reason"), got
    if "message" in expected:
        assert got["message"] == expected["message"], got
    if "messageContains" in expected:
        assert expected["messageContains"] in (got["message"] or ""), got
    if "startedAt" in expected:
        assert got["startedAt"] == expected["startedAt"]
    if "exitCode" in expected:
        assert got["exitCode"] == expected["exitCode"]

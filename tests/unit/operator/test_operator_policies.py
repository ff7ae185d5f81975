"""Pure policies: retention plan, install limits, settings from env (leases: test_leader.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from agentrun_contract.resource import AgentRun
from agentrun_operator.admission import admission_key
from agentrun_operator.leader import micro_time
from agentrun_operator.reconciler import check_install_limits, is_active
from agentrun_operator.retention import plan_retention
from agentrun_operator.settings import OperatorSettings

NOW = datetime(2026, 1, 10, tzinfo=UTC)


def run(
    name: str,
    ns: str = "a",
    phase: str | None = "Succeeded",
    age_s: float = 10,
    webhook: str | None = None,
) -> dict[str, Any]:
    status: dict[str, Any] = {}
    if phase:
        status["phase"] = phase
        status["completedAt"] = micro_time(NOW - timedelta(seconds=age_s))
    if webhook:
        status["webhook"] = {"state": webhook, "id": "msg_1"}
    return {"metadata": {"name": name, "namespace": ns}, "status": status}


def test_retention_by_age_skips_unfinished_and_pending_webhooks() -> None:
    runs = [
        run("old", age_s=100),
        run("old-pending", age_s=100, webhook="pending"),
        run("old-delivered", age_s=100, webhook="delivered"),
        run("young", age_s=5),
        run("running", phase="Running"),
        run("queued", phase=None),
    ]
    plan = plan_retention(runs, NOW, max_age_seconds=60, max_runs=1000)
    assert sorted(plan) == [("a", "old"), ("a", "old-delivered")]


def test_retention_by_count_per_namespace_oldest_first() -> None:
    runs = [run(f"r{i}", age_s=100 - i) for i in range(5)] + [run("other", ns="b", age_s=99)]
    plan = plan_retention(runs, NOW, max_age_seconds=10_000, max_runs=2)
    assert plan == [("a", "r0"), ("a", "r1"), ("a", "r2")]


def make(**spec: Any) -> AgentRun:
    return AgentRun.model_validate({"metadata": {"name": "r"}, "spec": {"prompt": "p", **spec}})


def test_install_limits_messages_name_the_fix() -> None:
    settings = OperatorSettings(frameworks=["praisonai"], timeout_max_seconds=100)
    assert check_install_limits(make(timeoutSeconds=100), settings) is None
    message = check_install_limits(make(framework="crewai", timeoutSeconds=5), settings)
    assert message is not None
    assert "praisonai" in message
    message = check_install_limits(make(timeoutSeconds=101), settings)
    assert message is not None
    assert "at most 100" in message


def test_active_runs_include_terminal_with_incomplete_transcript() -> None:
    assert is_active({"status": {}})
    assert is_active({"status": {"phase": "Running"}})
    assert is_active({"status": {"phase": "Failed", "transcript": {"complete": False}}})
    assert not is_active({"status": {"phase": "Failed", "transcript": {"complete": True}}})


def test_admission_key_orders_by_creation_then_name() -> None:
    a = {"metadata": {"name": "z", "creationTimestamp": "2026-01-01T00:00:01Z"}}
    b = {"metadata": {"name": "a", "creationTimestamp": "2026-01-01T00:00:01Z"}}
    c = {"metadata": {"name": "m", "creationTimestamp": "2026-01-01T00:00:00Z"}}
    assert [admission_key(x)[1] for x in sorted([a, b, c], key=admission_key)] == ["m", "a", "z"]


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTRUN_OPERATOR_NAMESPACES", '["x","y"]')
    monkeypatch.setenv("AGENTRUN_OPERATOR_LEADER_ELECTION__LEASE_DURATION_SECONDS", "3")
    monkeypatch.setenv("AGENTRUN_OPERATOR_RUNNER_COMMAND", '["python","-m","tiny"]')
    monkeypatch.setenv("AGENTRUN_OPERATOR_WEBHOOK_POLICY__ALLOW_LOOPBACK", "true")
    settings = OperatorSettings()
    assert settings.namespaces == ["x", "y"]
    assert settings.lease_namespace == "x"
    assert settings.leader_election.lease_duration_seconds == 3
    assert settings.runner_command == ["python", "-m", "tiny"]
    assert settings.webhook_policy.allow_loopback is True


def test_every_setting_is_documented() -> None:
    def walk(model: type) -> None:
        for name, field in model.model_fields.items():  # type: ignore[attr-defined]
            assert field.description, f"{model.__name__}.{name} has no description"

    walk(OperatorSettings)

"""The fast CEL subset agrees with cel-python (celpy) on the contract's rules and edge cases."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import yaml
from agentrun_devcluster.apiserver import cel

CRD_FILE = Path(__file__).resolve().parents[3] / "deploy" / "crds" / "agentrun.dev.yaml"


def _contract_rules() -> list[str]:
    rules: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for rule in node.get("x-kubernetes-validations") or []:
                rules.append(rule["rule"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for doc in yaml.safe_load_all(CRD_FILE.read_text()):
        walk(doc)
    return rules


def _outcome(fn: Any, activation: dict[str, Any]) -> Any:
    try:
        return bool(fn(activation))
    except cel.CelError:
        return "error"


def _specs() -> list[dict[str, Any]]:
    values: dict[str, list[Any]] = {
        "prompt": [None, "a", "b"],
        "agentFile": [None, "f.yaml"],
        "agentYaml": [None, "x: 1"],
        "cancelRequested": [None, True, False],
    }
    result = []
    for combo in itertools.product(*values.values()):
        result.append({k: v for k, v in zip(values, combo, strict=True) if v is not None})
    return result


CONTRACT_RULES = _contract_rules()


def test_contract_has_rules() -> None:
    assert len(CONTRACT_RULES) >= 3


@pytest.mark.parametrize("rule", CONTRACT_RULES)
def test_fast_path_matches_celpy_on_contract_rules(rule: str) -> None:
    fast = cel.compile_rule(rule)
    reference = cel._celpy_program(rule)
    assert fast.__qualname__ != reference.__qualname__, "rule should take the fast path"
    specs = _specs()
    for new, old in itertools.product(specs, specs[::9]):
        activation = {"self": new, "oldSelf": old}
        assert _outcome(fast, activation) == _outcome(reference, activation), (new, old)


@pytest.mark.parametrize(
    ("rule", "activation", "expected"),
    [
        ("self.a == 1", {"self": {"a": 1.0}}, True),
        ("self.a == 'x'", {"self": {"a": 1}}, False),
        ("self.a == true", {"self": {"a": 1}}, False),
        ("self.missing == 1", {"self": {}}, "error"),
        ("false && self.missing", {"self": {}}, False),
        ("self.missing && false", {"self": {}}, False),
        ("true || self.missing", {"self": {}}, True),
        ("self.missing || true", {"self": {}}, True),
        ("self.missing || false", {"self": {}}, "error"),
        ("!has(self.x) || self.x > 2", {"self": {"x": 3}}, True),
        ("self.n <= 2", {"self": {"n": "s"}}, "error"),
        ("has(self.a.b)", {"self": {"a": {"b": 1}}}, True),
        (
            "self.list == oldSelf.list",
            {"self": {"list": [1, 2]}, "oldSelf": {"list": [1, 2]}},
            True,
        ),
    ],
)
def test_semantics_edge_cases(rule: str, activation: dict[str, Any], expected: Any) -> None:
    assert _outcome(cel.compile_rule(rule), activation) == expected
    if _kinds_mixed(rule):
        # celpy implements the older strict equality (mixed types: error); cel-go, as
        # Kubernetes uses it, has heterogeneous equality, which the fast path follows.
        assert _outcome(cel._celpy_program(rule), activation) == "error"
    else:
        assert _outcome(cel._celpy_program(rule), activation) == expected


def _kinds_mixed(rule: str) -> bool:
    return rule in ("self.a == 1", "self.a == 'x'", "self.a == true")


def test_rules_outside_the_subset_fall_back_to_celpy() -> None:
    rule = "self.items.all(i, i.size() > 0)"
    fn = cel.compile_rule(rule)
    assert fn({"self": {"items": ["a", "bb"]}}) is True
    assert fn({"self": {"items": ["a", ""]}}) is False

"""CEL evaluation for ``x-kubernetes-validations`` rules.

cel-python (celpy) implements full CEL but costs milliseconds per evaluation (a lark tree
walk), which dominated the emulator's write path. Most CRD rules use a small subset: field
access on ``self``/``oldSelf``, ``has()``, ``!``, ``&&``, ``||``, comparisons and literals.
This module compiles that subset to Python closures (microseconds per evaluation) and falls
back to celpy for any rule outside it. Semantics follow cel-go as Kubernetes configures it:

- a missing field is an error ("no such key"), which ``has()`` tests for;
- ``&&``/``||`` are commutative with errors: ``false && <error>`` is false,
  ``true || <error>`` is true, otherwise an error propagates;
- equality is heterogeneous (``1 == 1.0`` is true, ``1 == 'a'`` is false, bools are not numbers);
- ordering is defined for numbers and for strings only.

The tests check this evaluator against celpy on the contract's rules.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any

Activation = dict[str, Any]
Compiled = Callable[[Activation], Any]


class CelError(Exception):
    """A CEL runtime error (e.g. ``no such key: prompt``)."""


class _Unsupported(Exception):
    """The rule uses CEL beyond the fast subset: celpy evaluates it."""


_TOKENS = re.compile(
    r"\s*(?:(?P<num>\d+(?:\.\d+)?)|(?P<str>\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*')"
    r"|(?P<op>&&|\|\||==|!=|<=|>=|[<>!().])|(?P<ident>[A-Za-z_][A-Za-z0-9_]*))"
)


def _tokenize(rule: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    rule = rule.strip()
    while pos < len(rule):
        m = _TOKENS.match(rule, pos)
        if m is None or m.end() == pos:
            raise _Unsupported(rule[pos:])
        pos = m.end()
        kind = m.lastgroup
        assert kind is not None
        tokens.append((kind, m.group(kind)))
    return tokens


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token is None or (value is not None and token[1] != value):
            raise _Unsupported(f"expected {value!r}")
        self.i += 1
        return token

    def parse(self) -> Compiled:
        expr = self.or_expr()
        if self.peek() is not None:
            raise _Unsupported("trailing tokens")
        return expr

    def or_expr(self) -> Compiled:
        left = self.and_expr()
        while self.peek() == ("op", "||"):
            self.take()
            left = _logic(left, self.and_expr(), short=True)
        return left

    def and_expr(self) -> Compiled:
        left = self.relation()
        while self.peek() == ("op", "&&"):
            self.take()
            left = _logic(left, self.relation(), short=False)
        return left

    def relation(self) -> Compiled:
        left = self.unary()
        token = self.peek()
        if (
            token is not None
            and token[0] == "op"
            and token[1] in ("==", "!=", "<", "<=", ">", ">=")
        ):
            self.take()
            return _compare(token[1], left, self.unary())
        return left

    def unary(self) -> Compiled:
        if self.peek() == ("op", "!"):
            self.take()
            inner = self.unary()

            def negate(act: Activation) -> Any:
                value = inner(act)
                if not isinstance(value, bool):
                    raise CelError("no such overload: !_")
                return not value

            return negate
        return self.member()

    def member(self) -> Compiled:
        node = self.primary()
        while self.peek() == ("op", "."):
            self.take()
            kind, name = self.take()
            if kind != "ident":
                raise _Unsupported("field name")
            node = _select(node, name)
        if self.peek() == ("op", "("):
            raise _Unsupported("method call")
        return node

    def primary(self) -> Compiled:
        kind, value = self.take()
        if kind == "ident" and value == "has" and self.peek() == ("op", "("):
            self.take("(")
            target = self.has_target()
            self.take(")")
            return target
        if kind == "op" and value == "(":
            inner = self.or_expr()
            self.take(")")
            return inner
        if kind == "ident":
            if value in ("true", "false"):
                literal: Any = value == "true"
                return lambda act: literal
            if value == "null":
                return lambda act: None
            if self.peek() == ("op", "("):
                raise _Unsupported(f"function {value}")
            name = value

            def variable(act: Activation) -> Any:
                if name not in act:
                    raise CelError(f"undeclared reference to '{name}'")
                return act[name]

            return variable
        if kind == "num":
            number: Any = float(value) if "." in value else int(value)
            return lambda act: number
        if kind == "str":
            text = value[1:-1]
            if "\\" in text:
                raise _Unsupported("escapes")
            return lambda act: text
        raise _Unsupported(value)

    def has_target(self) -> Compiled:
        """``has(x.f)``: x must evaluate; true when it is a map holding ``f``."""
        node = self.primary()
        fields: list[str] = []
        while self.peek() == ("op", "."):
            self.take()
            kind, name = self.take()
            if kind != "ident":
                raise _Unsupported("field name")
            fields.append(name)
        if not fields:
            raise _Unsupported("has() needs a field selection")
        for name in fields[:-1]:
            node = _select(node, name)
        last = fields[-1]
        base = node

        def has(act: Activation) -> Any:
            value = base(act)
            if not isinstance(value, dict):
                raise CelError("invalid type for field selection.")
            return last in value

        return has


def _select(node: Compiled, name: str) -> Compiled:
    def select(act: Activation) -> Any:
        value = node(act)
        if not isinstance(value, dict):
            raise CelError("invalid type for field selection.")
        if name not in value:
            raise CelError(f"no such key: {name}")
        return value[name]

    return select


def _logic(left: Compiled, right: Compiled, *, short: bool) -> Compiled:
    """``||`` (short=True: true wins) or ``&&`` (short=False: false wins), error-commutative."""

    def run(act: Activation) -> Any:
        error: CelError | None = None
        for side in (left, right):
            try:
                value = side(act)
            except CelError as exc:
                error = exc
                continue
            if not isinstance(value, bool):
                error = CelError("no such overload")
                continue
            if value is short:
                return short
        if error is not None:
            raise error
        return not short

    return run


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if value is None:
        return "null"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    return "map"


def cel_equal(a: Any, b: Any) -> bool:
    """Heterogeneous equality as cel-go does it."""
    ka, kb = _kind(a), _kind(b)
    if ka != kb:
        return False
    if ka == "list":
        return len(a) == len(b) and all(cel_equal(x, y) for x, y in zip(a, b, strict=True))
    if ka == "map":
        return a.keys() == b.keys() and all(cel_equal(a[k], b[k]) for k in a)
    return bool(a == b)


def _compare(op: str, left: Compiled, right: Compiled) -> Compiled:
    def run(act: Activation) -> Any:
        a, b = left(act), right(act)
        if op == "==":
            return cel_equal(a, b)
        if op == "!=":
            return not cel_equal(a, b)
        ka, kb = _kind(a), _kind(b)
        if ka != kb or ka not in ("number", "string"):
            raise CelError(f"no such overload: {ka} {op} {kb}")
        if op == "<":
            return a < b
        if op == "<=":
            return a <= b
        if op == ">":
            return a > b
        return a >= b

    return run


@lru_cache(maxsize=512)
def compile_rule(rule: str) -> Compiled:
    """A callable evaluating ``rule`` on an activation of plain JSON values."""
    try:
        return _Parser(_tokenize(rule)).parse()
    except _Unsupported:
        return _celpy_program(rule)


def _celpy_program(rule: str) -> Compiled:
    from celpy.adapter import json_to_cel

    program = _celpy_environment_program(rule)

    def run(act: Activation) -> Any:
        try:
            result = program.evaluate({k: json_to_cel(v) for k, v in act.items()})
        except Exception as exc:  # celpy raises its own CELEvalError types
            raise CelError(str(exc.args[0]) if exc.args else str(exc)) from None
        if isinstance(result, Exception):
            raise CelError(str(result))
        return bool(result)

    return run


def _celpy_environment_program(rule: str) -> Any:
    env = _environment()
    return env.program(env.compile(rule))


@lru_cache(maxsize=1)
def _environment() -> Any:
    import celpy

    return celpy.Environment()


def evaluate(rule: str, activation: Activation) -> Any:
    """Evaluate ``rule``; raises :class:`CelError` on a CEL runtime error."""
    return compile_rule(rule)(activation)

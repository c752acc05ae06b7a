"""Tests for the safe expression evaluator behind builder edge conditions."""

from __future__ import annotations

import contextlib
import pickle
import string
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowkit._errors import FlowkitError
from flowkit._safe_eval import ExpressionError, SafeExpression, compile_safe

NAMES: dict[str, object] = {
    "result": 7,
    "state": {"items": [1, 2, 3, 4], "ready": True, "name": "flow"},
    "x": {"a": 1},
    "s": "abc",
}


def ev(source: str, names: dict[str, object] | None = None) -> object:
    """Compile ``source`` and evaluate it against ``names`` (default NAMES)."""
    return compile_safe(source).evaluate(NAMES if names is None else names)


class TestEvaluation:
    """Allowed expressions evaluate to the same value Python would give."""

    @pytest.mark.parametrize(
        ("source", "expected"),
        [
            ("result < 10", True),
            ("result >= 10", False),
            ("1 < result < 8", True),
            ("result == 7 and state['ready']", True),
            ("result != 7 or not state['ready']", False),
            ("not result", False),
            ("-result + 2", -5),
            ("+result", 7),
            ("result * 2 - 1", 13),
            ("result / 2", 3.5),
            ("result // 2", 3),
            ("result % 4", 3),
            ("2 ** 10", 1024),
            ("2 ** -1", 0.5),
            ("state['items'][0]", 1),
            ("state['items'][-1]", 4),
            ("state['items'][1:3]", [2, 3]),
            ("state['items'][::-1]", [4, 3, 2, 1]),
            ("state['name'][0]", "f"),
            ("3 in state['items']", True),
            ("9 not in state['items']", True),
            ("'low' in 'flow'", True),
            ("state is not None", True),
            ("None is None", True),
            ("len(state['items']) > 3", True),
            ("min(state['items'])", 1),
            ("max(state['items'], default=0)", 4),
            ("max([], default=0)", 0),
            ("abs(-3)", 3),
            ("sum(state['items'])", 10),
            ("sum([1, 2], 10)", 13),
            ("any([False, True])", True),
            ("all([True, False])", False),
            ("round(2.567, 2)", 2.57),
            ("round(2.5)", 2),
            ("sorted([3, 1, 2])", [1, 2, 3]),
            ("sorted([3, 1, 2], reverse=True)", [3, 2, 1]),
            ("str(result)", "7"),
            ("int('ff', 16)", 255),
            ("int('ff', base=16)", 255),
            ("float('1.5')", 1.5),
            ("bool(0)", False),
            ("'big' if result > 5 else 'small'", "big"),
            ("(1, 2) + (3,)", (1, 2, 3)),
            ("[1, 2] + [3]", [1, 2, 3]),
            ("'ab' * 3", "ababab"),
            ("3 * [0]", [0, 0, 0]),
            ("{'k': result}['k']", 7),
            ("{1, 2} == {2, 1}", True),
            ("s + 'd'", "abcd"),
            ("True and None", None),
            ("x['a'] == 1", True),
        ],
    )
    def test_evaluates(self, source: str, expected: object) -> None:
        assert expected == ev(source)

    def test_not_result_ready(self) -> None:
        assert True is ev("not result['ready']", {"result": {"ready": False}})

    def test_attribute_access_on_public_names(self) -> None:
        class Box:
            value = 5

        expected = Box.value
        assert expected == ev("box.value", {"box": Box()})

    def test_reuses_compiled_code(self) -> None:
        expr = compile_safe("result < 10")
        expected = [True, False]
        assert expected == [expr.evaluate({"result": 3}), expr.evaluate({"result": 30})]

    def test_evaluation_is_fast(self) -> None:
        expr = compile_safe("result < 10")
        names = {"result": 3}
        start = time.perf_counter()
        for _ in range(10_000):
            expr.evaluate(names)
        assert (time.perf_counter() - start) / 10_000 < 50e-6

    def test_names_cannot_shadow_whitelisted_calls(self) -> None:
        items = [1, 2, 3]
        assert len(items) == ev("len(items)", {"items": items, "len": lambda _: "hijacked"})

    def test_is_a_frozen_value(self) -> None:
        source = "result < 10"
        expr = compile_safe(source)
        assert isinstance(expr, SafeExpression)
        assert source == expr.source
        assert compile_safe(source) == expr
        with pytest.raises(AttributeError):
            expr.source = "1"  # type: ignore[misc]


class TestAllowedNames:
    """``allowed_names`` rejects unknown free names at compile time."""

    def test_known_names_pass(self) -> None:
        expr = compile_safe("len(result) > limit", allowed_names={"result", "limit"})
        assert True is expr.evaluate({"result": [1, 2], "limit": 1})

    def test_unknown_name_is_rejected(self) -> None:
        with pytest.raises(ExpressionError, match="unknown name 'other'") as info:
            compile_safe("result < other", allowed_names=["result"])
        assert "available names: result" in str(info.value)

    def test_functions_and_constants_need_no_listing(self) -> None:
        expr = compile_safe("len([True, None]) == 2", allowed_names=())
        assert True is expr.evaluate({})

    def test_without_allowed_names_missing_name_fails_at_runtime(self) -> None:
        expr = compile_safe("missing < 1")
        with pytest.raises(ExpressionError, match="NameError"):
            expr.evaluate({})


HOSTILE = [
    "__import__('os').system('x')",
    "().__class__.__bases__[0].__subclasses__()",
    "().__class__",
    "open('/etc/passwd')",
    "eval('1')",
    "exec('x=1')",
    "getattr(x, 'y')",
    "setattr(x, 'y', 1)",
    "globals()",
    "locals()",
    "vars()",
    "dir()",
    "lambda: 1",
    "(lambda: 1)()",
    "[x for x in range(10**9)]",
    "{x for x in y}",
    "{x: 1 for x in y}",
    "any(x for x in y)",
    "(x := 1)",
    "f'{x}'",
    "f'{x.__class__}'",
    "x.__dict__",
    "x._private",
    "_private",
    "__builtins__",
    "type(x)",
    "compile('1', '', 'eval')",
    "breakpoint()",
    "input()",
    "print(1)",
    "x.get('a')",
    "result.format()",
    "'{0.__class__}'.format(x)",
    "str.join('', ['a'])",
    "len.__self__",
    "sorted(x, key=len)",
    "max(x, key=abs)",
    "len(*x)",
    "len(**x)",
    "[*x]",
    "{**x}",
    "x.gi_frame",
    "x.f_globals",
    "b'bytes'",
    "1j",
    "...",
    "1 << 10**9",
    "1 | 2",
    "~1",
    "x @ y",
    "await x",
    "(yield)",
    "import os",
    "x = 1",
    "del x",
    "x; y",
    "1 +",
    "'a' * 10 ** 9" + " " * 2000,
    "x[0](1)",
    "(len if x else min)(x)",
    "\x00",
]


class TestHostileCompile:
    """Anything outside the whitelist is refused at compile time."""

    @pytest.mark.parametrize("source", HOSTILE)
    def test_refused(self, source: str) -> None:
        with pytest.raises(ExpressionError):
            compile_safe(source)

    def test_enough_hostile_cases(self) -> None:
        assert len(HOSTILE) >= 30

    def test_message_quotes_expression_part_and_rules(self) -> None:
        with pytest.raises(ExpressionError) as info:
            compile_safe("result > 1 and x.get('a')")
        text = str(info.value)
        assert "\"result > 1 and x.get('a')\"" in text
        assert "(in \"x.get('a')\")" in text
        assert "len, min, max" in text

    def test_error_types(self) -> None:
        source = "x.__class__"
        with pytest.raises(ExpressionError) as info:
            compile_safe(source)
        assert isinstance(info.value, FlowkitError)
        assert isinstance(info.value, ValueError)
        assert source == info.value.expression

    def test_error_pickles(self) -> None:
        with pytest.raises(ExpressionError) as info:
            compile_safe("x._y")
        copy = pickle.loads(pickle.dumps(info.value))
        assert str(info.value) == str(copy)

    def test_non_string_is_refused(self) -> None:
        with pytest.raises(ExpressionError):
            compile_safe(123)  # type: ignore[arg-type]

    def test_deep_nesting_is_refused_cleanly(self) -> None:
        for source in ("-" * 1999 + "1", "(" * 300 + "1" + ")" * 300, "not " * 490 + "x"):
            with contextlib.suppress(ExpressionError):
                compile_safe(source)


RUNTIME_GUARDS = [
    "10 ** 10 ** 10",
    "2 ** 1001",
    "(10 ** 1000) ** 1000",
    "'a' * 10**9",
    "10**9 * 'a'",
    "[1] * 10**9",
    "(1, 2) * 10**9",
    "['abc'] * 999_999",
    "[[1] * 3] * 3",
    "['ab' * 500_000] * 2",
    "'a' * 999_999 + 'b' * 999_999",
    "'%s' % 1",
    "'%0999999999d' % 1",
    "sum([[1]], [])",
    "round(1, -10**9)",
]


class TestRuntimeGuards:
    """Operations that could hang or exhaust memory are refused quickly at runtime."""

    @pytest.mark.parametrize("source", RUNTIME_GUARDS)
    def test_refused_quickly(self, source: str) -> None:
        expr = compile_safe(source)
        start = time.perf_counter()
        with pytest.raises(ExpressionError):
            expr.evaluate(NAMES)
        assert time.perf_counter() - start < 1.0

    @pytest.mark.parametrize(
        ("source", "expected"),
        [("len('a' * 1_000_000)", 1_000_000), ("2 ** 1000", 2**1000), ("len([0] * 10**6)", 10**6)],
    )
    def test_limits_allow_reasonable_sizes(self, source: str, expected: object) -> None:
        assert expected == ev(source)

    @pytest.mark.parametrize(
        ("source", "error"),
        [
            ("state['missing']", "KeyError"),
            ("1 / 0", "ZeroDivisionError"),
            ("len(result)", "TypeError"),
            ("x.nope", "AttributeError"),
        ],
    )
    def test_runtime_errors_are_wrapped(self, source: str, error: str) -> None:
        with pytest.raises(ExpressionError, match=error) as info:
            ev(source)
        assert source == info.value.expression


class TestFuzz:
    """Arbitrary text never escapes as anything but ExpressionError."""

    @settings(max_examples=300, deadline=None)
    @given(st.text(alphabet=string.printable, max_size=60))
    def test_printable_text_compiles_or_raises_expression_error(self, source: str) -> None:
        try:
            expr = compile_safe(source)
        except ExpressionError:
            return
        with contextlib.suppress(ExpressionError):
            expr.evaluate(NAMES)

    @settings(max_examples=200, deadline=None)
    @given(st.text(max_size=40))
    def test_unicode_text_compiles_or_raises_expression_error(self, source: str) -> None:
        with contextlib.suppress(ExpressionError):
            compile_safe(source)

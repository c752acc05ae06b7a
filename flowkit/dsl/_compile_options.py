"""``await node.options(retries=n)(args)``: options for one node call.

Options whose value is known when the flow is compiled (literals, exception
classes, a ``Backoff(...)`` of literals) go into the call node's config, where
``flowkit flows show`` and the digest see them. ``retries``, ``timeout``,
``retry_timeout`` and ``queue`` may instead be expressions over the flow's
variables: those are kept in the node's ``params["options"]`` and evaluated by
the core at the call, like the node's arguments.
"""

from __future__ import annotations

import ast
from typing import TYPE_CHECKING, Any

import attrs

from .._durations import Backoff
from .._errors import ConfigurationError
from ..core._policy import CALL_OPTIONS as COMPUTED_OPTIONS
from ._compile_resolve import LOCAL, UNRESOLVED, callee_kind, dotted
from ._compile_waits import Waits
from ._node import CALL_OPTIONS, Arguments, NodeDef

if TYPE_CHECKING:
    from ._compile_graph import Port

_CONSTANT_ONLY = "retry_on, never_retry and backoff are read when the flow is compiled"


@attrs.frozen
class Options:
    """A ``node.options(...)`` call: the node and the call that gave the options."""

    node: NodeDef[Any, Any]
    call: ast.Call


class CallOptions(Waits):
    """Compiling the options of a ``node.options(...)(args)`` call."""

    def options_of(self, call: ast.Call) -> Options | None:
        """The options when ``call`` is ``<node>.options(...)(...)``, else None."""
        func = call.func
        if not (
            isinstance(func, ast.Call)
            and isinstance(func.func, ast.Attribute)
            and func.func.attr == "options"
        ):
            return None
        nodedef = self.resolver.resolve(func.func.value)
        if callee_kind(nodedef) != "node":
            return None  # not a node (yet): reported as any other awaited call is
        if func.args:
            raise self.error(
                func,
                "options() takes keyword arguments only",
                "write e.g. `await charge.options(retries=3)(order)`",
            )
        return Options(nodedef, func)

    def compile_options(
        self, options: Options, params: dict[str, Any], ports: list[Port]
    ) -> tuple[dict[str, Any], list[Port]]:
        """The options known now (config fields); the rest go into ``params``."""
        static: dict[str, Any] = {}
        computed: dict[str, str] = {}
        check = Arguments(f"{options.node.name}.options()")
        for keyword in options.call.keywords:
            name = self.option_name(keyword)
            if name in COMPUTED_OPTIONS and not _is_literal(keyword.value):
                computed[name], ports = self.expr(keyword.value, ports)
                continue
            value = self.option_value(name, keyword.value)
            try:
                static.update(check.call_options({name: value}))
            except ConfigurationError as exc:
                raise self.error(keyword.value, str(exc), f"fix the value of {name}") from None
        if computed:
            params["options"] = computed
        return static, ports

    def option_name(self, keyword: ast.keyword) -> str:
        if keyword.arg is None:
            raise self.error(
                keyword.value,
                "`**options` in options() is not supported",
                "pass each option by name",
            )
        if keyword.arg not in CALL_OPTIONS:
            raise self.error(
                keyword.value,
                f"unknown option {keyword.arg!r} in options()",
                f"options() takes {', '.join(CALL_OPTIONS)}",
            )
        return keyword.arg

    def option_value(self, name: str, node: ast.expr) -> Any:
        """The value of an option read when the flow is compiled."""
        if _is_literal(node):
            return ast.literal_eval(node)
        if name == "backoff" and isinstance(node, ast.Call):
            return self.backoff_value(node)
        if isinstance(node, ast.Tuple | ast.List):
            return tuple(self.named(name, item) for item in node.elts)
        return self.named(name, node)

    def named(self, name: str, node: ast.expr) -> Any:
        obj = self.resolver.resolve(node)
        if obj is LOCAL or obj is UNRESOLVED or dotted(node) is None:
            raise self.error(
                node,
                f"the value of {name} must be known when the flow is compiled",
                f"{_CONSTANT_ONLY}: name classes or constants defined outside the flow",
            )
        return obj

    def backoff_value(self, node: ast.Call) -> Backoff:
        if self.resolver.resolve(node.func) is not Backoff or node.args:
            raise self.error(
                node,
                "backoff must be a flowkit.Backoff of literal keyword values",
                "write e.g. `backoff=Backoff(initial='1s', factor=2)`",
            )
        if not all(_is_literal(k.value) for k in node.keywords):
            raise self.error(
                node,
                "Backoff(...) in options() takes literal values only",
                f"{_CONSTANT_ONLY}: write the values themselves",
            )
        kwargs = {str(k.arg): ast.literal_eval(k.value) for k in node.keywords}
        try:
            return Backoff(**kwargs)
        except (TypeError, ValueError) as exc:
            raise self.error(node, f"invalid Backoff: {exc}", "fix its arguments") from None


def _is_literal(node: ast.expr) -> bool:
    try:
        ast.literal_eval(node)
    except ValueError:
        return False
    return True

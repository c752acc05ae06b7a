"""What @flow compiles to: node ids, kinds, params, registry, name resolution, evaluator."""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import os
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flowkit
from flowkit import Backoff, Blueprint, Runtime, analyze, lint
from flowkit.dsl._flow import flow
from flowkit.dsl._node import node

if TYPE_CHECKING:
    from collections.abc import Iterator

    from flowkit.dsl._flowdef import FlowDef

WEBHOOK_SECRET = "s3cret"
SHADOWED = "module"
FACTOR = 10


@node
async def fetch_order(order_id: str) -> dict[str, Any]:
    return {"id": order_id, "items": ["a", "b"], "total": 1200}


@node
async def reserve(item: str) -> str:
    return f"reserved {item}"


@node(name="charge-card", retries=3, timeout="30s", backoff=Backoff(initial="1s"))
async def charge(order: dict[str, Any], *, amount: int = 0) -> str:
    return f"charged {amount}"


@node(fallback=lambda item: "fallback")
async def risky(item: str) -> str:
    raise RuntimeError("no")


@flow(id="checkout", version=3)
async def checkout(order_id: str) -> str:
    order = await fetch_order(order_id)
    await reserve(order["items"][0])
    await reserve(order["items"][1])
    if order["total"] > 1000:
        decision = await flow.wait("approval", timeout="2d")
        if not decision["approved"]:
            return "rejected"
    await flow.sleep("10m", name="cool-off")
    receipt, _ = await flow.gather(charge(order, amount=order["total"]), reserve("gift"))
    hook = await flow.webhook("/hooks/pay", secret=WEBHOOK_SECRET, name="paid", timeout=60)
    return f"{receipt} {hook}"


def at(kind: str, text: str) -> str:
    """The id of a synthetic node: its kind and the line of this file where ``text`` is."""
    source = Path(__file__).read_text()
    return f"{kind}@L{source[: source.index(text)].count(chr(10)) + 1}"


def spec(target: FlowDef[Any, Any], node_id: str) -> flowkit.NodeSpec:
    return target.blueprint.node(node_id)


def edges(target: FlowDef[Any, Any]) -> set[tuple[str, str, str | None]]:
    return {(e.source, e.target, e.action) for e in target.blueprint.edges if e.when is None}


class TestBlueprint:
    """The blueprint is valid, stable, and readable."""

    def test_ids_are_callee_names(self) -> None:
        ids = [n.id for n in checkout.blueprint.nodes]
        assert [
            "fetch_order",
            "reserve",
            "reserve#2",
            at("if", 'if order["total"] > 1000:'),
        ] == ids[:4]
        assert {"approval", "cool-off", "charge-card", "reserve#3", "paid"} <= set(ids)

    def test_identity_and_metadata(self) -> None:
        bp = checkout.blueprint
        assert ("checkout", 3) == (bp.id, bp.version)
        assert {"join_default": "pass", "compiled": True} == bp.metadata

    def test_validates_and_round_trips(self) -> None:
        bp = checkout.blueprint
        assert [] == [i for i in lint(bp, checkout.registry) if i.severity == "error"]
        assert bp == Blueprint.from_json(bp.to_json())
        assert ("fetch_order",) == analyze(bp).start_nodes

    def test_call_params_and_config(self) -> None:
        fetch = spec(checkout, "fetch_order")
        assert ("call", f"{__name__}.fetch_order") == (fetch.kind, fetch.uses)
        assert {"args": ["order_id"], "assign": "order"} == fetch.params
        card = spec(checkout, "charge-card")
        assert {"args": ["order"], "kwargs": {"amount": "order['total']"}} == card.params
        assert (3, 30.0, Backoff(initial=1.0)) == (
            card.config.retries,
            card.config.timeout,
            card.config.backoff,
        )
        assert {"args": ["order['items'][0]"]} == spec(checkout, "reserve").params

    def test_registry(self) -> None:
        registry = checkout.registry
        assert registry[f"{__name__}.fetch_order"] is fetch_order
        assert registry[f"{__name__}.charge-card"] is charge
        assert 3 == len(registry)  # the nodes only: inputs are bound when a run starts

    def test_branch_edges(self) -> None:
        assert {
            ("reserve#2", at("if", 'if order["total"] > 1000:'), None),
            (at("if", 'if order["total"] > 1000:'), "approval", "true"),
            (at("if", 'if order["total"] > 1000:'), "cool-off", "false"),
            ("approval", at("if", 'if not decision["approved"]:'), None),
            (at("if", 'if not decision["approved"]:'), at("return", 'return "rejected"'), "true"),
            (at("if", 'if not decision["approved"]:'), "cool-off", "false"),
        } <= edges(checkout)
        assert {"cond": "order['total'] > 1000"} == spec(
            checkout, at("if", 'if order["total"] > 1000:')
        ).params

    def test_durable_primitives(self) -> None:
        assert {"name": "approval", "timeout": 172800.0, "assign": "decision"} == (
            spec(checkout, "approval").params
        )
        assert ("sleep", {"duration": 600.0}) == (
            spec(checkout, "cool-off").kind,
            spec(checkout, "cool-off").params,
        )
        hook = spec(checkout, "paid")
        assert "webhook" == hook.kind
        expected = {"path": "/hooks/pay", "secret": "s3cret", "name": "paid", "timeout": 60.0}
        assert {**expected, "assign": "hook"} == hook.params

    def test_gather_join(self) -> None:
        join = spec(checkout, at("join", "receipt, _ = await flow.gather("))
        assert ("join", "all") == (join.kind, join.config.join)
        assert {"collect": ["charge-card", "reserve#3"], "assign": ["receipt", "_"]} == join.params
        assert {("cool-off", "charge-card", None), ("cool-off", "reserve#3", None)} <= edges(
            checkout
        )

    def test_mermaid(self) -> None:
        text = checkout.mermaid()
        assert '{"' + at("if", 'if order["total"] > 1000:') + '"}' in text
        assert '-->|"true"|' in text


@node
async def slow(x: int) -> int:
    return x


@flow
async def shapes(items: list[int], seconds: float) -> Any:
    winner = await flow.first(slow(1), fetch_order("x"))
    squares = await flow.map(slow, items, concurrency=4)
    await flow.sleep(seconds)
    await flow.sleep(seconds * 2, name="nap")
    for i, item in enumerate(items):
        if item:
            continue
        await slow(i)
    while len(items) > 10:
        items = items[1:]
    return winner, squares


class TestShapes:
    """first, map, loops and expression durations compile to the documented params."""

    def test_first(self) -> None:
        join = spec(shapes, at("join", "winner = await flow.first("))
        assert ("any", {"first": True, "assign": "winner"}) == (join.config.join, join.params)

    def test_map(self) -> None:
        squares = spec(shapes, "slow#2")
        expected = {"map": True, "items_expr": "items", "concurrency": 4, "assign": "squares"}
        assert expected == squares.params

    def test_sleep_expression(self) -> None:
        assert {"duration_expr": "seconds"} == spec(shapes, "sleep").params
        assert {"duration_expr": "seconds * 2"} == spec(shapes, "nap").params

    def test_for_loop(self) -> None:
        loop = spec(shapes, at("for", "for i, item in enumerate(items):"))
        assert {
            "mode": "for",
            "iter": "enumerate(items)",
            "target": ["i", "item"],
            "start": at("if", "        if item:"),
            "max_iterations": 1_000_000,
        } == loop.params
        assert (
            at("if", "        if item:"),
            at("for", "for i, item in enumerate(items):"),
            "true",
        ) in edges(shapes)  # continue
        assert ("slow#3", at("for", "for i, item in enumerate(items):"), None) in edges(
            shapes
        )  # back edge from the body's tail
        assert (
            at("for", "for i, item in enumerate(items):"),
            at("while", "while len(items) > 10:"),
            "exit",
        ) in edges(shapes)

    def test_while_loop(self) -> None:
        loop = spec(shapes, at("while", "while len(items) > 10:"))
        assert "while" == loop.params["mode"]
        assert "len(items) > 10" == loop.params["cond"]
        assert 10_000 == loop.params["max_iterations"]


class ShippingError(Exception):
    pass


@flow
async def guarded(order: str) -> str:
    try:
        result = await reserve(order)
    except (ShippingError, KeyError) as exc:
        result = str(exc)
    finally:
        await reserve("cleanup")
    return result


@node
async def sub_work(a: int, b: int = 0) -> int:
    return a + b


@flow
async def child_flow(a: int, b: int = 5) -> int:
    return await sub_work(a, b)


@flow
async def parent_flow(n: int) -> int:
    first = await child_flow(n)
    return await child_flow(first, b=n)


class TestTryAndSubflows:
    """try regions carry on_error; subflows map arguments to the child's parameter names."""

    def test_on_error_and_handler_chain(self) -> None:
        assert (
            at("except", "except (ShippingError, KeyError) as exc:")
            == spec(guarded, "reserve").params["on_error"]
        )
        chain = spec(guarded, at("except", "except (ShippingError, KeyError) as exc:"))
        assert "branch" == chain.kind
        assert "__flowkit_matches__(__error__, (ShippingError, KeyError))" == chain.params["cond"]
        binding = spec(guarded, "let:exc")
        assert {"expr": "__error__", "assign": "__except_exc__"} == {
            k: v for k, v in binding.params.items() if k != "on_error"
        }
        rebound = spec(guarded, "let:result")
        assert "str(__flowkit_exception__(__except_exc__))" == rebound.params["expr"]

    def test_finally_copies(self) -> None:
        ids = {n.id for n in guarded.blueprint.nodes}
        assert {
            "reserve#2",
            at("finally", 'await reserve("cleanup")'),
            "reserve#3",
            at("raise", "    try:\n        result = await reserve(order)"),
        } <= ids
        assert {"raise": True} == spec(
            guarded, at("raise", "    try:\n        result = await reserve(order)")
        ).params

    def test_subflow(self) -> None:
        first = spec(parent_flow, "child_flow")
        assert "subflow" == first.kind
        expected = {"blueprint_id": "child_flow", "kwargs": {"a": "n"}, "assign": "first"}
        assert expected == first.params
        assert {"a": "first", "b": "n"} == spec(parent_flow, "child_flow#2").params["kwargs"]
        assert (child_flow,) == parent_flow.children


class TestResolution:
    """Names resolve as in Python: flow variables, closure, module globals, builtins."""

    def test_nodes_defined_after_the_flow(self) -> None:
        @flow
        async def early(x: int) -> int:
            return await late(x)

        @node
        async def late(x: int) -> int:
            return x + 1

        assert early._compiled is None  # `late` did not exist yet
        assert 2 == early.run_sync(x=1).output

    def test_module_flows_before_their_nodes(self, tmp_path: Path) -> None:
        module = load_module(
            tmp_path,
            """
            from flowkit.dsl._flow import flow
            from flowkit.dsl._node import node

            @flow
            async def first_flow(x):
                return await defined_later(x)

            @node
            async def defined_later(x):
                return x * 7
            """,
        )
        assert 21 == module.first_flow.run_sync(x=3).output

    def test_resolution_order(self) -> None:
        FACTOR = 2  # shadows the module global, as Python would
        SHADOWED = "closure"

        @flow
        async def scoped(len: int) -> Any:  # a flow variable shadowing a builtin
            scaled = [v * FACTOR for v in range(len)]  # the comprehension sees `len`, `FACTOR`
            return scaled, SHADOWED, max(scaled), sorted({len, 0})

        result = scoped.run_sync(len=3).output
        assert ([0, 2, 4], "closure", 4, [0, 3]) == tuple(result)

    def test_unbound_local(self) -> None:
        @flow
        async def unbound(flag: bool) -> str:
            if flag:
                SHADOWED = "local"
            return SHADOWED

        assert "local" == unbound.run_sync(flag=True).output
        failed = unbound.run_sync(flag=False)
        assert flowkit.RunStatus.FAILED == failed.status
        assert "cannot access local variable 'SHADOWED'" in str(failed.error)

    def test_mutations_are_recorded(self) -> None:
        @dataclasses.dataclass
        class Box:  # inputs are data: an arbitrary object is refused
            value: int = 0

        @flow
        async def mutate(box: Box) -> Any:
            items: list[int] = []
            table = {}
            items.append(1)
            table["k"] = await sub_work(1, 1)
            box.value = 5
            items += [2]
            table["k"] += 1
            return items, table, box.value

        blueprint = mutate.blueprint
        assert "(items.append(1), items)[1]" == blueprint.node("let:items#2").params["expr"]
        result = mutate.run_sync(box=Box())
        assert ([1, 2], {"k": 3}, 5) == tuple(result.output)
        assert [1, 2] == result.state["items"]

    def test_dead_code_is_dropped(self) -> None:
        @flow
        async def early_exit(x: int) -> int:
            return x
            await reserve("never")

        assert ["return@L"] == [n.id[: n.id.index("L") + 1] for n in early_exit.blueprint.nodes]


def load_module(tmp_path: Path, source: str) -> Any:
    name = f"flowkit_compiler_case_{next(_COUNTER)}"
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    module_spec = importlib.util.spec_from_file_location(name, path)
    assert module_spec is not None
    assert module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    finally:
        del sys.modules[name]
    return module


_COUNTER = itertools.count()


# -- big and random programs ----------------------------------------------------------------------

PRELUDE = """\
from flowkit.dsl._flow import flow
from flowkit.dsl._node import node


@node
async def inc(a):
    return (a + 1) % 97


@node
async def mix(a, b):
    return (a * 3 + b) % 97


@node
async def check(a):
    if a % 5 == 0:
        raise ValueError(a)
    return a


@flow
async def subject(seed):
    v0, v1, v2, v3 = seed, seed + 1, seed * 2, 5
    acc = []
"""
NAMES = st.sampled_from(["v0", "v1", "v2", "v3"])
SMALL = st.integers(0, 96)


def statements(draw: st.DrawFn, depth: int, loops: int) -> list[str]:
    kinds = ["call", "mix", "let", "gather", "append", "check"]
    kinds += ["if", "for", "while", "try"] if depth < 2 else []
    kinds += ["break", "continue"] if loops else []
    kind = draw(st.sampled_from(kinds))
    a, b, c = draw(NAMES), draw(NAMES), draw(NAMES)
    simple = {
        "call": f"{a} = await inc({b})",
        "mix": f"{a} = await mix({b}, {c})",
        "let": f"{a} = ({b} + {draw(SMALL)}) % 97",
        "gather": f"{a}, {b} = await flow.gather(inc({c}), mix({b}, {a}))",
        "append": f"acc.append({a})",
        "check": f"{a} = await check({b})",
    }
    if kind in simple:
        return [simple[kind]]
    if kind in ("break", "continue"):
        return [f"if {a} % 3 == {draw(st.integers(0, 2))}:", f"    {kind}"]
    return compound(draw, kind, depth, loops, a)


def compound(draw: st.DrawFn, kind: str, depth: int, loops: int, name: str) -> list[str]:
    body = block(draw, depth + 1, loops + (kind in ("for", "while")))
    count = draw(st.integers(0, 3))
    if kind == "for":
        return [f"for i{depth} in range({count}):", *body]
    if kind == "while":
        counter = f"w{depth}"
        return [f"{counter} = 0", f"while {counter} < {count}:", f"    {counter} += 1", *body]
    if kind == "try":
        lines = ["try:", *body, "except ValueError as exc:", f"    {name} = int(str(exc)) + 1"]
        return lines + (["finally:", "    acc.append(-1)"] if draw(st.booleans()) else [])
    lines = [f"if {name} > {draw(SMALL)}:", *body]
    if draw(st.booleans()):
        lines += ["else:", *block(draw, depth + 1, loops)]
    return lines


def block(draw: st.DrawFn, depth: int, loops: int) -> list[str]:
    lines = []
    for _ in range(draw(st.integers(1, 3))):
        lines += statements(draw, depth, loops)
    return ["    " + line for line in lines]


@st.composite
def programs(draw: st.DrawFn) -> str:
    body = [line for _ in range(draw(st.integers(1, 6))) for line in statements(draw, 0, 0)]
    body.append("return [v0, v1, v2, v3, acc]")
    return PRELUDE + "".join(f"    {line}\n" for line in body)


@pytest.fixture(scope="module")
def module_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as directory:
        yield Path(directory)


class TestGenerated:
    """Random programs give the same output compiled as plain Python; big flows compile."""

    @settings(
        max_examples=int(os.environ.get("FLOWKIT_EXAMPLES", "80")),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(source=programs(), seed=st.integers(0, 96))
    def test_compiled_equals_plain_python(self, module_dir: Path, source: str, seed: int) -> None:
        module = load_module(module_dir, source)
        try:
            expected = anyio.run(module.subject.fn, seed)
        except ValueError as exc:  # `check` failed outside any try: the run fails too
            expected = f"failed: {exc}"
        for backend in ("asyncio", "trio"):
            result = anyio.run(_run, module.subject, seed, backend=backend)
            if result.status is flowkit.RunStatus.FAILED:
                assert isinstance(result.error, flowkit.NodeError), (source, result.error)
                assert "builtins.ValueError" == result.error.error_type
                assert expected == f"failed: {result.error.message}", source
            else:
                assert expected == result.output, source

    def test_500_statements(self, tmp_path: Path) -> None:
        templates = [
            "v0 = await inc(v1)",
            "v1 = (v0 + {i}) % 97",
            "if v1 > {i} % 97:\n        v2 = await mix(v0, v1)\n    else:\n        v2 = v1",
            "for i in range({i} % 3):\n        v3 = await inc(v3)",
            "v0, v3 = await flow.gather(inc(v0), mix(v3, v2))",
        ]
        lines = [templates[i % len(templates)].format(i=i) for i in range(500)]
        source = PRELUDE + "".join(f"    {line}\n" for line in lines) + "    return v0 + v3\n"
        module = load_module(tmp_path, source)
        assert len(module.subject.blueprint.nodes) > 500
        assert module.subject.run_sync(seed=4).output == anyio.run(module.subject.fn, 4)


async def _run(target: Any, seed: int) -> flowkit.RunResult:
    return await Runtime().run(target, seed=seed)


def test_environment_secret(tmp_path: Path) -> None:
    """A webhook secret read from the environment becomes a ``$env.NAME`` reference."""
    module = load_module(
        tmp_path,
        """
        import os
        from flowkit.dsl._flow import flow

        @flow
        async def hooked():
            return await flow.webhook("/h", secret=os.environ["HOOK_SECRET"])
        """,
    )
    assert "$env.HOOK_SECRET" == module.hooked.blueprint.node("webhook").params["secret"]
    assert "HOOK_SECRET" not in os.environ

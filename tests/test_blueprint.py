"""Tests for the blueprint model: JSON, digest, lint, validation, analysis and diagrams."""

# STYLE.md puts the expected value first in asserts, which SIM300 calls a Yoda condition.

from __future__ import annotations

import contextlib
import json
import sys
import types
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import flowkit.blueprint
from flowkit._durations import Backoff
from flowkit._errors import BlueprintError
from flowkit.blueprint import (
    Analysis,
    Blueprint,
    EdgeSpec,
    LintIssue,
    NodeConfig,
    NodeSpec,
    analyze,
    lint,
    validate,
)
from flowkit.blueprint import _mermaid as mermaid_module
from flowkit.blueprint._mermaid import mimebundle, to_mermaid
from flowkit.blueprint._validate import parse_blueprint_json, structure_blueprint
from flowkit.testing.strategies import blueprints

REGISTRY: dict[str, object] = {"inc": lambda x: x + 1, "a": print, "b": print, "c": print}


def call(node_id: str, uses: str = "a", **kwargs: Any) -> NodeSpec:
    """A call node using ``uses`` (a registered name by default)."""
    return NodeSpec(node_id, "call", uses=uses, **kwargs)


def graph(*pairs: str, nodes: tuple[NodeSpec, ...] = (), **edge_kw: Any) -> Blueprint:
    """A blueprint of call nodes from ``"a>b"`` pairs, plus extra ``nodes``."""
    edges = [EdgeSpec(*pair.split(">"), **edge_kw) for pair in pairs]
    named = dict.fromkeys(n for e in edges for n in (e.source, e.target))
    extra = {n.id for n in nodes}
    specs = [call(n) for n in named if n not in extra]
    return Blueprint(id="g", nodes=(*specs, *nodes), edges=edges)


def loop_graph(*, exit_edge: bool = False) -> Blueprint:
    """fetch -> check -> until -> fetch, where ``until`` is a loop starting at fetch."""
    loop = NodeSpec("until", "loop", params={"start": "fetch", "condition": "False"})
    edges = [EdgeSpec("fetch", "check"), EdgeSpec("check", "until"), EdgeSpec("until", "fetch")]
    nodes = [call("fetch"), call("check"), loop]
    if exit_edge:
        nodes.append(call("done"))
        edges.append(EdgeSpec("until", "done", action="exit"))
    return Blueprint(id="poll", nodes=nodes, edges=edges)


def codes(issues: list[LintIssue]) -> set[str]:
    """The set of issue codes."""
    return {issue.code for issue in issues}


class TestRoundTrip:
    """A blueprint survives JSON and plain data exactly, digest included."""

    @settings(deadline=None, max_examples=150)
    @given(blueprints(with_loops=True))
    def test_json_round_trip_is_exact(self, bp: Blueprint) -> None:
        again = Blueprint.from_json(bp.to_json())
        assert bp == again
        assert bp.digest == again.digest

    @settings(deadline=None, max_examples=50)
    @given(blueprints(max_nodes=6, with_loops=True))
    def test_indented_json_and_dict_round_trip(self, bp: Blueprint) -> None:
        assert bp == Blueprint.from_json(bp.to_json(indent=2))
        assert bp == Blueprint.from_dict(bp.to_dict())

    def test_hand_written_json_without_defaults(self) -> None:
        text = '{"id": "x", "nodes": [{"id": "a", "uses": "a", "config": {"timeout": 5}}]}'
        expected = Blueprint(id="x", nodes=[call("a", config=NodeConfig(timeout=5))])
        assert expected == Blueprint.from_json(text)

    def test_retry_policy_fields(self) -> None:
        """Unlimited retries, error types and retry_timeout are read back as written."""
        config = (
            '{"retries": null, "retry_on": ["builtins.TimeoutError"], '
            '"never_retry": ["app.Declined"], "retry_timeout": 1800, "queue": "gpu"}'
        )
        text = '{"id": "x", "nodes": [{"id": "a", "uses": "a", "config": ' + config + "}]}"
        bp = Blueprint.from_json(text)
        expected = NodeConfig(
            retries=None,
            retry_on=("builtins.TimeoutError",),
            never_retry=("app.Declined",),
            retry_timeout=1800.0,
            queue="gpu",
        )
        assert expected == bp.nodes[0].config
        assert bp == Blueprint.from_json(bp.to_json())

    def test_default_policy_is_not_written(self) -> None:
        """Blueprints that use none of the retry policy fields keep their JSON (and digest)."""
        assert "retry" not in Blueprint(id="x", nodes=[call("a")]).to_json().replace("retries", "")

    def test_bytes_and_durations_in_backoff(self) -> None:
        node = b'{"id": "a", "uses": "a", "config": {"backoff": {"initial": "250ms"}}}'
        backoff = Blueprint.from_json(b'{"id": "x", "nodes": [%s]}' % node).nodes[0].config.backoff
        assert Backoff(initial=0.25) == backoff


class TestStrategies:
    """The public ``blueprints()`` strategy only generates clean, valid blueprints."""

    @settings(deadline=None, max_examples=150)
    @given(blueprints(with_loops=True))
    def test_generated_blueprints_are_clean(self, bp: Blueprint) -> None:
        assert [] == lint(bp, REGISTRY)
        assert bp is validate(bp, REGISTRY)

    @settings(deadline=None, max_examples=30)
    @given(blueprints(max_nodes=4, with_routes=False))
    def test_without_routes_no_edge_is_labelled(self, bp: Blueprint) -> None:
        assert [] == [e for e in bp.edges if e.action is not None or e.when is not None]

    def test_max_nodes_must_be_positive(self) -> None:
        with pytest.raises(ValueError, match="at least 1"):
            blueprints(0)


def _change_node(bp: Blueprint, **changes: Any) -> Blueprint:
    return attrs.evolve(bp, nodes=(attrs.evolve(bp.nodes[0], **changes), *bp.nodes[1:]))


def _change_config(bp: Blueprint, **changes: Any) -> Blueprint:
    return _change_node(bp, config=attrs.evolve(bp.nodes[0].config, **changes))


def _change_edge(bp: Blueprint, **changes: Any) -> Blueprint:
    return attrs.evolve(bp, edges=(attrs.evolve(bp.edges[0], **changes), *bp.edges[1:]))


BASE = Blueprint(
    id="base",
    nodes=[call("a", params={"k": 1}, inputs={"x": "$input.x"}), call("b")],
    edges=[EdgeSpec("a", "b")],
)
CHANGES = {
    "id": lambda bp: attrs.evolve(bp, id="other"),
    "version": lambda bp: attrs.evolve(bp, version=2),
    "metadata": lambda bp: attrs.evolve(bp, metadata={"owner": "me"}),
    "node order": lambda bp: attrs.evolve(bp, nodes=bp.nodes[::-1]),
    "node added": lambda bp: attrs.evolve(bp, nodes=(*bp.nodes, call("c"))),
    "node id": lambda bp: _change_node(bp, id="z"),
    "kind": lambda bp: _change_node(bp, kind="let"),
    "uses": lambda bp: _change_node(bp, uses="c"),
    "params": lambda bp: _change_node(bp, params={"k": 2}),
    "inputs": lambda bp: _change_node(bp, inputs={"x": "$state.x"}),
    "retries": lambda bp: _change_config(bp, retries=1),
    "backoff": lambda bp: _change_config(bp, backoff=Backoff()),
    "timeout": lambda bp: _change_config(bp, timeout=1.5),
    "fallback": lambda bp: _change_config(bp, fallback="b"),
    "join": lambda bp: _change_config(bp, join="any"),
    "unlimited retries": lambda bp: _change_config(bp, retries=None),
    "retry_on": lambda bp: _change_config(bp, retry_on=("builtins.TimeoutError",)),
    "never_retry": lambda bp: _change_config(bp, never_retry=("builtins.ValueError",)),
    "retry_timeout": lambda bp: _change_config(bp, retry_timeout=60.0),
    "queue": lambda bp: _change_config(bp, queue="gpu"),
    "edge added": lambda bp: attrs.evolve(bp, edges=(*bp.edges, EdgeSpec("b", "a"))),
    "edge source": lambda bp: _change_edge(bp, source="b", target="a"),
    "edge action": lambda bp: _change_edge(bp, action="go"),
    "edge when": lambda bp: _change_edge(bp, when="result"),
}


class TestDigest:
    """The digest is a sha256 of the content and changes when anything changes."""

    def test_equal_content_equal_digest(self) -> None:
        assert BASE.digest == attrs.evolve(BASE).digest
        assert 64 == len(BASE.digest)

    @pytest.mark.parametrize("change", CHANGES.values(), ids=CHANGES.keys())
    def test_any_change_changes_the_digest(self, change: Any) -> None:
        assert BASE.digest != change(BASE).digest

    def test_mismatched_digest_is_refused(self) -> None:
        data = BASE.to_dict()
        data["version"] = 7
        with pytest.raises(BlueprintError) as info:
            structure_blueprint(data)
        assert ["digest-mismatch"] == [i.code for i in info.value.issues]

    def test_digest_may_be_omitted(self) -> None:
        data = BASE.to_dict()
        del data["digest"]
        assert BASE == structure_blueprint(data)


LOOP_NO_START = Blueprint(
    id="x", nodes=[call("a"), NodeSpec("l", "loop")], edges=[EdgeSpec("a", "l")]
)
PROBLEMS: dict[str, tuple[Blueprint, dict[str, object] | None]] = {
    "empty-blueprint": (Blueprint(id="x"), None),
    "duplicate-node": (Blueprint(id="x", nodes=[call("a"), call("a")]), None),
    "unknown-edge-source": (Blueprint(id="x", nodes=[call("b")], edges=[EdgeSpec("a", "b")]), None),
    "unknown-edge-target": (Blueprint(id="x", nodes=[call("a")], edges=[EdgeSpec("a", "b")]), None),
    "unknown-input-source": (graph("a>b", nodes=(call("b", inputs={"v": "nope"}),)), None),
    "missing-implementation": (Blueprint(id="x", nodes=[NodeSpec("a")]), None),
    "cycle-without-loop": (graph("a>b", "b>c", "c>b"), None),
    "bad-loop": (LOOP_NO_START, None),
    "bad-condition": (graph("a>b", when="import os"), None),
    "bad-config": (Blueprint(id="x", nodes=[call("a", config=NodeConfig(retries=-1))]), None),
    "orphan": (graph("a>b", nodes=(call("c"),)), None),
    "unreachable": (graph("a>b", "c>d", "d>c"), None),
    "single-predecessor-join": (
        graph("a>b", nodes=(call("b", config=NodeConfig(join="all")),)),
        None,
    ),
}
WARNINGS = {"orphan", "unreachable", "single-predecessor-join"}


class TestLint:
    """Each lint code is reported for a blueprint with that problem, and never for a clean one."""

    def test_every_code_has_a_case(self) -> None:
        clean = graph("a>b", "a>c", "b>d", "c>d", nodes=(call("d", config=NodeConfig(join="all")),))
        assert [] == lint(clean, REGISTRY)
        assert 13 == len(PROBLEMS)

    @pytest.mark.parametrize("code", PROBLEMS.keys())
    def test_problem_is_reported(self, code: str) -> None:
        bp, registry = PROBLEMS[code]
        found = [i for i in lint(bp, registry) if i.code == code]
        assert found, lint(bp, registry)
        expected = "warning" if code in WARNINGS else "error"
        assert {expected} == {i.severity for i in found}
        assert all(i.message for i in found)

    @pytest.mark.parametrize(
        "bp",
        [
            Blueprint(id="x", nodes=[call("a", uses="unregistered")]),
            Blueprint(id="x", nodes=[call("a", config=NodeConfig(fallback="unregistered"))]),
        ],
        ids=["uses", "fallback"],
    )
    def test_registry_names_are_checked(self, bp: Blueprint) -> None:
        assert {"missing-implementation"} == codes(lint(bp, REGISTRY))
        assert set() == codes(lint(bp))

    @pytest.mark.parametrize(
        "config",
        [NodeConfig(retries=-1), NodeConfig(timeout=0), NodeConfig(timeout=-2.0),
         NodeConfig(join="some"), NodeConfig(retry_timeout=0),
         NodeConfig(retry_on=("TimeoutError",)), NodeConfig(never_retry=(" builtins.X",)),
         NodeConfig(queue=" gpu")],
        ids=["retries", "zero-timeout", "negative-timeout", "join", "zero-retry-timeout",
             "unqualified-retry-on", "spaced-never-retry", "spaced-queue"],
    )  # fmt: skip
    def test_bad_config(self, config: NodeConfig) -> None:
        issues = lint(Blueprint(id="x", nodes=[call("a", config=config)]))
        assert ["bad-config"] == [i.code for i in issues]

    @pytest.mark.parametrize(
        "params",
        [{}, {"start": "nope"}, {"start": 3}, {"start": "l"}],
        ids=["missing", "unknown", "not-a-string", "itself"],
    )
    def test_bad_loop_start(self, params: dict[str, object]) -> None:
        bp = Blueprint(
            id="x", nodes=[call("a"), NodeSpec("l", "loop", params=params)],
            edges=[EdgeSpec("a", "l")],
        )  # fmt: skip
        assert "bad-loop" in codes(lint(bp))

    def test_loop_needs_an_edge_to_its_start(self) -> None:
        bp = attrs.evolve(loop_graph(), edges=loop_graph().edges[:2])
        assert ["bad-loop"] == [i.code for i in lint(bp) if i.severity == "error"]

    def test_cycle_through_a_loop_node_is_legal(self) -> None:
        assert [] == lint(loop_graph(), REGISTRY)

    def test_cycle_message_names_the_path(self) -> None:
        [issue] = lint(graph("a>b", "b>c", "c>b"))
        assert "'b' -> 'c' -> 'b'" in issue.message

    @pytest.mark.parametrize("when", ["result <", "os.system('x')", "__import__('os')", "x > 1"])
    def test_bad_conditions(self, when: str) -> None:
        issues = lint(graph("a>b", when=when))
        assert ["bad-condition"] == [i.code for i in issues]
        assert "a" == issues[0].node_id

    @pytest.mark.parametrize("condition", ["not result[", "ready", 3])
    def test_bad_loop_conditions(self, condition: object) -> None:
        bp = loop_graph()
        loop = attrs.evolve(bp.nodes[2], params={"start": "fetch", "condition": condition})
        issues = lint(attrs.evolve(bp, nodes=(*bp.nodes[:2], loop)))
        assert [("bad-condition", "until")] == [(i.code, i.node_id) for i in issues]

    def test_compiled_loop_conditions_are_not_checked_here(self) -> None:
        bp = loop_graph()
        params = {"start": "fetch", "mode": "while", "cond": "x", "condition": "ready"}
        loop = attrs.evolve(bp.nodes[2], params=params)
        assert [] == lint(attrs.evolve(bp, nodes=(*bp.nodes[:2], loop)))

    @pytest.mark.parametrize("when", ["result < 10", "state['ready'] and input is not None"])
    def test_good_conditions(self, when: str) -> None:
        assert [] == lint(graph("a>b", when=when))

    @pytest.mark.parametrize("source", ["$input.x", "$state.k", "a"])
    def test_input_sources(self, source: str) -> None:
        assert [] == lint(graph("a>b", nodes=(call("b", inputs={"v": source}),)))

    @pytest.mark.parametrize("source", ["$input.", "$state", "$other.x", "b2"])
    def test_unknown_input_sources(self, source: str) -> None:
        bp = graph("a>b", nodes=(call("b", inputs={"v": source}),))
        assert ["unknown-input-source"] == [i.code for i in lint(bp)]

    def test_join_kind_with_one_predecessor(self) -> None:
        bp = graph("a>j", nodes=(NodeSpec("j", "join"),))
        assert ["single-predecessor-join"] == [i.code for i in lint(bp)]

    def test_loop_continue_edge_does_not_count_as_a_join_predecessor(self) -> None:
        bp = loop_graph()
        fetch = call("fetch", config=NodeConfig(join="any"))
        bp = attrs.evolve(bp, nodes=(fetch, *bp.nodes[1:]))
        assert ["single-predecessor-join"] == [i.code for i in lint(bp)]

    def test_single_node_is_not_an_orphan(self) -> None:
        assert [] == lint(Blueprint(id="x", nodes=[call("a")]))


class TestValidate:
    """``validate`` raises one BlueprintError listing every error, and ignores warnings."""

    def test_lists_all_problems_at_once(self) -> None:
        bp = Blueprint(
            id="bad",
            nodes=[call("a"), call("a"), NodeSpec("n"), call("c", config=NodeConfig(retries=-1))],
            edges=[EdgeSpec("a", "ghost", when="result <"), EdgeSpec("c", "c")],
        )
        with pytest.raises(BlueprintError) as info:
            validate(bp, REGISTRY)
        expected = {
            "duplicate-node", "unknown-edge-target", "missing-implementation",
            "cycle-without-loop", "bad-condition", "bad-config",
        }  # fmt: skip
        assert expected == codes(list(info.value.issues))
        assert "bad" == info.value.blueprint_id
        for code in expected:
            assert f"[{code}]" in str(info.value)

    def test_warnings_do_not_raise(self) -> None:
        bp = graph("a>b", nodes=(call("c"),))
        assert {"orphan"} == codes(lint(bp))
        assert bp is validate(bp, REGISTRY)

    def test_is_reexported(self) -> None:
        assert [
            "Analysis", "Blueprint", "BlueprintDiff", "Change", "EdgeSpec", "LintIssue",
            "NodeConfig", "NodeSpec", "analyze", "diff", "lint", "validate",
        ] == flowkit.blueprint.__all__  # fmt: skip


def _malformed_paths(data: object) -> list[str]:
    with pytest.raises(BlueprintError) as info:
        structure_blueprint(data)
    assert {"malformed"} == codes(list(info.value.issues))
    return [i.message.split(":")[0] for i in info.value.issues]


class TestMalformed:
    """Malformed data and JSON raise BlueprintError naming the path of each problem."""

    @pytest.mark.parametrize(
        ("data", "path"),
        [
            ([], "blueprint"),
            ({"nodes": []}, "id"),
            ({"id": 3}, "id"),
            ({"id": "x", "extra": 1}, "extra"),
            ({"id": "x", "version": True}, "version"),
            ({"id": "x", "nodes": {}}, "nodes"),
            ({"id": "x", "nodes": [{"uses": "a"}]}, "nodes[0].id"),
            ({"id": "x", "nodes": [{"id": "a", "kind": "cal"}]}, "nodes[0].kind"),
            ({"id": "x", "nodes": [{"id": "a", "color": "red"}]}, "nodes[0].color"),
            ({"id": "x", "nodes": [{"id": "a", "uses": 1}]}, "nodes[0].uses"),
            ({"id": "x", "nodes": [{"id": "a", "inputs": {"v": 1}}]}, "nodes[0].inputs.v"),
            ({"id": "x", "nodes": [{"id": "a", "params": {"v": {1, 2}}}]}, "nodes[0].params.v"),
            ({"id": "x", "nodes": [{"id": "a", "config": []}]}, "nodes[0].config"),
            ({"id": "x", "nodes": [{"id": "a"}, {"id": "b", "config": {"retries": "3"}}]},
             "nodes[1].config.retries"),
            ({"id": "x", "nodes": [{"id": "a", "config": {"timeout": "5s"}}]},
             "nodes[0].config.timeout"),
            ({"id": "x", "nodes": [{"id": "a", "config": {"join": "most"}}]},
             "nodes[0].config.join"),
            ({"id": "x", "nodes": [{"id": "a", "config": {"retry_on": "builtins.X"}}]},
             "nodes[0].config.retry_on"),
            ({"id": "x", "nodes": [{"id": "a", "config": {"never_retry": [1]}}]},
             "nodes[0].config.never_retry[0]"),
            ({"id": "x", "nodes": [{"id": "a", "config": {"retry_timeout": "1m"}}]},
             "nodes[0].config.retry_timeout"),
            ({"id": "x", "nodes": [{"id": "a", "config": {"queue": 1}}]},
             "nodes[0].config.queue"),
            ({"id": "x", "nodes": [{"id": "a", "config": {"backoff": {"factor": "2"}}}]},
             "nodes[0].config.backoff.factor"),
            ({"id": "x", "nodes": [{"id": "a", "config": {"backoff": {"initial": "soon"}}}]},
             "nodes[0].config.backoff"),
            ({"id": "x", "nodes": [{"id": "a", "config": {"backoff": {"jitter": 1}}}]},
             "nodes[0].config.backoff.jitter"),
            ({"id": "x", "edges": [{"source": "a"}]}, "edges[0].target"),
            ({"id": "x", "edges": [{"source": "a", "target": "b", "when": 1}]}, "edges[0].when"),
            ({"id": "x", "metadata": {"k": object()}}, "metadata.k"),
            ({"id": "x", "digest": 5}, "digest"),
        ],
    )  # fmt: skip
    def test_path_is_named(self, data: object, path: str) -> None:
        assert [path] == _malformed_paths(data)

    def test_every_problem_is_reported(self) -> None:
        data = {"id": "x", "nodes": [{"id": 1}, {"id": "b", "kind": "?"}], "edges": [{}]}
        expected = ["nodes[0].id", "nodes[1].kind", "edges[0].source", "edges[0].target"]
        assert expected == _malformed_paths(data)

    def test_issue_names_the_node(self) -> None:
        with pytest.raises(BlueprintError) as info:
            structure_blueprint({"id": "x", "nodes": [{"id": "a", "kind": "?"}]})
        assert "a" == info.value.issues[0].node_id
        assert "x" == info.value.blueprint_id

    @pytest.mark.parametrize(
        ("text", "where"),
        [('{"id": "x",\n  "nodes": [}', "line 2, column 13"), ("", "line 1, column 1")],
    )
    def test_invalid_json_names_line_and_column(self, text: str, where: str) -> None:
        with pytest.raises(BlueprintError) as info:
            parse_blueprint_json(text)
        [issue] = info.value.issues
        assert "malformed" == issue.code
        assert where in issue.message

    @pytest.mark.parametrize(
        "text",
        [b"\xff\xfe{", '{"id": "a", "id": "b"}', "[" * 100_000],
        ids=["not-utf8", "duplicate-key", "deep"],
    )
    def test_other_bad_json(self, text: str | bytes) -> None:
        with pytest.raises(BlueprintError):
            Blueprint.from_json(text)

    @settings(deadline=None)
    @given(
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=3),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(st.sampled_from(["id", "nodes", "edges", "kind", "x"]), inner)
            ),
            max_leaves=12,
        )
    )
    def test_only_blueprint_error_escapes(self, data: object) -> None:
        with contextlib.suppress(BlueprintError):
            structure_blueprint(data)
        with contextlib.suppress(BlueprintError):
            parse_blueprint_json(json.dumps(data))


class TestAnalyze:
    """``analyze`` finds start and terminal nodes, cycles, depth and width."""

    def test_chain(self) -> None:
        assert Analysis(("a",), ("c",), (), 3, 1) == analyze(graph("a>b", "b>c"))

    def test_fan_out(self) -> None:
        assert Analysis(("a",), ("b", "c", "d"), (), 2, 3) == analyze(graph("a>b", "a>c", "a>d"))

    def test_fan_in(self) -> None:
        assert Analysis(("a", "b"), ("c",), (), 2, 2) == analyze(graph("a>c", "b>c"))

    def test_diamond(self) -> None:
        assert Analysis(("a",), ("d",), (), 3, 2) == analyze(graph("a>b", "a>c", "b>d", "c>d"))

    def test_longest_path_sets_the_depth(self) -> None:
        assert 4 == analyze(graph("a>b", "b>c", "c>d", "a>d")).depth

    def test_loop(self) -> None:
        expected = Analysis(("fetch",), ("until",), (("fetch", "check", "until"),), 3, 1)
        assert expected == analyze(loop_graph())

    def test_loop_exit_is_not_a_start_node(self) -> None:
        assert ("fetch",) == analyze(loop_graph(exit_edge=True)).start_nodes

    def test_loop_exit_is_terminal(self) -> None:
        analysis = analyze(loop_graph(exit_edge=True))
        assert (("done",), 4) == (analysis.terminal_nodes, analysis.depth)

    def test_empty(self) -> None:
        assert Analysis((), (), (), 0, 0) == analyze(Blueprint(id="x"))

    def test_edges_to_unknown_nodes_are_ignored(self) -> None:
        bp = Blueprint(id="x", nodes=[call("a")], edges=[EdgeSpec("a", "ghost")])
        assert Analysis(("a",), ("a",), (), 1, 1) == analyze(bp)

    @settings(deadline=None, max_examples=50)
    @given(blueprints(with_loops=True))
    def test_properties(self, bp: Blueprint) -> None:
        analysis = analyze(bp)
        assert 1 == len(analysis.start_nodes)
        assert 1 <= analysis.width <= len(bp.nodes)
        assert analysis.depth * analysis.width >= len(bp.nodes)


class TestMermaid:
    """Mermaid output shows every node and edge label, escapes ids and is stable."""

    def test_every_node_and_edge_label(self) -> None:
        bp = graph("a>b", "a>c", nodes=(call("b"), NodeSpec("c", "wait")))
        bp = attrs.evolve(
            bp, edges=(EdgeSpec("a", "b", action="big"), EdgeSpec("a", "c", when="result"))
        )
        text = to_mermaid(bp)
        assert text.startswith("flowchart TD\n")
        for label in ['"a"', '"b"', '"c"', '|"big"|', '|"result"|']:
            assert label in text

    def test_exact_output(self) -> None:
        expected = "\n".join([
            "flowchart TD",
            '    n0["fetch"]',
            '    n1["check"]',
            '    n2{{"until"}}',
            '    n3["done"]',
            "    n0 --> n1",
            "    n1 --> n2",
            "    n2 -.-> n0",
            '    n2 -->|"exit"| n3',
        ])  # fmt: skip
        assert expected == loop_graph(exit_edge=True).mermaid()

    @pytest.mark.parametrize(
        ("kind", "shape"),
        [("call", '["x"]'), ("branch", '{"x"}'), ("wait", '(["x"])'), ("sleep", '(["x"])'),
         ("webhook", '(["x"])'), ("loop", '{{"x"}}'), ("join", '(("x"))')],
    )  # fmt: skip
    def test_shape_by_kind(self, kind: str, shape: str) -> None:
        bp = Blueprint(id="s", nodes=[NodeSpec("x", kind)])
        assert f"    n0{shape}" in to_mermaid(bp)

    def test_ids_and_labels_are_escaped(self) -> None:
        bp = graph("step #1>a-b.c d", when='result["x"] < 2 | 1')
        text = to_mermaid(bp)
        assert '    n0["step #35;1"]' in text
        assert '    n1["a-b.c d"]' in text
        assert '    n0 -->|"result#91;#34;x#34;#93; #60; 2 #124; 1"| n1' in text

    def test_action_and_condition_together(self) -> None:
        bp = graph("a>b", action="big", when="result > 1")
        assert '|"big if result #62; 1"|' in to_mermaid(bp)

    def test_unknown_edge_endpoint_is_drawn(self) -> None:
        bp = Blueprint(id="x", nodes=[call("a")], edges=[EdgeSpec("a", "ghost")])
        assert '    n1["? ghost"]\n    n0 --> n1' in to_mermaid(bp)

    @settings(deadline=None, max_examples=50)
    @given(blueprints(with_loops=True))
    def test_stable(self, bp: Blueprint) -> None:
        text = to_mermaid(bp)
        assert text == to_mermaid(Blueprint.from_json(bp.to_json()))
        assert len(bp.nodes) + len(bp.edges) + 1 == len(text.splitlines())


class _FakeSource:
    result: object = "<svg/>"

    def __init__(self, source: str) -> None:
        self.source = source

    def pipe(self, *, format: str, encoding: str) -> object:
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


class TestMimebundle:
    """Jupyter gets Mermaid markdown, plus SVG only when Graphviz works."""

    @pytest.fixture
    def fake_graphviz(self, monkeypatch: pytest.MonkeyPatch) -> type[_FakeSource]:
        module = types.ModuleType("graphviz")
        source = type("Source", (_FakeSource,), {})
        module.Source = source
        monkeypatch.setitem(sys.modules, "graphviz", module)
        monkeypatch.setattr(mermaid_module.shutil, "which", lambda name: "/usr/bin/dot")
        return source

    def test_markdown_and_plain(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(mermaid_module.shutil, "which", lambda name: None)
        bp = graph("a>b")
        bundle = bp._repr_mimebundle_()
        assert {"text/markdown", "text/plain"} == set(bundle)
        assert f"```mermaid\n{bp.mermaid()}\n```" == bundle["text/markdown"]
        assert repr(bp) == bundle["text/plain"]

    def test_svg_when_graphviz_works(self, fake_graphviz: type[_FakeSource]) -> None:
        assert "<svg/>" == mimebundle(graph("a>b"))["image/svg+xml"]

    @pytest.mark.parametrize(
        "failure", [RuntimeError("dot crashed"), OSError("no dot"), b"not text"]
    )
    def test_graphviz_failure_falls_back(
        self, fake_graphviz: type[_FakeSource], failure: object
    ) -> None:
        fake_graphviz.result = failure
        assert "image/svg+xml" not in mimebundle(graph("a>b"))

    def test_dot_source(self) -> None:
        dot = mermaid_module.to_dot(loop_graph(exit_edge=True))
        assert 'n2 [label="until", shape="hexagon"];' in dot
        assert 'n2 -> n0 [style="dashed"];' in dot
        assert 'n2 -> n3 [label="exit"];' in dot

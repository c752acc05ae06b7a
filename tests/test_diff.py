"""``flowkit.blueprint._diff``: what changed between two versions of a flow, and whether a
run's positions (waits, nodes in flight, timers, children, loops, batches) survive."""

from __future__ import annotations

import json

import attrs
from diff_flows import (
    orders_added,
    orders_cond,
    orders_patched,
    orders_removed,
    orders_renamed,
    orders_v1,
)

from flowkit import Backoff
from flowkit.blueprint import Blueprint, EdgeSpec, NodeConfig, NodeSpec
from flowkit.blueprint._diff import Change, Position, check_positions, diff, run_positions

V1 = orders_v1.blueprint


def _branch(bp: Blueprint) -> str:
    """The id of the flow's ``if n > ...`` branch (it holds its line number)."""
    return next(n.id for n in bp.nodes if "cond" in n.params)


def _retries(bp: Blueprint, node_id: str, retries: int) -> Blueprint:
    nodes = [
        attrs.evolve(n, config=NodeConfig(retries=retries)) if n.id == node_id else n
        for n in bp.nodes
    ]
    return attrs.evolve(bp, nodes=nodes)


class TestDiff:
    """Each realistic change is classified as what it is, and nothing else is reported."""

    def test_same_blueprint_has_no_changes(self) -> None:
        same = diff(V1, V1)
        assert (False, (), (), ()) == (same.changed, same.added, same.removed, same.renamed)

    def test_node_added_in_the_middle(self) -> None:
        changes = diff(V1, orders_added.blueprint)
        assert ("reserve",) == changes.added
        assert () == changes.removed
        assert ("approval -> reserve", "reserve -> charge") == changes.edges_added
        assert ("approval -> charge",) == changes.edges_removed
        assert () == changes.conditions + changes.configs + changes.signatures

    def test_node_removed(self) -> None:
        changes = diff(V1, orders_removed.blueprint)
        assert ("audit", _branch(V1)) == changes.removed
        assert () == changes.added
        assert ("fetch -> approval",) == changes.edges_added

    def test_condition_changed(self) -> None:
        changes = diff(V1, orders_cond.blueprint)
        new_if = _branch(orders_cond.blueprint)
        assert (Change(new_if, "condition", "n > 10", "n > 100"),) == changes.conditions
        assert (_branch(V1), new_if) in changes.renamed  # the branch moved: its id has its line
        assert ((), (), (), ()) == (
            changes.added,
            changes.removed,
            changes.edges_added,
            changes.edges_removed,
        )

    def test_retries_changed(self) -> None:
        changes = diff(V1, _retries(V1, "charge", 5))
        assert (Change("charge", "retries", 0, 5),) == changes.configs
        assert () == changes.added + changes.removed + changes.edges_added

    def test_wait_renamed(self) -> None:
        changes = diff(V1, orders_renamed.blueprint)
        assert ("approval", "manager-approval") in changes.renamed
        signal = Change("manager-approval", "signal", "approval", "manager-approval")
        assert (signal,) == changes.signatures
        assert () == changes.added + changes.removed

    def test_patch_added(self) -> None:
        changes = diff(V1, orders_patched.blueprint)
        assert ("reserve-first",) == changes.patches_added
        assert ("patch:reserve-first", "reserve") == changes.added
        assert () == changes.removed

    def test_changed_call_target_is_a_signature_change(self) -> None:
        old = Blueprint(id="f", nodes=(NodeSpec("a", uses="m.a", params={"args": ["x"]}),))
        new = Blueprint(id="f", nodes=(NodeSpec("a", uses="m.b", params={"args": ["x", "y"]}),))
        whats = [change.what for change in diff(old, new).signatures]
        assert ["uses", "args"] == whats

    def test_edge_condition_changed(self) -> None:
        nodes = (NodeSpec("a", uses="m.a"), NodeSpec("b", uses="m.b"))
        old = Blueprint(id="f", nodes=nodes, edges=(EdgeSpec("a", "b", when="x > 1"),))
        new = Blueprint(id="f", nodes=nodes, edges=(EdgeSpec("a", "b", when="x > 2"),))
        assert (Change("a -> b", "condition", "x > 1", "x > 2"),) == diff(old, new).conditions

    def test_json_form(self) -> None:
        data = diff(V1, orders_renamed.blueprint).to_dict()
        assert {"old": "approval", "new": "manager-approval"} in data["renamed"]
        assert V1.digest == data["old_digest"]


WAITING = {
    "waits": {"approval": {"node": "approval", "activation": 1, "timer": None}},
    "outputs": {"fetch": 2},
}
IN_FLIGHT = {"dispatches": {"d1": {"node": "fetch", "attempt": 1}}}


class TestPositions:
    """A position survives when the new version has its node, of the same kind."""

    def test_positions_of_each_section(self) -> None:
        sections = {
            **WAITING,
            **IN_FLIGHT,
            "timers": {"t1": {"node": "nap", "purpose": "sleep"}, "debounce": {"due": 1}},
            "children": {"c1": {"node": "ship"}},
            "loops": {"for@L3": {}},
            "batches": {"map@L4": {}},
        }
        kinds = sorted((p.kind, p.node) for p in run_positions(sections))
        expected = [
            ("batch", "map@L4"),
            ("child", "ship"),
            ("loop", "for@L3"),
            ("node", "fetch"),
            ("timer", "nap"),
            ("wait", "approval"),
        ]
        assert expected == kinds

    def test_wait_and_node_in_flight_survive_an_added_node(self) -> None:
        positions = run_positions({**WAITING, **IN_FLIGHT})
        checks = check_positions(positions, orders_added.blueprint, old=V1)
        assert [True, True] == [c.ok for c in checks]

    def test_renamed_wait_strands_the_run(self) -> None:
        positions = run_positions(WAITING)
        (check,) = check_positions(positions, orders_renamed.blueprint, old=V1)
        assert check.problem is not None
        assert "is not in the new version" in check.problem

    def test_mapped_wait_must_keep_its_signal_name(self) -> None:
        positions = run_positions(WAITING)
        mapping = {"approval": "manager-approval"}
        (check,) = check_positions(positions, orders_renamed.blueprint, old=V1, mapping=mapping)
        assert "manager-approval" == check.new_node
        assert check.problem is not None
        assert "must keep its signal name" in check.problem

    def test_removed_node_in_flight_strands_the_run(self) -> None:
        positions = run_positions({"dispatches": {"d1": {"node": "audit"}}})
        (check,) = check_positions(positions, orders_removed.blueprint, old=V1)
        assert not check.ok

    def test_node_of_another_function_strands_the_run(self) -> None:
        positions = run_positions(IN_FLIGHT)
        new = Blueprint(id="orders", nodes=(NodeSpec("fetch", uses="elsewhere.fetch"),))
        (check,) = check_positions(positions, new, old=V1)
        assert check.problem is not None
        assert "calls 'diff_flows.fetch'" in check.problem

    def test_without_the_old_version_the_position_kind_is_checked(self) -> None:
        sleep = Position("timer", "nap", "t1", "sleep")
        new = Blueprint(id="f", nodes=(NodeSpec("nap", uses="m.nap"),))
        (check,) = check_positions([sleep], new)
        assert check.problem is not None
        assert "is a call node" in check.problem


class TestJson:
    """The diff is JSON data, a node's backoff included."""

    def test_backoff_change_is_plain_data(self) -> None:
        old = Blueprint(id="f", nodes=(NodeSpec("a", uses="m.a"),))
        config = NodeConfig(retries=3, backoff=Backoff(initial=2.0))
        new = Blueprint(id="f", nodes=(NodeSpec("a", uses="m.a", config=config),))
        data = json.loads(json.dumps(diff(old, new).to_dict()))
        backoff = next(c for c in data["configs"] if c["what"] == "backoff")
        assert (None, 2.0) == (backoff["old"], backoff["new"]["initial"])

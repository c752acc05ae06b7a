"""Values JSON cannot hold are clear errors where they enter, never a crash later.

Python reads and writes ints of at most ``sys.get_int_max_str_digits()`` (4 300)
digits as text, and JSON has no NaN or infinity: blueprint JSON with such a
value is a ``BlueprintError`` naming where; a node returning one fails (its run
fails) rather than taking down the runtime or worker that stores it.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import anyio
import pytest

import flowkit
from flowkit import BlueprintError, NodeError, RunStatus, StoreError
from flowkit._serde import SerializationError, dumps, fits_json, loads, to_data
from flowkit.stores import SQLiteStore
from flowkit.stores import from_url as store_from_url
from flowkit.stores._codec import decode_delta, decode_state
from flowkit.transports import from_url as transport_from_url

if TYPE_CHECKING:
    from pathlib import Path

HUGE = 10**5000
DIGITS = "1" * 5000
BOUND = 30.0


def _blueprint_json(**replace: str) -> str:
    """A small valid blueprint's JSON, with ``replace``'s placeholders put in."""
    text = (
        '{"id": "big", "version": VERSION, "nodes": [{"id": "a", "uses": "a", '
        '"params": {"n": PARAM}, "config": {"timeout": TIMEOUT}}]}'
    )
    for name, value in {"VERSION": "1", "PARAM": "1", "TIMEOUT": "null", **replace}.items():
        text = text.replace(name, value)
    return text


class TestBlueprintJSON:
    def test_the_template_is_valid(self) -> None:
        assert "big" == flowkit.Blueprint.from_json(_blueprint_json()).id

    @pytest.mark.parametrize("where", ["VERSION", "PARAM"])
    def test_a_number_of_5000_digits_is_a_blueprint_error(self, where: str) -> None:
        with pytest.raises(BlueprintError, match="more than 4300 digits") as raised:
            flowkit.Blueprint.from_json(_blueprint_json(**{where: DIGITS}))
        assert "write it as a string" in str(raised.value)

    @pytest.mark.parametrize(
        ("where", "value", "path"),
        [
            ("PARAM", "NaN", "nodes[0].params.n"),
            ("PARAM", "[1, -Infinity]", "nodes[0].params.n[1]"),
            ("TIMEOUT", "Infinity", "nodes[0].config.timeout"),
        ],
    )
    def test_nan_and_infinity_are_blueprint_errors(self, where: str, value: str, path: str) -> None:
        with pytest.raises(BlueprintError, match="expected a finite number") as raised:
            flowkit.Blueprint.from_json(_blueprint_json(**{where: value}))
        assert path in str(raised.value)

    @pytest.mark.parametrize(
        ("data", "path"),
        [
            ({"id": "big", "version": HUGE}, "version"),
            ({"id": "big", "nodes": [{"id": "a", "uses": "a", "params": {"n": HUGE}}]}, "params.n"),
            ({"id": "big", "nodes": [{"id": "a", "kind": HUGE}]}, "nodes[0].kind"),
            ({"id": "big", HUGE: 1}, "<an int of about 5001 digits>"),
        ],
    )
    def test_huge_ints_in_plain_data_are_blueprint_errors(self, data: dict, path: str) -> None:  # type: ignore[type-arg]
        with pytest.raises(BlueprintError) as raised:
            flowkit.Blueprint.from_dict(data)
        assert path in str(raised.value)


class TestSerde:
    def test_a_huge_int_cannot_be_plain_data(self) -> None:
        for value in (HUGE, [1, HUGE], {"n": HUGE}, {HUGE: 1}):
            with pytest.raises(SerializationError, match="pass it as a string or a Decimal"):
                dumps(value)
        assert 10**4000 == json.loads(dumps(10**4000))
        assert fits_json(-(10**4299))
        assert not fits_json(10**4300)

    @pytest.mark.parametrize("text", [DIGITS, "[" * 100_000, b'"\xff"'])
    def test_json_that_cannot_be_read_is_a_serialization_error(self, text: str | bytes) -> None:
        with pytest.raises(SerializationError, match="malformed JSON"):
            loads(text)

    @pytest.mark.parametrize("text", [DIGITS, "[" * 100_000, "[1]", "[[1]]", '{"a": 1}'])
    def test_a_corrupt_record_in_a_store_is_a_store_error(self, text: str) -> None:
        with pytest.raises(StoreError, match="corrupt delta"):
            decode_delta(text)
        with pytest.raises(StoreError, match="corrupt snapshot"):
            decode_state(text)

    def test_plain_values_pass_unchanged(self) -> None:
        assert [1, 2.5, "x", None, True] == to_data((1, 2.5, "x", None, True))


# -- a node returning a value JSON cannot hold --------------------------------------------------


@flowkit.node
async def huge() -> int:
    return HUGE


@flowkit.node(retries=2)
async def huge_state() -> int:
    flowkit.context().state["total"] = HUGE
    return 1


@flowkit.flow
async def returns_huge() -> int:
    return await huge()


@flowkit.flow
async def writes_huge() -> int:
    return await huge_state()


def _assert_node_failed(result: flowkit.RunResult, node_id: str, what: str) -> None:
    assert RunStatus.FAILED == result.status, result
    error = result.error
    assert isinstance(error, NodeError), error
    assert (node_id, 1) == (error.node_id, error.attempt), error  # not retried: it cannot help
    assert f"{what} cannot be stored" in str(error)
    assert "5001 digits" in str(error)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("flow", "node_id", "what"),
    [
        (returns_huge, "huge", "its return value"),
        (writes_huge, "huge_state", "what it wrote to the run's state"),
    ],
)
async def test_a_node_returning_a_huge_int_fails_its_run_with_a_store(
    tmp_path: Path,
    flow: flowkit.FlowDef,
    node_id: str,
    what: str,  # type: ignore[type-arg]
) -> None:
    store = SQLiteStore(str(tmp_path / "runs.db"))
    try:
        result = await flowkit.Runtime(store=store).run(flow)
    finally:
        await store.close()
    _assert_node_failed(result, node_id, what)


@pytest.mark.anyio
async def test_a_node_returning_a_huge_int_fails_its_run_on_a_worker(tmp_path: Path) -> None:
    transport = transport_from_url(f"sqlite:///{tmp_path / 'queue.db'}")
    store = store_from_url(f"sqlite:///{tmp_path / 'runs.db'}")
    worker = flowkit.Worker([returns_huge], transport, store, poll_interval=0.05)
    client = flowkit.Client(transport, store, flows=[returns_huge])
    try:
        with anyio.fail_after(BOUND):
            async with anyio.create_task_group() as tg:
                await tg.start(worker.run)
                result = await client.run(returns_huge, timeout=BOUND)
                tg.cancel_scope.cancel()
    finally:
        await transport.close()
        await store.close()
    _assert_node_failed(result, "huge", "its return value")


# -- foreign data a transport reads ------------------------------------------------------------

NESTED = "[" * 100_000


@pytest.mark.parametrize("text", [NESTED, DIGITS])
def test_foreign_sqs_attributes_that_cannot_be_read_are_ignored(text: str) -> None:
    from flowkit.transports.sqs._messages import HEADERS_ATTR, KEY_ATTR, _headers, _key

    attributes = {name: {"StringValue": text} for name in (HEADERS_ATTR, KEY_ATTR)}
    message = {"Body": "", "MessageAttributes": attributes}
    assert {} == _headers(message)
    assert text == _key(message)


@pytest.mark.parametrize("data", [NESTED.encode(), DIGITS.encode()])
def test_unreadable_kafka_member_data_and_snapshots_are_ignored(data: bytes) -> None:
    from flowkit.transports.kafka._group import _claims
    from flowkit.transports.kafka._offsets import _Offsets

    assert {"topic": "", "owned": [], "busy": []} == _claims(data)
    offsets = _Offsets(committed=3)
    offsets.restore(data)
    assert -1 == offsets.next

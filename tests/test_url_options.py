"""``?name=value`` options on every transport and store URL, parsed by one helper.

``split_options`` takes flowkit's options off a URL and converts them: strict
URLs (memory, SQLite, Kafka, Pub/Sub, Service Bus, SQS, NATS) refuse any other
parameter, pass-through URLs (PostgreSQL, Redis, AMQP) leave it for the driver.
Building an object from a URL never connects, so no broker is needed here: the
URLs name a closed port (127.0.0.1:1) or a host that does not resolve, building
still succeeds, and no SQLite file appears until first use.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from typing import TYPE_CHECKING, Any

import pytest
import yarl
from psycopg.conninfo import conninfo_to_dict
from redis.asyncio.connection import parse_url

from flowkit import FlowkitError
from flowkit.backends._options import boolean, split_options
from flowkit.stores import from_url as store_from_url
from flowkit.stores._history import HistoryOptions
from flowkit.stores._urls import ConfigurationError
from flowkit.transports import from_url as transport_from_url

if TYPE_CHECKING:
    from pathlib import Path

SECRET = "hunter2"
CONNECTION = (
    f"Endpoint=sb://shop.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey={SECRET}="
)


def attributes(built: object, names: dict[str, Any]) -> dict[str, Any]:
    """``built``'s attributes named like ``names``' keys (to compare with ``names``)."""
    return {name: getattr(built, name) for name in names}


class TestSplitOptions:
    """The helper converts flowkit's options and leaves the rest of the URL as written."""

    def test_strict_converts_and_strips_the_query(self) -> None:
        accepted = {"n": int, "x": float, "on": boolean, "s": str}
        url = "sqlite:///a.db?n=3&x=0.5&on=yes&s=a%20b"
        assert ("sqlite:///a.db", {"n": 3, "x": 0.5, "on": True, "s": "a b"}) == split_options(
            url, accepted
        )

    def test_pass_through_keeps_driver_parameters_byte_for_byte(self) -> None:
        url = "postgresql://u@db/app?sslmode=require&schema=s&options=-c%20a%3Db#frag"
        rest, found = split_options(url, {"schema": str}, mode="pass-through")
        assert "postgresql://u@db/app?sslmode=require&options=-c%20a%3Db#frag" == rest
        assert {"schema": "s"} == found

    @pytest.mark.parametrize(
        "url", ["redis://h/0?prefix=p", "redis://h/0?", "redis://h/0?prefix=p&", "redis://h/0"]
    )
    def test_no_question_mark_left_behind(self, url: str) -> None:
        assert "redis://h/0" == split_options(url, {"prefix": str}, mode="pass-through")[0]

    def test_unknown_option_refused_in_strict_mode_naming_the_accepted(self) -> None:
        with pytest.raises(ConfigurationError) as caught:
            split_options("kafka://k?colour=red", {"group": str, "partitions": int})
        assert "unknown option 'colour'" in str(caught.value)
        assert "use group, partitions" in str(caught.value)

    def test_option_given_twice_refused(self) -> None:
        with pytest.raises(ConfigurationError, match="'prefix' is given twice"):
            split_options("redis://h?prefix=a&prefix=b", {"prefix": str}, mode="pass-through")

    @pytest.mark.parametrize(
        ("text", "value"),
        [
            *[("true", True), ("1", True), ("yes", True), ("ON", True)],
            *[("false", False), ("0", False), ("No", False), ("off", False)],
        ],
    )
    def test_booleans(self, text: str, value: bool) -> None:
        assert value is split_options(f"memory://?b={text}", {"b": boolean})[1]["b"]

    @pytest.mark.parametrize(
        ("query", "expected"),
        [
            ("n=abc", "bad n='abc' .*: expected a whole number"),
            ("n=", "bad n='' .*: expected a whole number"),
            ("x=soon", "bad x='soon' .*: expected a number"),
            ("b=maybe", "bad b='maybe' .*: expected true/false, 1/0 or yes/no"),
        ],
    )
    def test_bad_values(self, query: str, expected: str) -> None:
        accepted = {"n": int, "x": float, "b": boolean}
        with pytest.raises(ConfigurationError, match=expected) as caught:
            split_options(
                f"amqp://u:{SECRET}@h/?{query}&password={SECRET}", accepted, mode="pass-through"
            )
        assert SECRET not in str(caught.value)
        assert isinstance(caught.value, FlowkitError)


# -- every scheme --------------------------------------------------------------
TRANSPORTS: list[tuple[str, dict[str, Any]]] = [
    ("memory://?visibility_timeout=5", {"visibility_timeout": 5.0}),
    (
        "sqlite:///q.db?visibility_timeout=60&poll_interval=0.1&max_poll_interval=2",
        {
            "path": "q.db",
            "visibility_timeout": 60.0,
            "poll_interval": 0.1,
            "max_poll_interval": 2.0,
        },
    ),
    (
        "postgresql://u@127.0.0.1:1/app?schema=q&visibility_timeout=9&poll_interval=0.2"
        "&max_poll_interval=3&pool_size=2",
        {
            "dsn": "postgresql://u@127.0.0.1:1/app",
            "schema": "q",
            "visibility_timeout": 9.0,
            "poll_interval": 0.2,
            "max_poll_interval": 3.0,
            "pool_size": 2,
        },
    ),
    (
        "amqp://guest:guest@127.0.0.1:1/?prefetch=4&queue_prefix=shop&max_deliveries=5"
        "&visibility_timeout=none",
        {
            "url": "amqp://guest:guest@127.0.0.1:1/",
            "prefetch": 4,
            "queue_prefix": "shop",
            "max_deliveries": 5,
            "visibility_timeout": None,
        },
    ),
    (
        "redis://127.0.0.1:1/0?group=g&consumer=c&prefix=p&visibility_timeout=60&block_ms=10"
        "&count=5&max_connections=3",
        {
            "url": "redis://127.0.0.1:1/0",
            "group": "g",
            "consumer": "c",
            "prefix": "p",
            "visibility_timeout": 60.0,
            "block_ms": 10,
            "count": 5,
            "max_connections": 3,
        },
    ),
    (
        "kafka://127.0.0.1:1?group=g&topic_prefix=t&partitions=3&max_in_flight=7"
        "&visibility_timeout=9&session_timeout=12&replication_factor=1",
        {
            "bootstrap": "127.0.0.1:1",
            "group": "g",
            "topic_prefix": "t",
            "partitions": 3,
            "max_in_flight": 7,
            "visibility_timeout": 9.0,
            "session_timeout": 12.0,
            "replication_factor": 1,
        },
    ),
    (
        "pubsub://proj?topic_prefix=shop&create=no&flow_control=8&ack_deadline=30"
        "&max_delivery_attempts=none&ordering=false",
        {
            "project": "proj",
            "topic_prefix": "shop",
            "create": False,
            "flow_control": 8,
            "ack_deadline": 30.0,
            "max_delivery_attempts": None,
            "ordering": False,
        },
    ),
    (
        f"servicebus://{CONNECTION}?prefetch=8&lock_renewal=no&max_lock_renewal=60"
        "&lock_duration=30&create_queues=yes",
        {
            "connection_string": CONNECTION,
            "prefetch": 8,
            "lock_renewal": False,
            "max_lock_renewal": 60.0,
            "visibility_timeout": 30.0,
            "create_queues": True,
        },
    ),
    (
        "sqs://eu-west-1/shop?endpoint=http://127.0.0.1:1&visibility_timeout=60&wait_time=5"
        "&fifo=yes&max_receive_count=3&batch=4",
        {
            "region": "eu-west-1",
            "queue_prefix": "shop",
            "endpoint_url": "http://127.0.0.1:1",
            "visibility_timeout": 60,
            "wait_time": 5,
            "fifo": True,
            "max_receive_count": 3,
            "batch": 4,
        },
    ),
    (
        "nats://127.0.0.1:1?stream_prefix=S&ack_wait=12&max_deliver=3&batch=4&fetch_wait=0.5"
        "&request_timeout=2&connect_timeout=3",
        {
            "url": "nats://127.0.0.1:1",
            "stream_prefix": "S",
            "ack_wait": 12.0,
            "max_deliver": 3,
            "batch": 4,
            "fetch_wait": 0.5,
            "request_timeout": 2.0,
            "connect_timeout": 3.0,
        },
    ),
]
STORES: list[tuple[str, dict[str, Any]]] = [
    ("memory://?snapshot_every=8", {"snapshot_every": 8}),
    ("sqlite:///runs.db?snapshot_every=8", {"path": "runs.db", "snapshot_every": 8}),
    (
        "postgresql://u@127.0.0.1:1/app?schema=fk&snapshot_every=8&pool_size=3",
        {
            "dsn": "postgresql://u@127.0.0.1:1/app",
            "schema": "fk",
            "snapshot_every": 8,
            "pool_size": 3,
        },
    ),
    (
        "redis://127.0.0.1:1/2?prefix=shop&snapshot_every=8&lock_timeout=2.5&max_connections=3",
        {
            "url": "redis://127.0.0.1:1/2",
            "prefix": "shop",
            "snapshot_every": 8,
            "lock_timeout": 2.5,
            "max_connections": 3,
        },
    ),
]


BUILD = {"transport": transport_from_url, "store": store_from_url}
OVERRIDES = [
    ("transport", "memory://?visibility_timeout=5", "visibility_timeout", 7.0),
    ("transport", "sqlite:///q.db?poll_interval=0.1", "poll_interval", 0.3),
    ("transport", "postgresql://u@h/app?schema=a", "schema", "b"),
    ("transport", "amqp://h/?prefetch=4", "prefetch", 9),
    ("transport", "redis://h/0?group=a", "group", "b"),
    ("transport", "kafka://h:9092?group=a", "group", "b"),
    ("transport", "pubsub://p?flow_control=4", "flow_control", 9),
    ("transport", f"servicebus://{CONNECTION}?prefetch=4", "prefetch", 9),
    ("transport", "sqs://eu-west-1/p?batch=4", "batch", 9),
    ("transport", "nats://h:4222?batch=4", "batch", 9),
    ("store", "memory://?snapshot_every=4", "snapshot_every", 9),
    ("store", "sqlite:///r.db?snapshot_every=4", "snapshot_every", 9),
    ("store", "postgresql://u@h/app?schema=a", "schema", "b"),
    ("store", "redis://h/0?prefix=a", "prefix", "b"),
]


def scheme(url: str) -> str:
    return url.partition(":")[0]


def case_ids(cases: list[tuple[Any, ...]]) -> list[str]:
    """``transport-kafka://...``: what is built, from which URL."""
    return [f"{kind}-{url}" for kind, url, *_ in cases]


class TestEveryScheme:
    """Each URL's options land in the built object's attributes, converted; nothing connects."""

    @pytest.mark.parametrize(
        ("url", "expected"), TRANSPORTS, ids=[scheme(u) for u, _ in TRANSPORTS]
    )
    def test_transport_options(
        self, url: str, expected: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.chdir(tmp_path)
        assert expected == attributes(transport_from_url(url), expected)
        assert [] == list(tmp_path.iterdir())  # the SQLite queue opens its file on first use

    @pytest.mark.parametrize(("url", "expected"), STORES, ids=[scheme(u) for u, _ in STORES])
    def test_store_options(
        self, url: str, expected: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.chdir(tmp_path)
        assert expected == attributes(store_from_url(url), expected)
        assert [] == list(tmp_path.iterdir())

    @pytest.mark.parametrize(("kind", "url", "name", "value"), OVERRIDES, ids=case_ids(OVERRIDES))
    def test_keyword_options_override_the_url(
        self, kind: str, url: str, name: str, value: object
    ) -> None:
        assert value == getattr(BUILD[kind](url, **{name: value}), name)


class TestPassThrough:
    """PostgreSQL, Redis and AMQP URLs keep the driver's own parameters, which still parse."""

    def test_postgres(self) -> None:
        url = "postgresql://u@h/app?schema=fk&sslmode=disable&application_name=w1&pool_size=2"
        for built in (store_from_url(url), transport_from_url(url)):
            assert "postgresql://u@h/app?sslmode=disable&application_name=w1" == built.dsn
            parsed = conninfo_to_dict(built.dsn)
            assert ("disable", "w1") == (parsed["sslmode"], parsed["application_name"])

    def test_redis(self) -> None:
        url = "redis://:pw@h:6379/2?prefix=shop&socket_timeout=5&health_check_interval=3"
        for built in (store_from_url(url), transport_from_url(url)):
            assert "redis://:pw@h:6379/2?socket_timeout=5&health_check_interval=3" == built.url
            parsed = parse_url(built.url)
            assert (5.0, 3, 2) == (
                parsed["socket_timeout"],
                parsed["health_check_interval"],
                parsed["db"],
            )

    def test_amqp(self) -> None:
        transport = transport_from_url("amqp://g:g@h/vhost?heartbeat=10&prefetch=4&name=w1")
        assert "amqp://g:g@h/vhost?heartbeat=10&name=w1" == transport.url
        assert {"heartbeat": "10", "name": "w1"} == dict(yarl.URL(transport.url).query)


STRICT = [
    ("transport", "memory://?colour=red", "visibility_timeout"),
    ("transport", "sqlite:///q.db?mode=ro", "visibility_timeout, poll_interval"),
    ("transport", "kafka://h:9092?colour=red", "group, topic_prefix"),
    ("transport", "pubsub://p?colour=red", "topic_prefix, create"),
    ("transport", f"servicebus://{CONNECTION}?colour=red", "prefetch, lock_renewal"),
    ("transport", "sqs://eu-west-1/p?colour=red", "endpoint, visibility_timeout"),
    ("transport", "nats://h:4222?colour=red", "stream_prefix, ack_wait"),
    ("store", "memory://?colour=red", "snapshot_every"),
    ("store", "sqlite:///r.db?mode=ro", "snapshot_every"),
]

BAD_VALUES = [
    ("transport", f"amqp://u:{SECRET}@h/?prefetch=abc"),
    ("transport", f"amqp://u:{SECRET}@h/?max_deliveries=many"),
    ("transport", f"redis://:{SECRET}@h/0?count=lots"),
    ("transport", f"postgresql://u:{SECRET}@h/app?pool_size=big"),
    ("transport", f"postgresql://u@h/app?password={SECRET}&visibility_timeout=x"),
    ("transport", "sqlite:///q.db?visibility_timeout=soon"),
    ("transport", "memory://?visibility_timeout=soon"),
    ("transport", "kafka://h:9092?partitions=many"),
    ("transport", "pubsub://p?ordering=maybe"),
    ("transport", f"servicebus://{CONNECTION}?lock_renewal=maybe"),
    ("transport", "sqs://eu-west-1/p?fifo=maybe"),
    ("transport", "nats://h:4222?ack_wait=soon"),
    ("store", f"redis://:{SECRET}@h/0?lock_timeout=long"),
    ("store", f"redis://h/0?password={SECRET}&snapshot_every=often"),
    ("store", f"postgresql://u:{SECRET}@h/app?snapshot_every=often"),
    ("store", "sqlite:///r.db?snapshot_every=often"),
    ("store", "memory://?snapshot_every=often"),
]
OUT_OF_RANGE = [
    ("store", "postgresql://u@h/app?pool_size=0", "pool_size must be above 0"),
    ("store", "redis://h/0?lock_timeout=-1", "lock_timeout must be above 0"),
    ("store", "sqlite:///r.db?snapshot_every=0", "snapshot_every must be above 0"),
    ("transport", "postgresql://u@h/a?pool_size=0", "pool_size must be above 0"),
    ("transport", "sqlite:///q.db?poll_interval=0", "poll_interval must be above 0"),
    ("transport", "redis://h/0?max_connections=0", "max_connections must be 1"),
    ("transport", "amqp://h/?prefetch=0", "prefetch must be 1 or more"),
]


HISTORY_URLS = [
    "memory://",
    "sqlite:///r.db",
    "postgresql://u@127.0.0.1:1/app",
    "redis://127.0.0.1:1/2",
]


class TestHistoryOptions:
    """Every store's URL takes ``history`` and ``history_payload``; nothing connects."""

    @pytest.mark.parametrize("url", HISTORY_URLS, ids=scheme)
    def test_history_off_and_its_bound(self, url: str) -> None:
        store = store_from_url(f"{url}?history=false&history_payload=512")
        assert HistoryOptions(enabled=False, max_payload=512) == store.history_options

    @pytest.mark.parametrize("url", HISTORY_URLS, ids=scheme)
    def test_defaults(self, url: str) -> None:
        assert HistoryOptions(enabled=True, max_payload=2048) == store_from_url(url).history_options

    @pytest.mark.parametrize("url", HISTORY_URLS, ids=scheme)
    def test_bad_values(self, url: str) -> None:
        with pytest.raises(ConfigurationError, match="bad history='maybe'"):
            store_from_url(f"{url}?history=maybe")
        with pytest.raises(ConfigurationError, match=r"history_payload must be .* at least 128"):
            store_from_url(f"{url}?history_payload=10")


class TestRefused:
    """Unknown options on strict URLs, bad values anywhere: a ConfigurationError, no password."""

    @pytest.mark.parametrize(("kind", "url", "accepted"), STRICT, ids=case_ids(STRICT))
    def test_unknown_option_in_strict_mode(self, kind: str, url: str, accepted: str) -> None:
        name = url.rpartition("?")[2].partition("=")[0]
        with pytest.raises(ConfigurationError) as caught:
            BUILD[kind](url)
        assert f"unknown option {name!r}" in str(caught.value)
        assert f"use {accepted}" in str(caught.value)
        assert SECRET not in str(caught.value)

    @pytest.mark.parametrize(("kind", "url"), BAD_VALUES, ids=case_ids(BAD_VALUES))
    def test_bad_value(self, kind: str, url: str) -> None:
        name, _, text = url.rpartition("&" if "&" in url else "?")[2].partition("=")
        with pytest.raises(ConfigurationError, match=f"bad {name}={text!r}") as caught:
            BUILD[kind](url)
        assert SECRET not in str(caught.value)

    @pytest.mark.parametrize(("kind", "url", "message"), OUT_OF_RANGE, ids=case_ids(OUT_OF_RANGE))
    def test_out_of_range(self, kind: str, url: str, message: str) -> None:
        with pytest.raises(ConfigurationError, match=message):
            BUILD[kind](url)


FLOWS = """
from flowkit import flow, node

@node
async def one() -> int:
    return 1

@flow
async def tiny() -> int:
    return await one()
"""


class TestWorkerCommandLine:
    """``python -m flowkit.worker`` reads the options; a wrong one exits 2 with one line."""

    def worker(self, tmp_path: Path, *args: str) -> subprocess.Popen[str]:
        (tmp_path / "flows_tiny.py").write_text(textwrap.dedent(FLOWS))
        return subprocess.Popen(
            [sys.executable, "-m", "flowkit.worker", "--app", "flows_tiny", *args],
            cwd=tmp_path,
            env=dict(os.environ, PYTHONPATH=str(tmp_path)),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    @pytest.mark.parametrize(
        ("flags", "expected"),
        [
            (
                ["--store", "sqlite:///x.db?snapshot_every=8&snapshot_evry=8"],
                "unknown option 'snapshot_evry' in 'sqlite:///x.db?snapshot_every=8&snapshot_evry=8'"
                ": use snapshot_every, history, history_payload",
            ),
            (
                [
                    "--store",
                    "sqlite:///x.db?snapshot_every=8",
                    "--transport",
                    f"amqp://u:{SECRET}@127.0.0.1:1/?prefetch=abc",
                ],
                "bad prefetch='abc' in 'amqp://u:***@127.0.0.1:1/?prefetch=abc'"
                ": expected a whole number",
            ),
        ],
    )
    def test_bad_option_exits_2_with_one_line(
        self, tmp_path: Path, flags: list[str], expected: str
    ) -> None:
        _, stderr = self.worker(tmp_path, *flags).communicate(timeout=30)
        assert [f"flowkit.worker: error: {expected}"] == stderr.splitlines()
        assert [] == [p.name for p in tmp_path.iterdir() if p.name.startswith("x.db")]

    def test_options_reach_the_worker(self, tmp_path: Path) -> None:
        flags = [
            "--store",
            "sqlite:///x.db?snapshot_every=8",
            "--transport",
            "sqlite:///q.db?visibility_timeout=5&poll_interval=0.2",
            "--log-format",
            "json",
        ]
        process = self.worker(tmp_path, *flags)
        assert process.stderr is not None
        lines = []
        try:
            for line in process.stderr:  # the test's timeout bounds a worker that never starts
                lines.append(line)
                if "worker started" in line:
                    break
            process.send_signal(signal.SIGTERM)
            _, rest = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        assert (0, True) == (process.returncode, "worker started" in "".join(lines[-1:])), (
            "".join(lines) + rest
        )
        assert {"x.db", "q.db"} <= {p.name for p in tmp_path.iterdir()}
        assert [] == [p.name for p in tmp_path.iterdir() if "?" in p.name]

"""``python -m flowkit.worker`` as an operator meets it: flags, errors, signals, garbage.

* ``--help`` documents every flag and ``--version`` prints the version;
* a bad ``--transport`` or ``--store`` URL, an ``--app`` that cannot be imported
  and an unreachable broker each exit 2 with a one-line message on stderr;
* SIGTERM (or SIGINT) on an idle worker drains it: exit 0;
* garbage sent to each broker's queue (not JSON, not a node message, a node
  message naming a blueprint digest or a run no worker knows) is dead-lettered
  by a running worker process, with the reason logged, and the worker then
  still completes a valid run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from flows_e2e import ping

import flowkit
from flowkit import Client, RunStatus
from flowkit.stores import from_url as store_from_url
from flowkit.transports import from_url as transport_from_url
from flowkit.worker import NodeMessage

pytestmark = pytest.mark.e2e

HERE = Path(__file__).resolve().parent
FLAGS = (
    "--app",
    "--transport",
    "--store",
    "--concurrency",
    "--queue",
    "--lease",
    "--webhooks",
    "--log-format",
    "--log-level",
    "--version",
)
EXIT_TIMEOUT = 30.0  # a worker that cannot start exits within this
ACCEPTED_TIMEOUT = 5.0  # a worker still running after this accepted its flags
START_TIMEOUT = 30.0  # a worker logs "worker started" within this
STOP_TIMEOUT = 15.0  # a drained idle worker exits within this
DEAD_LETTER_TIMEOUT = 30.0  # a running worker dead-letters the garbage within this
ERROR = "flowkit.worker: error: "


def worker_cli(
    *args: str, cwd: Path, pythonpath: tuple[Path, ...] = (), timeout: float = EXIT_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m flowkit.worker ARGS`` to its end (``flows_e2e`` importable)."""
    path = [str(HERE), *map(str, pythonpath), os.environ.get("PYTHONPATH", "")]
    return subprocess.run(
        [sys.executable, "-m", "flowkit.worker", *args],
        cwd=cwd,  # the default sqlite:///flowkit.db, if used, lands here
        env=dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, path))),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    """stderr without the worker's JSON log lines (``--log-format json``)."""
    return [line for line in result.stderr.splitlines() if not line.startswith("{")]


def assert_usage_error(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    """Exit 2, and stderr (log lines aside) is one ``flowkit.worker: error: ...`` line."""
    lines = error_lines(result)
    assert (2, 1) == (result.returncode, len(lines)), result.stderr
    assert lines[0].startswith(ERROR), result.stderr
    for text in expected:
        assert text in lines[0]


# -- flags ----------------------------------------------------------------------------------------


def test_help_documents_every_flag(tmp_path: Path) -> None:
    result = worker_cli("--help", cwd=tmp_path)
    assert 0 == result.returncode, result.stderr
    assert "SIGTERM" in result.stdout
    assert [] == [flag for flag in FLAGS if flag not in result.stdout]


def test_version(tmp_path: Path) -> None:
    result = worker_cli("--version", cwd=tmp_path)
    assert (0, f"flowkit {flowkit.__version__}") == (result.returncode, result.stdout.strip())


# -- start-up errors: exit 2, one line ------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "url", "expected"),
    [
        ("--transport", "bogus://somewhere", "unknown transport URL 'bogus://somewhere'"),
        ("--transport", "kafka://127.0.0.1:9092?nonsense=1", "unknown option 'nonsense'"),
        ("--store", "bogus://somewhere", "unknown store URL 'bogus://somewhere'"),
    ],
    ids=["transport-scheme", "transport-option", "store-scheme"],
)
def test_a_bad_url_exits_2_with_one_line(
    tmp_path: Path, flag: str, url: str, expected: str
) -> None:
    result = worker_cli("--app", "flows_e2e", flag, url, "--log-format", "json", cwd=tmp_path)
    assert_usage_error(result, expected)
    assert 1 == len(result.stderr.splitlines())  # not even a log line


@pytest.mark.parametrize(
    ("app", "expected"),
    [
        ("flows_e2e_not_there", "cannot import 'flows_e2e_not_there'"),
        ("flows_e2e:not_there", "has no 'not_there'"),
        ("json", "no flows found"),
    ],
    ids=["no-module", "no-attribute", "no-flows"],
)
def test_an_app_that_cannot_be_loaded_exits_2(tmp_path: Path, app: str, expected: str) -> None:
    result = worker_cli("--app", app, "--log-format", "json", cwd=tmp_path)
    assert_usage_error(result, expected)


@pytest.mark.parametrize(
    ("source", "expected"),
    [("def broken(:\n", "SyntaxError"), ("raise RuntimeError('no config')\n", "no config")],
    ids=["syntax-error", "raises"],
)
def test_an_app_that_fails_on_import_exits_2(tmp_path: Path, source: str, expected: str) -> None:
    (tmp_path / "broken_app_e2e.py").write_text(source)
    result = worker_cli(
        "--app", "broken_app_e2e", "--log-format", "json", cwd=tmp_path, pythonpath=(tmp_path,)
    )
    assert_usage_error(result, "broken_app_e2e", expected)


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["--concurrency", "0"], id="concurrency-0"),
        pytest.param(["--lease", "0"], id="lease-0"),
        pytest.param(["--log-level", "LOUD"], id="log-level"),
    ],
)
def test_a_bad_number_or_level_exits_2(tmp_path: Path, args: list[str]) -> None:
    try:
        result = worker_cli(
            "--app", "flows_e2e", "--transport", "memory://", "--store", "memory://", *args,
            cwd=tmp_path,
            timeout=ACCEPTED_TIMEOUT,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail(f"{' '.join(args)} was accepted: the worker was still running")
    assert 2 == result.returncode, result.stderr
    assert "Traceback" not in result.stderr


UNREACHABLE = [
    pytest.param("amqp://guest:guest@127.0.0.1:1/", id="rabbitmq"),
    pytest.param("redis://127.0.0.1:1/0", id="redis"),
    pytest.param("kafka://127.0.0.1:1", id="kafka"),
    pytest.param("postgresql://postgres@127.0.0.1:1/test", id="postgres"),
]


@pytest.mark.parametrize("url", UNREACHABLE)
def test_an_unreachable_broker_exits_2_with_one_line(tmp_path: Path, url: str) -> None:
    result = worker_cli(
        "--app", "flows_e2e",
        "--transport", url,
        "--store", f"sqlite:///{tmp_path / 'runs.db'}",
        "--log-format", "json",
        cwd=tmp_path,
    )  # fmt: skip
    assert_usage_error(result, "127.0.0.1:1")


def test_an_unreachable_store_exits_2(tmp_path: Path) -> None:
    result = worker_cli(
        "--app", "flows_e2e",
        "--transport", "memory://",
        "--store", "redis://127.0.0.1:1/0",
        "--log-format", "json",
        cwd=tmp_path,
    )  # fmt: skip
    assert_usage_error(result, "127.0.0.1:1")


@pytest.mark.anyio
async def test_a_broker_lost_after_start_is_waited_for(
    worker_processes: Any, pg_database: str, tmp_path: Path
) -> None:
    """A worker that reached its broker at start and loses it before it took anything
    waits for it to come back (exit 2 is for a broker unreachable at start). The broker
    is a PostgreSQL queue in a database of this test's own, closed to connections and its
    connections ended, then opened again."""
    import psycopg

    store_url = f"sqlite:///{tmp_path / 'runs.db'}"
    worker = worker_processes.start(
        "--app", "flows_e2e", "--transport", pg_database, "--store", store_url,
        "--log-format", "json",
    )  # fmt: skip
    await worker.wait_for_line("worker started", START_TIMEOUT)
    database = pg_database.rpartition("/")[2]
    with psycopg.connect(pg_database.rpartition("/")[0] + "/test", autocommit=True) as admin:
        admin.execute(f"ALTER DATABASE {database} ALLOW_CONNECTIONS false")
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
            (database,),
        )
        await worker.wait_for_line("broker unreachable", START_TIMEOUT)
        admin.execute(f"ALTER DATABASE {database} ALLOW_CONNECTIONS true")
    transport, store = transport_from_url(pg_database), store_from_url(store_url)
    try:
        result = await Client(transport, store, flows=[ping]).run(ping, x=1, timeout=START_TIMEOUT)
    finally:
        await transport.close()
        await store.close()
    assert (RunStatus.COMPLETED, 2) == (result.status, result.output)
    assert 0 == await worker.terminate(STOP_TIMEOUT)


# -- signals ---------------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_a_signal_drains_an_idle_worker(
    tmp_path: Path, worker_processes: Any, signum: signal.Signals
) -> None:
    worker = worker_processes.start("--app", "flows_e2e", "--log-format", "json")  # defaults
    await worker.wait_for_line("worker started", START_TIMEOUT)
    worker.popen.send_signal(signum)
    assert 0 == await worker.wait(STOP_TIMEOUT), worker.output()
    events = [event.get("event") for event in worker.events()]
    assert ["worker started", "draining", "worker stopped"] == events
    assert (tmp_path / "flowkit.db").exists()  # both URLs default to sqlite:///flowkit.db


# -- garbage on every broker -----------------------------------------------------------------------

UNKNOWN_DIGEST = NodeMessage("run-x", "plus_one", 1, "dispatch-x", "0" * 64).encode()
UNKNOWN_RUN = NodeMessage("run-y", "plus_one", 1, "dispatch-y", ping.blueprint.digest).encode()
GARBAGE = {  # body -> what the dead-letter reason says
    b"not json": "not JSON",
    b"[1, 2]": "must be a JSON object",
    b"{}": "malformed node message",
    b'{"run_id": "r", "node_id": "n", "attempt": 0, "dispatch_id": "d", "blueprint_digest": "b"}': (
        "attempt must be 1 or more"
    ),
    UNKNOWN_DIGEST: "unknown blueprint digest",
    UNKNOWN_RUN: "unknown run 'run-y'",
}


@pytest.mark.anyio
@pytest.mark.timeout(120)
async def test_garbage_is_dead_lettered_and_the_worker_carries_on(
    broker: str, open_backend: Any, worker_processes: Any
) -> None:
    async with open_backend(broker, lease=3.0) as urls:
        worker = worker_processes.start(
            "--app", "flows_e2e",
            "--transport", urls.transport,
            "--store", urls.store,
            "--queue", urls.queue,
            "--concurrency", "4",
            "--log-format", "json",
        )  # fmt: skip
        await worker.wait_for_line("worker started", START_TIMEOUT)
        transport = transport_from_url(urls.transport)
        store = store_from_url(urls.store)
        client = Client(transport, store, queue=urls.queue, flows=[ping])
        try:
            for body in GARBAGE:
                await transport.send(urls.queue, body)
            with anyio.fail_after(DEAD_LETTER_TIMEOUT):
                while len(dead := await urls.dead_letters(transport)) < len(GARBAGE):
                    assert worker.returncode is None, worker.output()
                    await anyio.sleep(0.1)  # no event for "dead-lettered": poll, bounded
            result = await client.run(ping, x=41, timeout=DEAD_LETTER_TIMEOUT)
        finally:
            await transport.close()
            await store.close()
        assert sorted(GARBAGE) == sorted(body for body, _ in dead)
        reasons = dict(dead)
        assert {} == {b: r for b, r in reasons.items() if GARBAGE[b] not in r}
        assert (RunStatus.COMPLETED, 42) == (result.status, result.output)
        logged = [e for e in worker.events() if e.get("event") == "message dead-lettered"]
        assert len(GARBAGE) == len(logged)
        assert set(reasons.values()) == {event["reason"] for event in logged}
        assert 0 == await worker.terminate(STOP_TIMEOUT)

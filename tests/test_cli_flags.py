"""``python -m flowkit.worker`` with a bad flag or flag value: exit 2 and one line on
stderr, ``flowkit.worker: error: ...``, naming the flag and what to pass instead, with
no usage block, traceback or log line."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pathlib import Path

EXIT_TIMEOUT = 60.0  # a worker refusing its flags exits within this (running on: a failure)
ERROR = "flowkit.worker: error: "
APP = "cli_flags_app"
APP_SOURCE = """
import flowkit

@flowkit.node
async def hello(name: str) -> str:
    return f"hello {name}"

@flowkit.flow
async def greet(name: str) -> str:
    return await hello(name)

not_a_flow = 42
mixed = [greet, "greet"]
"""

BAD_FLAGS = [
    pytest.param(["--lease", "nan"], "--lease", id="lease-nan"),
    pytest.param(["--lease", "inf"], "--lease", id="lease-inf"),
    pytest.param(["--lease", "-1"], "--lease", id="lease-negative"),
    pytest.param(["--lease", "0"], "--lease", id="lease-zero"),
    pytest.param(["--lease", "1e300"], "--lease", id="lease-huge"),
    pytest.param(["--lease", "soon"], "--lease", id="lease-word"),
    pytest.param(["--concurrency", "0"], "--concurrency", id="concurrency-zero"),
    pytest.param(["--concurrency", "-4"], "--concurrency", id="concurrency-negative"),
    pytest.param(["--concurrency", "1.5"], "--concurrency", id="concurrency-fraction"),
    pytest.param(["--concurrency", "nan"], "--concurrency", id="concurrency-nan"),
    pytest.param(["--queue", ""], "--queue", id="queue-empty"),
    pytest.param(["--queue", "  "], "--queue", id="queue-blank"),
    pytest.param(["--queue", " jobs"], "--queue", id="queue-padded"),
    pytest.param(["--transport", ""], "--transport", id="transport-empty"),
    pytest.param(["--transport", "redis://[::1"], "--transport", id="transport-unparseable"),
    pytest.param(["--transport", "amqp://h:port/"], "--transport", id="transport-port"),
    pytest.param(["--transport", "127.0.0.1:6379"], "--transport", id="transport-no-scheme"),
    pytest.param(["--transport", "bogus://x"], "transport URL 'bogus://x'", id="transport-scheme"),
    pytest.param(["--store", ""], "--store", id="store-empty"),
    pytest.param(["--store", "redis://127.0.0.1:99999/0"], "--store", id="store-port"),
    pytest.param(["--store", "bogus://x"], "store URL 'bogus://x'", id="store-scheme"),
    pytest.param(["--app", f"{APP}:not_a_flow"], "--app", id="app-not-a-flow"),
    pytest.param(["--app", f"{APP}:hello"], "--app", id="app-a-node"),
    pytest.param(["--app", f"{APP}:mixed"], "--app", id="app-list-with-a-non-flow"),
    pytest.param(["--app", f"{APP}:missing"], "--app", id="app-no-such-attribute"),
    pytest.param(["--app", f"{APP}:"], "--app", id="app-empty-attribute"),
    pytest.param(["--app", ""], "--app", id="app-empty"),
    pytest.param(["--app", ".relative"], "--app", id="app-relative"),
    pytest.param(["--app", "no_such_module_for_cli_flags"], "--app", id="app-not-importable"),
    pytest.param(["--webhooks", "nope"], "--webhooks", id="webhooks-no-port"),
    pytest.param(["--webhooks", ":8080"], "--webhooks", id="webhooks-no-host"),
    pytest.param(["--webhooks", "127.0.0.1:0"], "--webhooks", id="webhooks-port-zero"),
    pytest.param(["--webhooks", "127.0.0.1:70000"], "--webhooks", id="webhooks-port-too-big"),
    pytest.param(["--webhooks", "127.0.0.1:http"], "--webhooks", id="webhooks-port-name"),
    pytest.param(["--retention", "soon"], "--retention", id="retention-word"),
    pytest.param(["--retention", "0"], "--retention", id="retention-zero"),
    pytest.param(["--retention", "-3d"], "--retention", id="retention-negative"),
    pytest.param(["--log-level", "LOUD"], "--log-level", id="log-level"),
    pytest.param(["--log-format", "xml"], "--log-format", id="log-format"),
    pytest.param(["--colour"], "--colour", id="unknown-flag"),
]


@pytest.fixture(scope="module")
def app_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cli_flags")
    (folder / f"{APP}.py").write_text(APP_SOURCE)
    return folder


def worker(app_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m flowkit.worker --app APP ARGS`` (in-memory by default) to its end."""
    path = os.pathsep.join(filter(None, [str(app_dir), os.environ.get("PYTHONPATH")]))
    defaults = ["--app", APP, "--transport", "memory://", "--store", "memory://"]
    try:
        return subprocess.run(
            [sys.executable, "-m", "flowkit.worker", *defaults, *args],
            cwd=app_dir,
            env=dict(os.environ, PYTHONPATH=path),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=EXIT_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{' '.join(args)} was accepted: the worker was still running")


@pytest.mark.parametrize(("args", "named"), BAD_FLAGS)
def test_a_bad_flag_is_one_line_and_exit_2(app_dir: Path, args: list[str], named: str) -> None:
    """``named``: the flag, or for a URL naming no transport or store, the URL."""
    result = worker(app_dir, *args)
    lines = result.stderr.splitlines()
    assert (2, 1) == (result.returncode, len(lines)), result.stderr
    assert lines[0].startswith(ERROR), result.stderr
    assert named in lines[0]


def test_an_unreachable_transport_exits_2_before_the_worker_starts(app_dir: Path) -> None:
    result = worker(app_dir, "--transport", "redis://127.0.0.1:1/0")
    lines = result.stderr.splitlines()
    assert "worker started" not in result.stderr
    assert (2, 1) == (result.returncode, len(lines)), result.stderr
    assert lines[0].startswith(ERROR), result.stderr
    assert "127.0.0.1:1" in lines[0]

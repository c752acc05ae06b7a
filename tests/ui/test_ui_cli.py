"""``flowkit ui``: refuses to serve other machines without a token, and serves the console
(a real subprocess, on a free loopback port, stopped with SIGINT)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from typing import Any

import httpx


def flowkit(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flowkit", *args], capture_output=True, text=True, timeout=60
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class TestExposure:
    """Bound beyond loopback, the console needs a token or an explicit --insecure."""

    def test_refuses_without_token(self, tmp_path: Any) -> None:
        done = flowkit("ui", "--bind", "0.0.0.0:8080", "--store", f"sqlite:///{tmp_path}/x.db")
        assert 2 == done.returncode
        assert done.stderr.startswith("flowkit: error: --bind 0.0.0.0:8080 serves other machines")
        assert "--token" in done.stderr
        assert 1 == len(done.stderr.strip().splitlines())

    def test_bad_bind(self) -> None:
        done = flowkit("ui", "--bind", "nowhere")
        assert 2 == done.returncode
        assert "expected HOST:PORT" in done.stderr

    def test_help(self) -> None:
        done = flowkit("ui", "--help")
        assert 0 == done.returncode
        for flag in ("--store", "--app", "--bind", "--token", "--read-only", "--insecure"):
            assert flag in done.stdout


class TestServe:
    """It serves the store's runs, with the token it was given, until interrupted."""

    def test_serves_until_interrupted(self, shop: Any) -> None:
        path, runs = shop
        port = free_port()
        here = os.path.dirname(__file__)
        env = {**os.environ, "PYTHONPATH": here, "FLOWKIT_UI_TOKEN": "t0k"}
        command = [sys.executable, "-m", "flowkit", "ui", "--store", f"sqlite:///{path}"]
        command += ["--app", "ui_shop", "--bind", f"127.0.0.1:{port}"]
        server = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
        try:
            assert server.stderr is not None
            announced = server.stderr.readline()
            assert f"serving http://127.0.0.1:{port}/ (actions on; token required)" in announced
            url = f"http://127.0.0.1:{port}/runs/{runs.failed}"
            assert 401 == httpx.get(url).status_code
            page = httpx.get(url, headers={"authorization": "Bearer t0k"})
            assert 200 == page.status_code
            assert 'data-node="charge" data-status="failed"' in page.text
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(30)
            if server.stderr is not None:
                server.stderr.close()
        assert 0 == server.returncode

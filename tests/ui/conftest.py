"""Fixtures of the web console's tests: a SQLite store with runs in every status, the
console served by hypercorn on a free loopback port, and Debian's chromium via Playwright.

The server runs in a thread of its own, on its own asyncio loop (Starlette runs on
asyncio; Playwright's sync API runs in the test's thread). Its socket is bound and
listening before the thread starts, so the browser's first request waits in the
backlog instead of racing the start-up.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import threading
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import pytest
import ui_shop

import flowkit
from flowkit.stores import SQLiteStore
from flowkit.transports import MemoryTransport

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator
    from pathlib import Path

T = TypeVar("T")

CHROMIUM = shutil.which("chromium") or (
    "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None
)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Debian's chromium is not installed (apt-get install -y chromium; .ci/run does)",
)


def run_async(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """``anyio.run(fn, *args)`` in a thread of its own: Playwright's sync API keeps an
    event loop running in the test's thread, where ``anyio.run`` cannot start another."""
    result: list[T] = []
    failure: list[BaseException] = []

    def main() -> None:
        try:
            result.append(anyio.run(fn, *args))
        except BaseException as exc:  # handed to the caller, which raises it
            failure.append(exc)

    thread = threading.Thread(target=main)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


@pytest.fixture
def shop(tmp_path: Path) -> tuple[str, ui_shop.Runs]:
    """A fresh SQLite store with the shop's runs: its path and their ids."""
    path = str(tmp_path / "shop.db")
    return path, run_async(ui_shop.populate, path)


class Served:
    """The console (made by ``make(store)`` on the server's loop) on 127.0.0.1:PORT."""

    def __init__(self, path: str, make: Callable[[Any, Any], Any]) -> None:
        self.path = path
        self.make = make
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        self.port = listener.getsockname()[1]
        self.fd = listener.detach()  # hypercorn takes the socket over, and closes it
        self.url = f"http://127.0.0.1:{self.port}"
        self.ready = threading.Event()
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._main, name="ui-server", daemon=True)

    def __enter__(self) -> Served:
        self.thread.start()
        assert self.ready.wait(30), "the console's server did not start"
        if self.failure is not None:
            raise self.failure
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(30)
        assert not self.thread.is_alive(), "the console's server did not stop"
        if self.failure is not None:
            raise self.failure

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # handed to the test's thread, which raises it
            self.failure = exc
            self.ready.set()

    async def _serve(self) -> None:
        from hypercorn.asyncio import serve
        from hypercorn.config import Config

        store = SQLiteStore(self.path)
        client = flowkit.Client(MemoryTransport(), store, flows=ui_shop.FLOWS)
        config = Config()
        config.bind = [f"fd://{self.fd}"]
        config.accesslog = None
        config.errorlog = None
        self.loop = asyncio.get_running_loop()
        self.stop = asyncio.Event()
        self.ready.set()
        try:
            await serve(self.make(store, client), config, shutdown_trigger=self.stop.wait)
        finally:
            await store.close()


@pytest.fixture
def serve() -> Iterator[Callable[..., Served]]:
    """``serve(path, make)`` starts the console; every one started is stopped at the end."""
    started: list[Served] = []

    def start(path: str, make: Callable[[Any, Any], Any]) -> Served:
        server = Served(path, make)
        started.append(server.__enter__())
        return server

    yield start
    for server in reversed(started):
        server.__exit__(None, None, None)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's chromium, headless, driven by Playwright; for one module at a time, as
    Playwright's sync API keeps an event loop running in the thread until it stops (the
    async tests that follow need the thread without one)."""
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    opened = context.new_page()
    yield opened
    context.close()

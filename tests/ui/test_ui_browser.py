"""The web console in a real browser: Debian's chromium driven by Playwright, against
hypercorn serving ``flowkit.ui.app`` over a real SQLite store (see conftest.py).

With ``FLOWKIT_UI_SCREENSHOTS=1`` the screenshot test writes docs/img/ui-runs.png
and docs/img/ui-run.png (otherwise it writes them to a temporary folder).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import ui_shop
from conftest import needs_chromium, run_async
from playwright.sync_api import expect

from flowkit.stores import SQLiteStore
from flowkit.ui import app

if TYPE_CHECKING:
    from collections.abc import Callable

pytestmark = [pytest.mark.browser, needs_chromium]

DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"
TOKEN = "s3cret-token"


def console(**options: Any) -> Callable[[Any, Any], Any]:
    return lambda store, client: app(store=store, flows=ui_shop.FLOWS, client=client, **options)


def stored_status(path: str, run_id: str) -> str:
    async def read() -> str:
        store = SQLiteStore(path)
        try:
            loaded = await store.load(run_id)
            assert loaded is not None
            return loaded[0].status.value
        finally:
            await store.close()

    return run_async(read)


class TestRunsList:
    """The runs list shows the store's runs in every status and filters them."""

    def test_every_status_and_filters(self, page: Any, shop: Any, serve: Any) -> None:
        path, runs = shop
        server = serve(path, console())
        page.goto(f"{server.url}/runs")
        rows = page.locator("table.runs tbody tr")
        expect(rows).to_have_count(9)  # 8 runs made directly, and the parent's child
        for status in ("completed", "failed", "awaiting", "running", "cancelled"):
            expect(page.locator(f'tr[data-status="{status}"]').first).to_be_visible()
        expect(page.locator('#counts a[data-status="failed"] b')).to_have_text("1")

        page.locator('input[name="status"][value="failed"]').check()
        page.locator("form.filters button[type=submit]").click()
        expect(page).to_have_url(re.compile(r"status=failed"))
        expect(rows).to_have_count(1)
        expect(page.locator(f'tr[data-run="{runs.failed}"]')).to_be_visible()

        page.goto(f"{server.url}/runs?tag=customer%3Dc1")
        expect(rows).to_have_count(2)
        page.goto(f"{server.url}/runs?flow=echo")
        expect(rows).to_have_count(1)
        expect(page.locator(f'tr[data-run="{runs.xss}"]')).to_be_visible()

    def test_search_by_run_id_opens_the_run(self, page: Any, shop: Any, serve: Any) -> None:
        path, runs = shop
        server = serve(path, console())
        page.goto(f"{server.url}/runs")
        page.fill('input[name="q"]', runs.awaiting)
        page.locator("form.filters button[type=submit]").click()
        expect(page).to_have_url(f"{server.url}/runs/{runs.awaiting}")

    def test_refreshes_while_runs_change(self, page: Any, shop: Any, serve: Any) -> None:
        path, runs = shop
        server = serve(path, console())
        page.goto(f"{server.url}/runs")
        row = page.locator(f'tr[data-run="{runs.awaiting}"]')
        expect(row).to_have_attribute("data-status", "awaiting")
        stored = SQLiteStore(path)
        run_async(_cancel, stored, runs.awaiting)
        expect(row).to_have_attribute("data-status", "cancelled", timeout=10_000)


async def _cancel(store: SQLiteStore, run_id: str) -> None:
    import flowkit
    from flowkit.transports import MemoryTransport

    try:
        await flowkit.Client(MemoryTransport(), store, flows=ui_shop.FLOWS).cancel(run_id)
    finally:
        await store.close()


class TestRunPage:
    """A run page shows the path taken and a failed node's error."""

    def test_path_and_error(self, page: Any, shop: Any, serve: Any) -> None:
        path, runs = shop
        server = serve(path, console())
        page.goto(f"{server.url}/runs/{runs.failed}")
        expect(page.locator("#run-status")).to_have_text("failed")
        expect(page.locator('svg.graph g[data-node="reserve"]')).to_have_attribute(
            "data-status", "done"
        )
        expect(page.locator('svg.graph g[data-node="charge"]')).to_have_attribute(
            "data-status", "failed"
        )
        expect(page.locator('svg.graph g[data-node="ship"]')).to_have_attribute(
            "data-status", "unreached"
        )
        expect(page.locator("#error")).to_contain_text("builtins.ValueError")
        expect(page.locator("#error")).to_contain_text("card declined for A-101")
        expect(page.locator("#error")).to_contain_text("charge")
        timeline = page.locator("#timeline")  # the run's history, event by event
        expect(timeline).to_contain_text("node.failed")
        expect(timeline).to_contain_text("run.failed")
        expect(page.locator("#no-history")).to_have_count(0)

    def test_waiting_run_and_children(self, page: Any, shop: Any, serve: Any) -> None:
        path, runs = shop
        server = serve(path, console())
        page.goto(f"{server.url}/runs/{runs.awaiting}")
        expect(page.locator('svg.graph g[data-node="approval"]')).to_have_attribute(
            "data-status", "waiting"
        )
        expect(page.locator("#waits")).to_contain_text("approval")
        expect(page.locator("#waits")).to_contain_text("1h")
        page.goto(f"{server.url}/runs/{runs.parent}")
        child = page.locator("#children a").first
        expect(child).to_be_visible()
        child.click()
        expect(page.locator("#parent")).to_have_text(runs.parent)

    def test_large_output_is_cut_with_show_all(self, page: Any, shop: Any, serve: Any) -> None:
        path, runs = shop
        server = serve(path, console())
        page.goto(f"{server.url}/runs/{runs.big}")
        output = page.locator("#output pre")
        expect(output).not_to_contain_text(f"sku-{ui_shop.BIG_LINES - 1:05d}")
        page.locator("#show-all-output").click()
        expect(output).to_contain_text(f"sku-{ui_shop.BIG_LINES - 1:05d}")


class TestActions:
    """Cancel and signal from the page change the stored run, after a confirmation step."""

    def test_cancel(self, page: Any, shop: Any, serve: Any) -> None:
        path, runs = shop
        server = serve(path, console())
        page.goto(f"{server.url}/runs/{runs.running}")
        page.locator("#action-cancel").click()
        expect(page.locator("section.confirm")).to_contain_text(runs.running)
        assert "running" == stored_status(path, runs.running)  # not before confirming
        page.locator("#confirm").click()
        expect(page.locator("#message")).to_contain_text("cancelled")
        expect(page.locator("#run-status")).to_have_text("cancelled")
        assert "cancelled" == stored_status(path, runs.running)

    def test_signal(self, page: Any, shop: Any, serve: Any) -> None:
        path, runs = shop
        server = serve(path, console())
        page.goto(f"{server.url}/runs/{runs.awaiting}")
        expect(page.locator('#signal-form input[name="name"]')).to_have_value("approval")
        page.fill('#signal-form textarea[name="data"]', "true")
        page.locator("#action-signal").click()
        expect(page.locator("section.confirm")).to_contain_text("approval")
        page.locator("#confirm").click()
        expect(page.locator("#message")).to_contain_text("signal 'approval' delivered")
        # no worker takes the next node off the memory transport: the run goes on, running
        assert "running" == stored_status(path, runs.awaiting)

    def test_bad_payload_is_said_before_anything_happens(
        self, page: Any, shop: Any, serve: Any
    ) -> None:
        path, runs = shop
        server = serve(path, console())
        page.goto(f"{server.url}/runs/{runs.awaiting}")
        page.fill('#signal-form textarea[name="data"]', "{not json")
        page.locator("#action-signal").click()
        expect(page.locator("#failed")).to_contain_text("not JSON")
        assert "awaiting" == stored_status(path, runs.awaiting)

    def test_read_only_shows_no_actions(self, page: Any, shop: Any, serve: Any) -> None:
        path, runs = shop
        server = serve(path, console(read_only=True))
        page.goto(f"{server.url}/runs/{runs.running}")
        expect(page.locator("#run-status")).to_have_text("running")
        expect(page.locator("#actions")).to_have_count(0)


class TestSafety:
    """Payloads render as text; with a token, a request without it is refused."""

    def test_xss_payload_is_text(self, page: Any, shop: Any, serve: Any) -> None:
        path, runs = shop
        server = serve(path, console())
        dialogs: list[str] = []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        page.goto(f"{server.url}/runs/{runs.xss}")
        expect(page.locator("#output pre")).to_have_text(ui_shop.XSS)
        expect(page.locator("#inputs pre")).to_contain_text("<script>")
        page.goto(f"{server.url}/runs")
        expect(page.locator(f'tr[data-run="{runs.xss}"] .tags')).to_contain_text("<script>")
        assert "pwned" not in page.title()
        assert [] == dialogs
        assert 0 == page.locator("main script").count()

    def test_token(self, page: Any, shop: Any, serve: Any) -> None:
        path, runs = shop
        server = serve(path, console(token=TOKEN))
        answer = page.goto(f"{server.url}/runs/{runs.failed}")
        assert 401 == answer.status
        expect(page.locator("section.login")).to_be_visible()
        expect(page.locator("table.runs")).to_have_count(0)
        page.fill('input[name="token"]', "wrong")
        page.locator("section.login button").click()
        expect(page.locator(".problem")).to_contain_text("not the token")
        page.fill('input[name="token"]', TOKEN)
        page.locator("section.login button").click()
        expect(page.locator("#run-status")).to_have_text("failed")
        expect(page).to_have_url(f"{server.url}/runs/{runs.failed}")


class TestScreenshots:
    """The pictures in docs/web-console.md come from here."""

    def test_screenshots(self, page: Any, shop: Any, serve: Any, tmp_path: Path) -> None:
        folder = DOCS_IMG if os.environ.get("FLOWKIT_UI_SCREENSHOTS") == "1" else tmp_path
        path, runs = shop
        server = serve(path, console())
        page.goto(f"{server.url}/runs")
        expect(page.locator("table.runs tbody tr")).to_have_count(9)
        page.screenshot(path=str(folder / "ui-runs.png"), full_page=True)
        page.goto(f"{server.url}/runs/{runs.failed}")
        expect(page.locator("svg.graph")).to_be_visible()
        page.screenshot(path=str(folder / "ui-run.png"), full_page=True)
        assert (folder / "ui-run.png").stat().st_size > 10_000

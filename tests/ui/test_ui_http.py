"""The web console over plain HTTP (httpx's ASGI transport, no server, no browser):
routes, CSRF, the token, read-only. Starlette runs on asyncio, so these tests do too."""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import ui_shop

import flowkit
from flowkit._clock import use_clock
from flowkit.stores import SQLiteStore
from flowkit.transports import MemoryTransport
from flowkit.ui import app

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.anyio

TOKEN = "tok-123"
HTML = {"accept": "text/html"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # Starlette's request handling, and so the console, is asyncio's


@pytest.fixture
async def store(shop: Any) -> AsyncIterator[SQLiteStore]:
    opened = SQLiteStore(shop[0])
    yield opened
    await opened.close()


def console(store: SQLiteStore, **options: Any) -> Any:
    client = flowkit.Client(MemoryTransport(), store, flows=ui_shop.FLOWS)
    return app(store=store, flows=ui_shop.FLOWS, client=client, **options)


def http(asgi: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=asgi), base_url="http://console")


async def csrf_of(client: httpx.AsyncClient, path: str = "/runs") -> str:
    """Load a page, which sets the CSRF cookie; its forms carry the same value."""
    page = await client.get(path, headers=HTML)
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    token = client.cookies.get("flowkit_ui_csrf")
    assert token is not None
    assert found is None or token == found.group(1)
    return token


class TestRoutes:
    """Each page answers, and says what it shows."""

    async def test_pages(self, store: SQLiteStore, shop: Any) -> None:
        runs = shop[1]
        async with http(console(store)) as client:
            assert 303 == (await client.get("/")).status_code
            listing = await client.get("/runs")
            assert 200 == listing.status_code
            for run_id in (runs.completed, runs.failed, runs.awaiting, runs.running):
                assert run_id in listing.text
            page = await client.get(f"/runs/{runs.failed}")
            assert 200 == page.status_code
            assert "card declined for A-101" in page.text
            assert 'data-node="charge" data-status="failed"' in page.text
            assert 200 == (await client.get("/flows")).status_code
            flow = await client.get("/flows/checkout")
            assert 200 == flow.status_code
            assert "<svg" in flow.text
            assert 404 == (await client.get("/runs/nope")).status_code
            assert 404 == (await client.get("/flows/nope")).status_code
            css = await client.get("/static/console.css")
            assert 200 == css.status_code
            assert "text/css" in css.headers["content-type"]

    async def test_partials_are_the_live_parts(self, store: SQLiteStore, shop: Any) -> None:
        async with http(console(store)) as client:
            part = await client.get("/runs?status=failed&partial=1")
            assert part.text.startswith('<div class="live-region"')
            assert "<html" not in part.text
            assert shop[1].failed in part.text
            assert shop[1].completed not in part.text
            run = await client.get(f"/runs/{shop[1].awaiting}?partial=1")
            assert 'data-live="/runs/' in run.text  # an unfinished run keeps refreshing
            done = await client.get(f"/runs/{shop[1].completed}?partial=1")
            assert "data-live" not in done.text

    async def test_filters_and_pages(self, store: SQLiteStore, shop: Any) -> None:
        ui = app(store=store, flows=ui_shop.FLOWS, page_size=3)
        async with http(ui) as client:
            first = await client.get("/runs")
            assert 3 == first.text.count('<tr data-run="')
            cursor = re.search(r'href="/runs\?cursor=([^"]+)"[^>]*id="next-page"', first.text)
            assert cursor is not None
            second = await client.get(f"/runs?cursor={cursor.group(1)}")
            assert 3 == second.text.count('<tr data-run="')
            ids = set(re.findall(r'<tr data-run="([^"]+)"', first.text + second.text))
            assert 6 == len(ids)
            failed = await client.get("/runs?status=failed&tag=customer%3Dc2&since=1h")
            assert [shop[1].failed] == re.findall(r'<tr data-run="([^"]+)"', failed.text)
            bad = await client.get("/runs?status=exploded&since=yesterday")
            assert "unknown status" in bad.text
            assert "since=&#39;yesterday&#39; is not understood" in bad.text

    async def test_search_by_run_id(self, store: SQLiteStore, shop: Any) -> None:
        async with http(console(store)) as client:
            found = await client.get(f"/runs?q={shop[1].failed}")
            assert 303 == found.status_code
            assert f"/runs/{shop[1].failed}" == found.headers["location"]
            missing = await client.get("/runs?q=no-such-run")
            assert "No run with id" in missing.text

    async def test_child_run_ids_with_slashes(self, store: SQLiteStore, shop: Any) -> None:
        async with http(console(store)) as client:
            parent = await client.get(f"/runs/{shop[1].parent}")
            child = re.search(r'<a href="(/runs/[^"]+%2F[^"]+)"', parent.text)
            assert child is not None
            page = await client.get(child.group(1))
            assert 200 == page.status_code
            assert f'id="parent">{shop[1].parent}<' in page.text


class TestPayloads:
    """Payloads are escaped, and a large one is cut with a link that shows it whole."""

    async def test_escaped(self, store: SQLiteStore, shop: Any) -> None:
        async with http(console(store)) as client:
            page = await client.get(f"/runs/{shop[1].xss}")
            assert "<script>document" not in page.text
            assert "&lt;script&gt;document.title" in page.text
            listing = await client.get("/runs")
            assert "<script>document" not in listing.text
            assert "default-src 'self'" in page.headers["content-security-policy"]

    async def test_cut_and_shown_whole(self, store: SQLiteStore, shop: Any) -> None:
        last = f"sku-{ui_shop.BIG_LINES - 1:05d}"
        async with http(console(store)) as client:
            cut = await client.get(f"/runs/{shop[1].big}")
            assert last not in cut.text
            assert "?full=output" in cut.text
            whole = await client.get(f"/runs/{shop[1].big}?full=output")
            assert last in whole.text


class TestActions:
    """POST only, with the CSRF token, after a confirmation step; then the stored run changed."""

    async def test_confirm_then_cancel(self, store: SQLiteStore, shop: Any) -> None:
        run_id = shop[1].running
        async with http(console(store)) as client:
            csrf = await csrf_of(client, f"/runs/{run_id}")
            asked = await client.post(f"/runs/{run_id}/cancel", data={"csrf": csrf})
            assert 200 == asked.status_code
            assert 'name="confirmed" value="1"' in asked.text
            assert "running" == await status_of(store, run_id)
            done = await client.post(
                f"/runs/{run_id}/cancel", data={"csrf": csrf, "confirmed": "1"}
            )
            assert 303 == done.status_code
            assert "cancelled" == await status_of(store, run_id)

    async def test_signal(self, store: SQLiteStore, shop: Any) -> None:
        run_id = shop[1].awaiting
        async with http(console(store)) as client:
            csrf = await csrf_of(client, f"/runs/{run_id}")
            form = {"csrf": csrf, "name": "approval", "data": "true", "confirmed": "1"}
            done = await client.post(f"/runs/{run_id}/signal", data=form)
            assert 303 == done.status_code
            assert "delivered" in done.headers["location"]
            assert "running" == await status_of(store, run_id)

    async def test_refusal_is_shown(self, store: SQLiteStore, shop: Any) -> None:
        run_id = shop[1].completed
        async with http(console(store)) as client:
            csrf = await csrf_of(client, f"/runs/{run_id}")
            form = {"csrf": csrf, "name": "approval", "confirmed": "1"}
            done = await client.post(f"/runs/{run_id}/signal", data=form)
            assert 303 == done.status_code
            assert "failed=" in done.headers["location"]

    async def test_csrf(self, store: SQLiteStore, shop: Any) -> None:
        run_id = shop[1].running
        async with http(console(store)) as client:
            csrf = await csrf_of(client)
            missing = await client.post(f"/runs/{run_id}/cancel", data={"confirmed": "1"})
            assert 403 == missing.status_code
            wrong = await client.post(
                f"/runs/{run_id}/cancel", data={"csrf": "forged", "confirmed": "1"}
            )
            assert 403 == wrong.status_code
            cross = await client.post(
                f"/runs/{run_id}/cancel",
                data={"csrf": csrf, "confirmed": "1"},
                headers={"origin": "http://evil.example"},
            )
            assert 403 == cross.status_code
            assert "running" == await status_of(store, run_id)

    async def test_get_does_nothing(self, store: SQLiteStore, shop: Any) -> None:
        async with http(console(store)) as client:
            # no GET route acts: this asks for a run "<id>/cancel", which there is not
            assert 404 == (await client.get(f"/runs/{shop[1].running}/cancel")).status_code
        assert "running" == await status_of(store, shop[1].running)

    async def test_read_only(self, store: SQLiteStore, shop: Any) -> None:
        run_id = shop[1].running
        async with http(console(store, read_only=True)) as client:
            page = await client.get(f"/runs/{run_id}")
            assert 'id="actions"' not in page.text
            csrf = await csrf_of(client)
            refused = await client.post(
                f"/runs/{run_id}/cancel", data={"csrf": csrf, "confirmed": "1"}
            )
            assert 403 == refused.status_code
        assert "running" == await status_of(store, run_id)

    async def test_purge_asks_then_deletes_old_finished_runs(
        self, store: SQLiteStore, shop: Any
    ) -> None:
        runs = shop[1]
        async with http(console(store)) as client:
            csrf = await csrf_of(client)
            assert 'id="purge"' in (await client.get("/runs", headers=HTML)).text
            form = {"csrf": csrf, "older_than": "1h", "status": "completed"}
            with use_clock(lambda: time.time() + 86400):  # a day on: every run is old
                asked = await client.post("/purge", data=form)
                assert 200 == asked.status_code
                assert "completed runs that finished more than 1h ago" in asked.text
                assert await store.load(runs.completed) is not None
                done = await client.post("/purge", data={**form, "confirmed": "1"})
            assert 303 == done.status_code
            assert "message=purged+" in done.headers["location"]
        assert await store.load(runs.completed) is None
        assert "failed" == await status_of(store, runs.failed)  # another status
        assert "running" == await status_of(store, runs.running)  # never purged

    async def test_purge_refuses_a_bad_age_and_an_unfinished_status(
        self, store: SQLiteStore, shop: Any
    ) -> None:
        async with http(console(store)) as client:
            csrf = await csrf_of(client)
            for form in ({"older_than": "soon"}, {"older_than": "1h", "status": "running"}):
                done = await client.post("/purge", data={"csrf": csrf, "confirmed": "1", **form})
                assert 303 == done.status_code
                assert "failed=" in done.headers["location"]
            read_only = http(console(store, read_only=True))
        async with read_only as client:
            page = await client.get("/runs", headers=HTML)
            assert 'id="purge"' not in page.text
            csrf = await csrf_of(client)
            form = {"csrf": csrf, "older_than": "1h", "confirmed": "1"}
            assert 403 == (await client.post("/purge", data=form)).status_code
        assert "completed" == await status_of(store, shop[1].completed)

    async def test_no_client_no_actions(self, store: SQLiteStore, shop: Any) -> None:
        async with http(app(store=store)) as client:
            page = await client.get(f"/runs/{shop[1].running}")
            assert 'id="actions"' not in page.text
            csrf = await csrf_of(client)
            refused = await client.post(
                f"/runs/{shop[1].running}/cancel", data={"csrf": csrf, "confirmed": "1"}
            )
            assert 404 == refused.status_code


class TestToken:
    """With a token, nothing but the login form and static files answers without it."""

    async def test_refused_without(self, store: SQLiteStore, shop: Any) -> None:
        async with http(console(store, token=TOKEN)) as client:
            for path in ("/runs", f"/runs/{shop[1].failed}", "/flows", "/runs?partial=1"):
                answer = await client.get(path)
                assert 401 == answer.status_code, path
                assert shop[1].failed not in answer.text
            browser = await client.get("/runs", headers=HTML)
            assert 401 == browser.status_code
            assert 'name="token"' in browser.text
            wrong = await client.get("/runs", headers={"authorization": "Bearer nope"})
            assert 401 == wrong.status_code
            client.cookies.set("flowkit_ui_session", TOKEN)
            forged = await client.get("/runs")
            assert 401 == forged.status_code
            client.cookies.clear()
            post = await client.post(f"/runs/{shop[1].running}/cancel", data={"confirmed": "1"})
            assert 401 == post.status_code
            assert 200 == (await client.get("/static/console.css")).status_code
        assert "running" == await status_of(store, shop[1].running)

    async def test_bearer(self, store: SQLiteStore, shop: Any) -> None:
        bearer = {"authorization": f"Bearer {TOKEN}"}
        async with http(console(store, token=TOKEN)) as client:
            assert 200 == (await client.get("/runs", headers=bearer)).status_code
            done = await client.post(
                f"/runs/{shop[1].running}/cancel", data={"confirmed": "1"}, headers=bearer
            )
            assert 303 == done.status_code  # a header a browser never sends cross-site
        assert "cancelled" == await status_of(store, shop[1].running)

    async def test_login_sets_a_cookie_that_is_not_the_token(
        self, store: SQLiteStore, shop: Any
    ) -> None:
        async with http(console(store, token=TOKEN)) as client:
            csrf = await csrf_of(client, "/login")
            bad = await client.post("/login", data={"csrf": csrf, "token": "x", "next": "/flows"})
            assert 401 == bad.status_code
            good = await client.post(
                "/login", data={"csrf": csrf, "token": TOKEN, "next": "/flows"}
            )
            assert 303 == good.status_code
            assert "/flows" == good.headers["location"]
            session = client.cookies.get("flowkit_ui_session")
            assert session is not None
            assert TOKEN not in session
            assert 200 == (await client.get("/runs")).status_code
            away = await client.post(
                "/login", data={"csrf": csrf, "token": TOKEN, "next": "//evil.example/x"}
            )
            assert "/runs" == away.headers["location"]


class TestMounted:
    """Mounted under a prefix in a Starlette app, every link and cookie keeps the prefix."""

    async def test_prefix(self, store: SQLiteStore, shop: Any) -> None:
        from starlette.applications import Starlette
        from starlette.routing import Mount

        outer = Starlette(routes=[Mount("/ops", app=console(store))])
        async with http(outer) as client:
            listing = await client.get("/ops/runs")
            assert 200 == listing.status_code
            assert f'href="/ops/runs/{shop[1].failed}"' in listing.text
            assert 'href="/ops/static/console.css"' in listing.text
            assert 200 == (await client.get("/ops/static/console.css")).status_code
            page = await client.get(f"/ops/runs/{shop[1].failed}")
            assert "card declined" in page.text


class TestArguments:
    """Bad arguments to flowkit.ui.app say what to pass."""

    def test_needs_a_store(self) -> None:
        with pytest.raises(flowkit.ConfigurationError, match="needs store="):
            app()

    def test_page_size(self, tmp_path: Any) -> None:
        with pytest.raises(flowkit.ConfigurationError, match="page_size"):
            app(store=SQLiteStore(str(tmp_path / "x.db")), page_size=0)


async def status_of(store: SQLiteStore, run_id: str) -> str:
    loaded = await store.load(run_id)
    assert loaded is not None
    return loaded[0].status.value

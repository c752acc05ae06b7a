"""``flowkit.ui.app(...)``: the web console as a plain ASGI app.

Starlette routes, Jinja2 templates and the static files inside the package
(nothing is fetched from the network). Starlette runs on asyncio, so the
console does too: serve it with hypercorn or uvicorn, or mount it in a
Starlette or FastAPI app (``Mount("/flowkit", app=flowkit.ui.app(...))``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._errors import ConfigurationError, MissingDependency
from ._catalogue import Catalogue
from ._data import PAGE_SIZE

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, MutableMapping

    from ..stores._protocol import Store

    Scope = MutableMapping[str, Any]
    Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
    Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class ConsoleApp:
    """The ASGI application; build it with :func:`app`."""

    def __init__(self, asgi: Any, *, store: Store, operations: Any, read_only: bool) -> None:
        self._asgi = asgi
        self.store = store
        self.operations = operations
        self.read_only = read_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._asgi(scope, receive, send)


def app(
    store: Store | None = None,
    flows: Iterable[Any] = (),
    *,
    client: Any = None,
    token: str | None = None,
    read_only: bool = False,
    page_size: int = PAGE_SIZE,
    title: str = "flowkit",
) -> ConsoleApp:
    """The web console over ``store``, as an ASGI app.

    Args:
        store: where the runs are (a ``flowkit.stores`` store); by default the
            ``client``'s.
        flows: the flows (``@flow``, ``Flow`` builders or blueprints) whose graphs
            and lint findings the console shows; a run of a flow not given has no graph.
        client: the operations API the actions go through (a ``flowkit.Client`` or
            ``flowkit.Runtime``); without it the console only reads.
        token: when set, every request needs it (``Authorization: Bearer TOKEN``,
            or the cookie of the login form).
        read_only: hide the actions, and refuse their POSTs.
        page_size: runs per page of the runs list (1 to 1 000).
        title: shown in the header and the browser tab.

    Raises:
        MissingDependency: starlette or jinja2 is not installed (``flowkit[ui]``).
        ConfigurationError: no store, or a bad ``page_size`` or ``token``.
    """
    store = store if store is not None else getattr(client, "store", None)
    if store is None:
        raise ConfigurationError("flowkit.ui.app needs store= (or a client= that has a store)")
    if isinstance(page_size, bool) or not isinstance(page_size, int) or not 1 <= page_size <= 1000:
        raise ConfigurationError(f"page_size must be an int from 1 to 1000, got {page_size!r}")
    if token is not None and not token.strip():
        raise ConfigurationError("token must not be empty: pass None for no token")
    starlette, jinja2 = _imports()
    from ._routes import FILTERS, Pages
    from ._security import Guard

    templates = jinja2.Environment(
        loader=jinja2.PackageLoader("flowkit.ui", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    templates.filters.update(FILTERS)
    pages = Pages(
        store=store,
        catalogue=Catalogue(flows),
        operations=client,
        templates=templates,
        token=token,
        read_only=read_only,
        page_size=page_size,
        title=title,
    )
    inner = starlette.Starlette(routes=_routes(pages))
    guarded = Guard(inner, token=token, refuse=pages.refuse)
    return ConsoleApp(guarded, store=store, operations=client, read_only=read_only)


def _routes(pages: Any) -> list[Any]:
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    return [
        Route("/", pages.home),
        Route("/runs", pages.runs),
        # a child's run id has slashes ("parent/node@1"): GET is the run, POST an action
        Route("/runs/{run_id:path}", pages.run, methods=["GET"]),
        Route("/runs/{run_id:path}/{action}", pages.action, methods=["POST"]),
        Route("/purge", pages.purge, methods=["POST"]),
        Route("/flows", pages.flows),
        Route("/flows/{flow_id}", pages.flow),
        Route("/login", pages.login, methods=["GET", "POST"]),
        Route("/logout", pages.logout, methods=["POST"]),
        Mount("/static", StaticFiles(packages=[("flowkit.ui", "static")]), name="static"),
    ]


def _imports() -> tuple[Any, Any]:
    try:
        import jinja2
        import starlette.applications
    except ImportError as exc:
        raise MissingDependency("the web console (flowkit.ui)", "ui") from exc
    return starlette.applications, jinja2

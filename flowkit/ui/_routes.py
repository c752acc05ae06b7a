"""The console's pages and its POST endpoints (Starlette request handlers).

Every page is rendered on the server; ``?partial=1`` renders only the part of a
page that ``static/console.js`` refreshes while runs change. An action is two
POSTs: the first (from the run page) answers with a confirmation page, the
second (``confirmed=1``, from that page) carries it out and redirects back to
the run with what happened.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, urlencode

from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response

from .. import _clock as clock
from .._errors import FlowkitError
from . import _actions, _data, _graph
from ._actions import ActionRefused
from ._payload import duration, when
from ._query import SINCE_CHOICES, STATUSES, RunsQuery
from ._security import (
    CSRF_COOKIE,
    CSRF_FIELD,
    SESSION_COOKIE,
    cookies,
    cross_site,
    new_csrf,
    same,
    session_value,
)

if TYPE_CHECKING:
    from jinja2 import Environment
    from starlette.requests import Request

    from ..stores._protocol import Store
    from ._catalogue import Catalogue

MAX_FORM_BYTES = 1_000_000
PARTIAL = "partial"


class Pages:
    """The handlers, sharing the console's store, flows, operations and settings."""

    def __init__(
        self,
        *,
        store: Store,
        catalogue: Catalogue,
        operations: Any,
        templates: Environment,
        token: str | None,
        read_only: bool,
        page_size: int,
        title: str,
    ) -> None:
        self.store = store
        self.catalogue = catalogue
        self.operations = None if read_only else operations
        self.templates = templates
        self.token = token
        self.read_only = read_only
        self.page_size = page_size
        self.title = title

    # -- pages ---------------------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        return RedirectResponse(_base(request) + "/runs", status_code=303)

    async def runs(self, request: Request) -> Response:
        query = RunsQuery.parse(request.query_params.multi_items())
        if query.q:
            found = await self.store.info(query.q)
            if found is not None:
                return RedirectResponse(_run_url(request, query.q), status_code=303)
        started = time.perf_counter()
        view = await _data.runs_page(self.store, query, now=clock.now(), limit=self.page_size)
        context = {
            "query": query,
            "view": view,
            "statuses": STATUSES,
            "since_choices": SINCE_CHOICES,
            "flows": sorted(self.catalogue.by_id),
            "not_found": query.q,
            "now": clock.now(),
            "took": time.perf_counter() - started,
            "sample": _data.COUNT_SAMPLE,
            "can_purge": _actions.can_purge(self.operations),
            "final": _actions.FINAL,
            "message": request.query_params.get("message", ""),
            "failed": request.query_params.get("failed", ""),
        }
        partial = request.query_params.get(PARTIAL) == "1"
        return self.render(request, "runs_live.html" if partial else "runs.html", context)

    async def run(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        full = request.query_params.get("full", "")
        view = await _data.run_page(
            self.store, run_id, self.catalogue, full=full, operations=self.operations
        )
        if view is None:
            return self.render(
                request, "missing.html", {"what": f"no run {run_id!r} in this store"}, 404
            )
        context = {
            "run": view,
            "timeline": _data.timeline(view),
            "actions": _actions.offered(self.operations, view.status),
            "message": request.query_params.get("message", ""),
            "failed": request.query_params.get("failed", ""),
            "waits_for": [wait.name for wait in view.waits],
        }
        partial = request.query_params.get(PARTIAL) == "1"
        return self.render(request, "run_live.html" if partial else "run.html", context)

    async def flows(self, request: Request) -> Response:
        return self.render(request, "flows.html", {"entries": self.catalogue.entries})

    async def flow(self, request: Request) -> Response:
        entry = self.catalogue.by_id.get(request.path_params["flow_id"])
        if entry is None:
            what = f"no flow {request.path_params['flow_id']!r} among those the console knows"
            return self.render(request, "missing.html", {"what": what}, 404)
        graph = _graph.svg(entry.blueprint, link=False) if entry.blueprint else None
        return self.render(request, "flow.html", {"entry": entry, "graph": graph})

    # -- actions ---------------------------------------------------------------------------

    async def action(self, request: Request) -> Response:
        run_id, name = request.path_params["run_id"], request.path_params["action"]
        form = await self.form(request)
        if isinstance(form, Response):
            return form
        action = _actions.ACTIONS.get(name)
        if self.read_only:
            return PlainTextResponse("the console is read-only: actions are off", 403)
        if action is None or action not in _actions.supported(self.operations):
            return PlainTextResponse(f"no action {name!r} here", 404)
        try:
            if form.get("confirmed") != "1":
                if action is _actions.SIGNAL:
                    _actions.signal_arguments(form)  # a bad payload is said before confirming
                return self.confirm(request, action, run_id, form)
            message = await _actions.perform(self.operations, action, run_id, form)
        except (ActionRefused, FlowkitError) as exc:
            return self.back_to_run(request, run_id, failed=" ".join(str(exc).split()))
        return self.back_to_run(request, run_id, message=message)

    async def purge(self, request: Request) -> Response:
        """Purge old runs (the runs page's form): a confirmation, then the purge."""
        form = await self.form(request)
        if isinstance(form, Response):
            return form
        if self.read_only:
            return PlainTextResponse("the console is read-only: actions are off", 403)
        if not _actions.can_purge(self.operations):
            return PlainTextResponse("no action 'purge' here", 404)
        runs = _base(request) + "/runs"
        try:
            _, _, what = _actions.purge_arguments(form)
            if form.get("confirmed") != "1":
                context = {
                    "action": _actions.PURGE,
                    "question": _actions.PURGE.question.format(what=what),
                    "fields": {k: form.get(k, "") for k in ("older_than", "status")},
                }
                return self.render(request, "confirm_purge.html", context)
            message = await _actions.purge(self.operations, form)
        except (ActionRefused, FlowkitError) as exc:
            outcome = {"failed": " ".join(str(exc).split())}
            return RedirectResponse(f"{runs}?{urlencode(outcome)}", status_code=303)
        return RedirectResponse(f"{runs}?{urlencode({'message': message})}", status_code=303)

    def confirm(
        self, request: Request, action: _actions.Action, run_id: str, form: dict[str, str]
    ) -> Response:
        fields = {k: v for k, v in form.items() if k in ("name", "data")}
        context = {
            "action": action,
            "run_id": run_id,
            "question": action.question.format(run_id=run_id),
            "fields": fields,
        }
        return self.render(request, "confirm.html", context)

    def back_to_run(self, request: Request, run_id: str, **outcome: str) -> Response:
        url = f"{_run_url(request, run_id)}?{urlencode(outcome)}"
        return RedirectResponse(url, status_code=303)

    # -- login -----------------------------------------------------------------------------

    async def login(self, request: Request) -> Response:
        if self.token is None:
            return RedirectResponse(_base(request) + "/runs", status_code=303)
        if request.method == "GET":
            return self.login_page(request)
        form = await self.form(request)
        if isinstance(form, Response):
            return form
        if not same(form.get("token", ""), self.token):
            return self.login_page(
                request, problem="that is not the token", status=401, target=form.get("next", "")
            )
        target = form.get("next", "")
        if not target.startswith("/") or target.startswith("//"):
            target = _base(request) + "/runs"
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            session_value(self.token),
            path=_base(request) or "/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    async def logout(self, request: Request) -> Response:
        form = await self.form(request)
        if isinstance(form, Response):
            return form
        response = RedirectResponse(_base(request) + "/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path=_base(request) or "/")
        return response

    def login_page(
        self, request: Request, *, problem: str = "", status: int = 200, target: str | None = None
    ) -> Response:
        """The login form; it goes on to ``target`` (by default the page asked for)."""
        if target is None and request.url.path.endswith("/login"):
            target = request.query_params.get("next", "")
        elif target is None:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        context = {"problem": problem, "next": target}
        return self.render(request, "login.html", context, status)

    async def refuse(self, scope: Any, receive: Any, send: Any) -> None:
        """The answer to a request without the token: the login form for a browser's GET,
        a plain 401 otherwise."""
        from starlette.requests import Request

        request = Request(scope, receive)
        accepts_html = "text/html" in request.headers.get("accept", "")
        if request.method == "GET" and accepts_html:
            response = self.login_page(request, problem="this console needs its token", status=401)
        else:
            response = PlainTextResponse(
                "401: this console needs its token (Authorization: Bearer TOKEN)",
                401,
                headers={"www-authenticate": "Bearer"},
            )
        await response(scope, receive, send)

    # -- shared ----------------------------------------------------------------------------

    async def form(self, request: Request) -> dict[str, str] | Response:
        """The POSTed form, once its CSRF token and origin are checked; else the 403."""
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                return PlainTextResponse("413: the form is too large", 413)
        form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        if request.scope.get("state", {}).get("bearer"):
            return form
        if cross_site(request.headers):
            return PlainTextResponse("403: a cross-site request is refused", 403)
        if not same(form.get(CSRF_FIELD), cookies(request.scope).get(CSRF_COOKIE) or "\0"):
            return PlainTextResponse("403: the form's CSRF token is missing or stale; reload", 403)
        return form

    def render(
        self, request: Request, template: str, context: dict[str, Any], status: int = 200
    ) -> Response:
        csrf = cookies(request.scope).get(CSRF_COOKIE)
        fresh = csrf is None
        csrf = csrf or new_csrf()
        html = self.templates.get_template(template).render(
            request=request,
            base=_base(request),
            csrf=csrf,
            title=self.title,
            read_only=self.read_only,
            can_act=self.operations is not None,
            guarded=self.token is not None,
            **context,
        )
        response = HTMLResponse(html, status)
        if fresh:
            response.set_cookie(
                CSRF_COOKIE, csrf, path=_base(request) or "/", httponly=True, samesite="strict"
            )
        return response


def _base(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


def _run_url(request: Request, run_id: str) -> str:
    return f"{_base(request)}/runs/{quote(run_id, safe='')}"


FILTERS = {"when": when, "duration": duration, "quote": lambda text: quote(str(text), safe="")}
"""Jinja filters the templates use."""

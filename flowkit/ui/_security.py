"""The console's guards: the access token, CSRF, and the headers every answer carries.

* With a token, every request but the login form and the static files needs it:
  ``Authorization: Bearer TOKEN``, or the session cookie the login form sets (an
  HMAC of the token, never the token itself; ``HttpOnly``, ``SameSite=Strict``).
  Anything else is answered 401 (a browser gets the login form).
* Every POST carries the CSRF token of the double-submit cookie in its form
  (``csrf``), and a cross-site ``Origin`` or ``Sec-Fetch-Site`` is refused;
  a request authenticated by its ``Authorization`` header needs no CSRF token
  (a browser never sends that header cross-site).
* Every answer says ``Content-Security-Policy: default-src 'self'`` (no inline
  script or style runs, nothing is loaded from elsewhere), ``nosniff``, no framing.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from http.cookies import CookieError, SimpleCookie
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, MutableMapping

    Scope = MutableMapping[str, Any]
    Message = MutableMapping[str, Any]
    Receive = Callable[[], Awaitable[Message]]
    Send = Callable[[Message], Awaitable[None]]
    ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SESSION_COOKIE = "flowkit_ui_session"
CSRF_COOKIE = "flowkit_ui_csrf"
CSRF_FIELD = "csrf"
PUBLIC_PATHS = ("/login", "/static/")
HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
        b"form-action 'self'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]


def session_value(token: str) -> str:
    """What the session cookie holds for ``token``: an HMAC, so the cookie is not the token."""
    return hmac.new(token.encode(), b"flowkit ui session", hashlib.sha256).hexdigest()


def same(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def new_csrf() -> str:
    return secrets.token_urlsafe(32)


def cookies(scope: Scope) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    for key, value in scope.get("headers", []):
        if key == b"cookie":
            try:
                jar.load(value.decode("latin-1"))
            except CookieError:  # a malformed Cookie header is a cookie-less request
                continue
    return {name: morsel.value for name, morsel in jar.items()}


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def relative_path(scope: Scope) -> str:
    """The path under the console's mount point (Starlette keeps ``root_path`` in it)."""
    path, root = str(scope.get("path", "")), str(scope.get("root_path", ""))
    if root and path.startswith(root):
        return path[len(root) :] or "/"
    return path


def bearer_ok(scope: Scope, token: str) -> bool:
    given = header(scope, b"authorization") or ""
    scheme, _, value = given.partition(" ")
    return scheme.lower() == "bearer" and same(value.strip(), token)


def cross_site(headers: Mapping[str, str]) -> bool:
    """Whether a browser says the request comes from another site."""
    if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return True
    origin, host = headers.get("origin"), headers.get("host")
    if origin is None or origin == "null":
        return origin == "null"
    return origin.partition("://")[2] != host


class Guard:
    """ASGI middleware: the token check, and the headers of every answer."""

    def __init__(self, app: ASGIApp, *, token: str | None, refuse: ASGIApp) -> None:
        self.app = app
        self.token = token
        self.refuse = refuse  # answers a request without the token (401, the login form)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *HEADERS]
            await send(message)

        state = scope.setdefault("state", {})
        state["bearer"] = self.token is not None and bearer_ok(scope, self.token)
        if self.token is None or state["bearer"] or self._session(scope) or self._public(scope):
            await self.app(scope, receive, send_with_headers)
        else:
            await self.refuse(scope, receive, send_with_headers)

    def _session(self, scope: Scope) -> bool:
        assert self.token is not None
        return same(cookies(scope).get(SESSION_COOKIE), session_value(self.token))

    def _public(self, scope: Scope) -> bool:
        path = relative_path(scope)
        return path == PUBLIC_PATHS[0] or path.startswith(PUBLIC_PATHS[1])

"""An ASGI app that turns signed HTTP calls into signals.

``POST {path}/{run_id}`` with the raw body signed by HMAC-SHA256 under the
webhook node's ``secret`` in ``X-Flowkit-Signature: sha256=<hex>`` resumes the
run's webhook wait with the body (JSON when it parses, text otherwise).
Answers: 202 resumed (or kept for a webhook the run has not reached yet); 401
bad or missing signature; 404 unknown path, run or wait, a run that has
finished, or a webhook the run has passed and does not wait at again; 405 not
POST; 409 replayed ``X-Flowkit-Delivery`` id (remembered in the run's state, so
it holds across processes, and after the run finished); 413 body over the
limit. Nothing is resumed unless the answer is 202.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol

import attrs

from .._errors import DuplicateDelivery, ResumeError, WebhookRejected
from ..shell._history import signal_source

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

SIGNATURE_HEADER = "x-flowkit-signature"
DELIVERY_HEADER = "x-flowkit-delivery"


class SignalTarget(Protocol):
    async def result(self, run_id: str) -> Any: ...

    async def signal(
        self,
        run_id: str,
        name: str,
        data: Any = None,
        *,
        action: str | None = None,
        delivery_id: str | None = None,
    ) -> Any: ...


@attrs.frozen
class WebhookRoute:
    """One webhook node: its path, the signal name it waits for, its secret and its id."""

    path: str
    name: str
    secret: str = attrs.field(repr=False)
    node_id: str = ""


def sign(secret: str, body: bytes) -> str:
    """The ``X-Flowkit-Signature`` value for ``body`` (for senders and tests)."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def routes_of(flows: Any) -> list[WebhookRoute]:
    """Webhook routes declared by the webhook nodes of the given flows/targets."""
    routes = []
    for blueprint in flows:
        for spec in blueprint.nodes:
            if spec.kind == "webhook":
                secret = _secret(str(spec.params.get("secret", "")))
                name = str(spec.params.get("name") or spec.id)
                path = str(spec.params["path"]).rstrip("/")
                routes.append(WebhookRoute(path, name, secret, spec.id))
    return routes


def _secret(value: str) -> str:
    if value.startswith("$env."):
        return os.environ.get(value[len("$env.") :], "")
    return value


class WebhookApp:
    """The ASGI application; build it with :func:`app`."""

    def __init__(self, target: SignalTarget, routes: list[WebhookRoute], *, max_body: int) -> None:
        self.target = target
        self.routes = {r.path: r for r in routes}
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        try:
            status, payload = await self._handle(scope, receive)
        except WebhookRejected as exc:
            status, payload = exc.status, {"error": exc.reason}
        await _respond(send, status, payload)

    async def _handle(self, scope: Scope, receive: Receive) -> tuple[int, dict[str, Any]]:
        if scope["method"] != "POST":
            raise WebhookRejected(405, "only POST is accepted")
        route, run_id = self._route(str(scope["path"]))
        body = await _read_body(receive, self.max_body)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        expected = sign(route.secret, body)
        if not route.secret or not hmac.compare_digest(expected, headers.get(SIGNATURE_HEADER, "")):
            raise WebhookRejected(401, "missing or invalid X-Flowkit-Signature")
        delivery = headers.get(DELIVERY_HEADER)
        try:
            await self._check_not_passed(route, run_id, delivery)
            with signal_source("webhook"):
                result = await self.target.signal(
                    run_id, route.name, _payload(body, headers), delivery_id=delivery
                )
        except DuplicateDelivery as exc:
            raise WebhookRejected(409, str(exc)) from exc
        except ResumeError as exc:
            raise WebhookRejected(404, str(exc)) from exc
        return 202, {"run_id": run_id, "status": str(getattr(result, "status", "accepted"))}

    async def _check_not_passed(
        self, route: WebhookRoute, run_id: str, delivery: str | None
    ) -> None:
        """Refuse a call for a webhook the run went past and does not wait at again: a
        signal would only be kept for a wait that is over. (A finished run refuses
        signals itself; a webhook not reached yet keeps the call until it is.)"""
        current = await self.target.result(run_id)
        if current.status.finished or route.name in current.waiting_for:
            return
        if current.path().get(route.node_id) != "visited":
            return
        if delivery is not None and delivery in current.snapshot()["sections"].get(
            "deliveries", {}
        ):
            raise DuplicateDelivery(run_id, delivery)
        raise ResumeError(
            f"run {run_id!r} is past its webhook {route.name!r} ({route.path}) and does not "
            "wait there any more, so the call was not delivered"
        )

    def _route(self, path: str) -> tuple[WebhookRoute, str]:
        base, _, run_id = path.rstrip("/").rpartition("/")
        route = self.routes.get(base)
        if route is None or not run_id:
            raise WebhookRejected(404, f"no webhook at {path!r}; POST {{path}}/{{run_id}}")
        return route, run_id


def app(target: SignalTarget, *, flows: Any = None, max_body: int = 1 << 20) -> WebhookApp:
    """The webhook ASGI app for ``target`` (a ``Runtime`` or a ``Client``).

    Routes come from the webhook nodes of ``flows`` (flows, builders or
    blueprints), or of every flow ``target`` knows.

    >>> import flowkit
    >>> from flowkit.webhooks import app
    >>> asgi = app(flowkit.Runtime())
    """
    blueprints = [_blueprint(f) for f in flows] if flows is not None else _known(target)
    return WebhookApp(target, routes_of(blueprints), max_body=max_body)


def _blueprint(flow: Any) -> Any:
    if hasattr(flow, "nodes"):
        return flow
    if hasattr(flow, "blueprint"):
        return flow.blueprint
    return flow.build()


def _known(target: Any) -> list[Any]:
    known = getattr(target, "known_blueprints", None)
    return list(known()) if callable(known) else []


def _payload(body: bytes, headers: dict[str, str]) -> Any:
    text = body.decode("utf-8", errors="replace")
    if "json" in headers.get("content-type", "json"):
        try:
            return json.loads(text) if text else None
        except (ValueError, RecursionError):  # not JSON, or nested too deeply to read
            return text
    return text


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise WebhookRejected(400, "client disconnected")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise WebhookRejected(413, f"body larger than {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _respond(send: Send, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return

"""The webhook ASGI app: signed calls resume runs; every rejection resumes nothing."""

from __future__ import annotations

import json
import socket
from typing import Any

import anyio
import httpx
import pytest

import flowkit
from flowkit import Flow
from flowkit.webhooks import app, sign

SECRET = "wh_secret"


async def charge(payment: Any) -> str:
    return f"paid {payment['amount']}"


def payment_flow() -> Flow:
    return (
        Flow("pay")
        .node("hook", uses="webhook", params={"path": "/hooks/payment", "secret": SECRET})
        .node("charge", charge)
        .edge("hook", "charge")
    )


async def _waiting_run() -> tuple[flowkit.Runtime, str, Flow]:
    flow = payment_flow()
    rt = flowkit.Runtime()
    result = await rt.run(flow)
    assert flowkit.RunStatus.AWAITING == result.status
    return rt, result.run_id, flow


def _client(rt: flowkit.Runtime, **options: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app(rt, **options))
    return httpx.AsyncClient(transport=transport, base_url="http://flowkit.test")


def _signed(body: bytes, secret: str = SECRET, **extra: str) -> dict[str, str]:
    return {"X-Flowkit-Signature": sign(secret, body), "Content-Type": "application/json", **extra}


@pytest.mark.anyio
class TestAccepted:
    """A correctly signed call resumes the run with the JSON body."""

    async def test_resumes_run(self) -> None:
        rt, run_id, _ = await _waiting_run()
        body = json.dumps({"amount": 42}).encode()
        async with _client(rt) as client:
            response = await client.post(
                f"/hooks/payment/{run_id}", content=body, headers=_signed(body)
            )
        assert 202 == response.status_code
        result = await rt.result(run_id)
        assert flowkit.RunStatus.COMPLETED == result.status
        assert "paid 42" == result.output


@pytest.mark.anyio
class TestRejected:
    """Every rejection answers with its status and leaves the run waiting."""

    async def _post(
        self, rt: flowkit.Runtime, path: str, body: bytes, headers: dict[str, str], **options: Any
    ) -> int:
        async with _client(rt, **options) as client:
            response = await client.post(path, content=body, headers=headers)
        return response.status_code

    async def _still_waiting(self, rt: flowkit.Runtime, run_id: str) -> None:
        assert flowkit.RunStatus.AWAITING == (await rt.result(run_id)).status

    async def test_missing_signature_is_401(self) -> None:
        rt, run_id, _ = await _waiting_run()
        status = await self._post(rt, f"/hooks/payment/{run_id}", b"{}", {})
        assert 401 == status
        await self._still_waiting(rt, run_id)

    async def test_wrong_secret_is_401(self) -> None:
        rt, run_id, _ = await _waiting_run()
        status = await self._post(rt, f"/hooks/payment/{run_id}", b"{}", _signed(b"{}", "nope"))
        assert 401 == status
        await self._still_waiting(rt, run_id)

    async def test_tampered_body_is_401(self) -> None:
        rt, run_id, _ = await _waiting_run()
        headers = _signed(b'{"amount": 1}')
        status = await self._post(rt, f"/hooks/payment/{run_id}", b'{"amount": 1000}', headers)
        assert 401 == status
        await self._still_waiting(rt, run_id)

    async def test_unknown_run_is_404(self) -> None:
        rt, run_id, _ = await _waiting_run()
        status = await self._post(rt, "/hooks/payment/no-such-run", b"{}", _signed(b"{}"))
        assert 404 == status
        await self._still_waiting(rt, run_id)

    async def test_unknown_path_is_404(self) -> None:
        rt, run_id, _ = await _waiting_run()
        status = await self._post(rt, f"/hooks/other/{run_id}", b"{}", _signed(b"{}"))
        assert 404 == status
        await self._still_waiting(rt, run_id)

    # httpx's ASGITransport leaves its body generator unfinished when an app stops
    # reading early (as it must, past the limit); trio reports that at collection.
    @pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
    async def test_oversized_body_is_413(self) -> None:
        rt, run_id, _ = await _waiting_run()
        body = b"x" * 2048
        status = await self._post(
            rt, f"/hooks/payment/{run_id}", body, _signed(body), max_body=1024
        )
        assert 413 == status
        await self._still_waiting(rt, run_id)

    async def test_get_is_405(self) -> None:
        rt, run_id, _ = await _waiting_run()
        async with _client(rt) as client:
            response = await client.get(f"/hooks/payment/{run_id}")
        assert 405 == response.status_code
        await self._still_waiting(rt, run_id)

    async def test_replayed_delivery_is_409(self) -> None:
        flow = (
            Flow("pay2")
            .node("hook", uses="webhook", params={"path": "/hooks/payment", "secret": SECRET})
            .wait("second")
            .edge("hook", "second")
        )
        rt = flowkit.Runtime()
        run_id = (await rt.run(flow)).run_id
        body = b'{"amount": 5}'
        headers = _signed(body, **{"X-Flowkit-Delivery": "d-1"})
        first = await self._post(rt, f"/hooks/payment/{run_id}", body, headers)
        replay = await self._post(rt, f"/hooks/payment/{run_id}", body, headers)
        assert (202, 409) == (first, replay)
        result = await rt.result(run_id)
        assert {} == result.state  # the replay buffered nothing
        assert flowkit.RunStatus.AWAITING == result.status


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TestHypercorn:
    """The app served by a real hypercorn on a loopback port resumes a run."""

    @pytest.mark.anyio
    @pytest.mark.parametrize("anyio_backend", ["asyncio"])
    async def test_real_server(self, anyio_backend: str) -> None:
        from hypercorn.asyncio import serve
        from hypercorn.config import Config

        rt, run_id, _ = await _waiting_run()
        port = _free_port()
        config = Config()
        config.bind = [f"127.0.0.1:{port}"]
        config.accesslog = None
        config.errorlog = None
        shutdown = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: serve(app(rt), config, shutdown_trigger=shutdown.wait))
            body = b'{"amount": 7}'
            async with httpx.AsyncClient() as client:
                for _ in range(100):  # the server binds asynchronously: retry connects
                    try:
                        response = await client.post(
                            f"http://127.0.0.1:{port}/hooks/payment/{run_id}",
                            content=body,
                            headers=_signed(body),
                        )
                        break
                    except httpx.ConnectError:
                        await anyio.sleep(0.05)
            shutdown.set()
        assert 202 == response.status_code
        assert "paid 7" == (await rt.result(run_id)).output

"""``Client``: start, signal and await runs that workers execute."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio

from ..engine import _protocol as p
from ..engine._action import Action
from ..engine._result import RunResult
from ..engine._state import FINISHED_VALUES
from ._shell import Shell

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ..engine._middleware import Middleware
    from ..stores._protocol import Store
    from ..transports._protocol import Transport


class Client:
    """Talks to a fleet of workers through their transport and store.

    >>> import flowkit
    >>> from flowkit.stores import MemoryStore
    >>> from flowkit.transports import MemoryTransport
    >>> client = flowkit.Client(transport=MemoryTransport(), store=MemoryStore())
    """

    def __init__(
        self,
        transport: Transport,
        store: Store,
        *,
        queue: str = "flowkit",
        flows: Sequence[Any] = (),
        lease: float = 30.0,
        poll_interval: float = 0.05,
        max_poll_interval: float = 1.0,
        middleware: Sequence[Middleware] = (),
    ) -> None:
        self.shell = Shell(
            transport, store, queue=queue, lease=lease, flows=flows, middleware=middleware
        )
        self.store = store
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval

    @property
    def events(self) -> Any:
        return self.shell.events

    async def start(self, flow: Any, *, run_id: str | None = None, **inputs: Any) -> ClientHandle:
        """Create the run and publish its first nodes; idempotent per ``run_id``."""
        run_id = await self.shell.start(self.shell.target_for(flow), run_id, inputs)
        return ClientHandle(self, run_id)

    async def run(
        self,
        flow: Any,
        *,
        run_id: str | None = None,
        timeout: float | None = None,
        **inputs: Any,
    ) -> RunResult:
        """Start a run and wait for it to complete, fail or be cancelled."""
        handle = await self.start(flow, run_id=run_id, **inputs)
        return await handle.result(timeout=timeout)

    async def signal(
        self,
        run_id: str,
        name: str,
        data: Any = None,
        *,
        action: str | None = None,
        delivery_id: str | None = None,
    ) -> RunResult:
        """Deliver a signal (routed to a waiting child if need be); returns the run's result."""
        if isinstance(data, Action):
            action, data = data.name, data.value
        target = await self.shell.signal_target(run_id, name)
        await self.shell.step(target, p.SignalReceived(name, data, action, delivery_id))
        return await self.result(run_id)

    async def cancel(self, run_id: str) -> RunResult:
        """Cancel a run; its nodes in flight finish but their results are dropped."""
        await self.shell.replica(run_id, fresh=True)
        await self.shell.step(run_id, p.CancelRequested())
        return await self.result(run_id)

    async def result(self, run_id: str) -> RunResult:
        """The run's current result, read from the store."""
        replica = await self.shell.replica(run_id, fresh=True)
        return RunResult.of(replica.state, replica.program.blueprint)

    async def wait(self, run_id: str, timeout: float | None = None) -> RunResult:
        """Wait until the run is completed, failed or cancelled (polling the store)."""
        delay = self.poll_interval
        with anyio.fail_after(timeout):
            while True:
                info = await self.store.info(run_id)
                if info is not None and info.status in FINISHED_VALUES:
                    return await self.result(run_id)
                await anyio.sleep(delay)
                delay = min(self.max_poll_interval, delay * 1.5)

    def known_blueprints(self) -> list[Any]:
        """Blueprints this client knows (the webhook app routes from these)."""
        return [t.blueprint for t in self.shell.by_digest.values()]


class ClientHandle:
    """A run started through a :class:`Client`."""

    def __init__(self, client: Client, run_id: str) -> None:
        self.client = client
        self.run_id = run_id

    async def result(self, timeout: float | None = None) -> RunResult:
        return await self.client.wait(self.run_id, timeout)

    async def cancel(self) -> RunResult:
        return await self.client.cancel(self.run_id)

    def __repr__(self) -> str:
        return f"ClientHandle(run_id={self.run_id!r})"

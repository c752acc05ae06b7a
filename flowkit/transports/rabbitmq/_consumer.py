"""One ``RabbitMQTransport.receive()`` loop: its channel, inbox and leases."""

from __future__ import annotations

import math
from contextlib import suppress
from typing import TYPE_CHECKING

import anyio

from ._delivery import _Leases

if TYPE_CHECKING:
    from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

    from ._transport import RabbitMQTransport


class _Consumer:
    """One ``receive()`` loop: its own channel, an inbox its consumer callback fills, leases.

    The loop waits on the inbox, waking when a lease runs out to requeue that
    delivery; :meth:`RabbitMQTransport.close` ends it by closing the inbox.
    """

    def __init__(self, transport: RabbitMQTransport) -> None:
        self._transport = transport
        self._channel: AbstractChannel | None = None
        self.leases = _Leases(transport.visibility_timeout)
        self.inbox, self._outbox = _inbox()

    async def start(self, name: str) -> None:
        """Open the channel and start consuming ``name``."""
        transport = self._transport
        channel = self._channel = await transport._open_channel(f"consume from {name!r}")
        with transport._errors(f"consume from {name!r}"):
            await channel.set_qos(prefetch_count=transport.prefetch)
            amqp_queue = await channel.declare_queue(
                name, durable=True, arguments=transport._work_arguments(name)
            )
            await amqp_queue.consume(self._on_message)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        # once the loop has ended, closing its channel requeues the message
        with suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._outbox.send_nowait(message)

    async def next(self) -> AbstractIncomingMessage | None:
        """The next message, requeueing expired deliveries meanwhile; None once closed."""
        while True:
            for delivery in self.leases.expired():
                await delivery._expire()
            with anyio.move_on_after(self.leases.wait()):
                try:
                    return await self.inbox.receive()
                except anyio.EndOfStream:
                    return None

    def close_inbox(self) -> None:
        self._outbox.close()

    async def stop(self) -> None:
        """Close the inbox and the channel (RabbitMQ requeues what was not acked)."""
        self._outbox.close()
        self.inbox.close()
        if self._channel is not None:
            await self._transport._close_quietly(self._channel)


def _inbox() -> tuple[
    MemoryObjectReceiveStream[AbstractIncomingMessage],
    MemoryObjectSendStream[AbstractIncomingMessage],
]:
    send, receive = anyio.create_memory_object_stream["AbstractIncomingMessage"](math.inf)
    return receive, send

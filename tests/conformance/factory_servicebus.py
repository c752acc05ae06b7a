"""``ServiceBusTransport`` in the transport conformance suite, against a local stand-in.

No Service Bus emulator can run on these machines (Microsoft's is a container
image), so each test starts :class:`tests.servicebus_standin.ServiceBusStandIn`:
a local AMQP 1.0 broker (python-qpid-proton) on 127.0.0.1 and a free port,
speaking the real wire protocol to the real ``azure-servicebus`` SDK, which
``ServiceBusTransport`` drives unchanged through a development-emulator
connection string (``UseDevelopmentEmulator=true``: plain AMQP, no TLS). The
broker is stopped when the test ends, so every test has a namespace of its own.

What the stand-in reproduces (its module docstring has the detail): SASL
ANONYMOUS and CBS ``put-token`` with SAS signatures checked, queue links,
peek-lock deliveries whose 16-byte delivery tags are the lock tokens,
settlement with the outcome echoed (complete, abandon, dead-letter with reason
and description, ``message-lock-lost`` for a stale lock), lock expiry with
redelivery and delivery counts, and the ``$management`` operations the
transport uses (renew-lock, schedule / cancel-scheduled message, peek).
What it does not: TLS, token claims, topics, sessions, transactions,
duplicate detection, TTL, quotas and throttling, the ATOM management API
(queues are created when first attached), persistence, and Service Bus's
timing (its lock lasts ``visibility_timeout``, far below the real 5 s minimum).

Every ``make()`` is a new transport with its own AMQP connections, as a
separate worker process would be; each uses ``lock_renewal=False`` so a lock
runs out when the suite expects it to (the worker's heartbeat renews locks by
``extend``). azure-servicebus's client is asyncio-only, so this factory runs on
asyncio alone (its tests are marked ``asyncio_only``).

Ordering: the stand-in hands a queue's messages out in sequence-number order,
round robin between the receiver links with credit; a message that is
abandoned, or whose lock ran out, goes back in its sequence-number place, so it
comes before messages sent after it; a scheduled message takes a sequence
number when it is sent and enters the queue when due. Each transport's
receiver prefetches (``prefetch=4``: up to five messages locked ahead), so
competing consumers take runs of messages. ``key`` implies no ordering
(sessions are not used).
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import anyio

from flowkit.transports._servicebus import ServiceBusTransport

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path


class ServiceBusFactory:
    """A new stand-in broker per test; a new transport (and connections) per ``make()``."""

    name = "servicebus"
    backends = ("asyncio",)
    visibility_timeout = 1.0

    @asynccontextmanager
    async def open(self, tmp_path: Path) -> AsyncIterator[Callable[[], ServiceBusTransport]]:
        # imported here: without python-qpid-proton only these tests fail, saying so
        from servicebus_standin import ServiceBusStandIn

        standin = ServiceBusStandIn(lock_duration=self.visibility_timeout).start()
        made: list[ServiceBusTransport] = []

        def make() -> ServiceBusTransport:
            transport = ServiceBusTransport(
                standin.connection_string,
                prefetch=4,
                lock_renewal=False,
                lock_duration=self.visibility_timeout,
                client_options={"retry_total": 1},
            )
            made.append(transport)
            return transport

        try:
            yield make
        finally:
            with anyio.CancelScope(shield=True):
                for transport in made:
                    await transport.close()
                await anyio.to_thread.run_sync(standin.stop)

    async def dead_letters(
        self, transport: ServiceBusTransport, queue: str
    ) -> list[tuple[bytes, str]]:
        """Peek at the queue's dead-letter subqueue (the messages stay there)."""
        return [(parked.body, parked.reason) for parked in await transport.dead_letters(queue)]


FACTORY = ServiceBusFactory()

"""``SQSTransport``: queues on Amazon SQS, through aiobotocore (asyncio only).

aiobotocore runs on asyncio (aiohttp), not trio, so this transport does too.

Topology, under ``queue_prefix`` (``P``), for a flowkit queue ``q`` (``t`` is
``q`` made safe for SQS names: letters, digits and ``-`` kept, every other
UTF-8 byte written ``_xx``):

* ``P-t`` (``P-t.fifo`` with ``fifo=True``): the work queue, created on first
  use (unless ``create_queues=False``) with a *redrive policy* to its
  dead-letter queue after ``max_receive_count`` receives. If it already exists
  with other attributes it is used as it is: the visibility timeout is sent
  with every receive anyway, but its redrive policy is whatever it has.
* ``P-t-dlq`` (``P-t-dlq.fifo``): the dead-letter queue, keeping messages 14
  days. :meth:`SQSDelivery.dead_letter` *sends* a copy there carrying a
  ``flowkit-reason`` attribute, then deletes the original (a process dying in
  between leaves both: at least once). Messages SQS itself moves there after
  too many receives carry no reason; :meth:`SQSTransport.dead_letters` reports
  them as such.

Messages: SQS bodies are text, so the body travels base64-encoded (an empty
body as ``-``), said by a ``flowkit-encoding`` attribute (a message without it
is read as UTF-8 text, so other producers can feed a queue). All headers
travel as one JSON attribute, ``flowkit-headers`` (SQS allows 10 attributes
per message), the key as ``flowkit-key``. The base64 form makes the largest
body about 190 KiB of the 256 KiB SQS allows.

Leases: ``visibility_timeout`` (whole seconds) is the lease; ``extend(s)`` is
``ChangeMessageVisibility(s)``, ``nack(requeue_after)`` is
``ChangeMessageVisibility(requeue_after or 0)``. SQS lets a message stay
invisible at most 12 hours after it was received. A stale receipt handle is
accepted by SQS (and moto), so each delivery keeps a lease clock of its own,
started when the receive returned (no earlier than SQS's) and restarted by
``extend()``; once it ran out (less a guard of 5 %, at most 0.5 s) settling
raises :class:`~flowkit.transports.DeliveryError`. Received messages wait in
the receiver until the consumer asks for the next one; one whose lease ran out
meanwhile is dropped (SQS redelivers it), and those still waiting when the
receiver stops are made visible again at once.

Delays: ``DelaySeconds`` (rounded up to whole seconds) up to 900 s. A longer
delay is sent with ``DelaySeconds=900`` and a ``flowkit-deliver-at``
attribute; a receiver that gets it early sends it again with the delay left
(at most 900 s) and deletes the early copy, so it arrives as a first attempt.
A ``nack(requeue_after=...)`` past SQS's 12-hour limit does the same, carrying
the attempts so far in ``flowkit-attempts``. Both need a running receiver of
the queue to move; flowkit's own long waits are store timers, not delays.
FIFO queues take no per-message delay: ``send(delay=...)`` raises
:class:`~flowkit.TransportError` there.

``attempt`` is SQS's ``ApproximateReceiveCount`` (plus ``flowkit-attempts``).

Ordering: a standard queue has none (best effort). With ``fifo=True``,
messages with the same ``key`` (the message group; a random group for no key)
are delivered in order, one at a time: a group waits while one of its messages
is in flight, including one nacked with a delay.

Every botocore exception (and socket error) is translated to
:class:`~flowkit.TransportError` (:class:`~flowkit.transports.DeliveryError`
while settling a delivery) by :func:`translate_errors`, and nowhere else.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import deque
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio
import structlog

from ..._errors import ConfigurationError, MissingDependency, TransportError
from ...backends._options import redact, split_options
from .._sdk import Lease as _Lease
from .._sdk import fresh
from ._delivery import SQSDelivery as SQSDelivery
from ._errors import _code
from ._errors import sdk_errors as sdk_errors
from ._errors import translate_errors as translate_errors
from ._messages import (
    ATTEMPTS_ATTR,
    DELIVER_AT_ATTR,
    _attr,
    _attrs,
    _copy,
    _dead_letter,
    _encode,
    _group,
    _key,
    _number,
    _seconds,
    _token,
    _visible_now,
)
from ._options import _URL_OPTIONS, _check_options

try:
    from aiobotocore.config import AioConfig  # type: ignore[import-untyped,unused-ignore]
    from aiobotocore.session import get_session  # type: ignore[import-untyped,unused-ignore]
except ImportError:  # the "sqs" extra is not installed: SQSTransport() says so
    _HAVE_AIOBOTOCORE = False
else:
    _HAVE_AIOBOTOCORE = True

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

    from .._memory import DeadLetter
    from ._messages import Message

_log = structlog.get_logger("flowkit.transports")

MAX_DELAY = 900  # SQS's DelaySeconds limit
_DLQ_RETENTION = "1209600"  # 14 days, SQS's longest
_RELEASE_TIMEOUT = 5.0


class SQSTransport:
    """Queues on Amazon SQS (asyncio only).

    Example::

        transport = SQSTransport("eu-west-1", queue_prefix="shop", visibility_timeout=60)
        await transport.send("flowkit", b"hello")
        async for delivery in transport.receive("flowkit"):
            await delivery.ack()

    Args:
        region: the AWS region.
        queue_prefix: starts every queue name (letters, digits, ``_``, ``-``).
        endpoint_url: another endpoint than AWS's (a local SQS-compatible server).
        visibility_timeout: whole seconds a received message stays invisible.
        wait_time: long-polling seconds per receive (0 to 20).
        fifo: use FIFO queues, the key being the message group.
        max_receive_count: receives before SQS moves a message to the dead-letter queue.
        batch: messages one receive takes (1 to 10).
        create_queues: create missing queues (turn off where the account may not).
        aws_access_key_id: credentials; by default botocore's chain
            (environment, profile, instance role).
        aws_secret_access_key: see ``aws_access_key_id``.
        aws_session_token: see ``aws_access_key_id``.
    """

    def __init__(
        self,
        region: str = "us-east-1",
        *,
        queue_prefix: str = "flowkit",
        endpoint_url: str | None = None,
        visibility_timeout: int = 30,
        wait_time: int = 10,
        fifo: bool = False,
        max_receive_count: int = 5,
        batch: int = 10,
        create_queues: bool = True,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
    ) -> None:
        if not _HAVE_AIOBOTOCORE:
            raise MissingDependency("SQSTransport", "sqs")
        _check_options(queue_prefix, visibility_timeout, wait_time, max_receive_count, batch)
        self.region = region
        self.queue_prefix = queue_prefix
        self.endpoint_url = endpoint_url
        self.visibility_timeout = visibility_timeout
        self.wait_time = wait_time
        self.fifo = fifo
        self.max_receive_count = max_receive_count
        self.batch = batch
        self.create_queues = create_queues
        self._credentials = {
            "aws_access_key_id": aws_access_key_id,
            "aws_secret_access_key": aws_secret_access_key,
            "aws_session_token": aws_session_token,
        }
        self._sqs: Any = None
        self._stack = AsyncExitStack()
        self._lock = anyio.Lock()
        self._urls: dict[str, str] = {}
        self._polls: set[anyio.CancelScope] = set()
        self._closed = False

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SQSTransport:
        """Build from ``sqs://region/queue-prefix?endpoint=http://127.0.0.1:PORT&fifo=true``.

        Other query options: ``visibility_timeout``, ``wait_time``,
        ``max_receive_count``, ``batch``. Keyword ``options`` override the query.
        """
        parts = urlsplit(url)
        if parts.scheme.lower() != "sqs" or "@" in parts.netloc:
            raise ConfigurationError(
                f"not an SQS URL: {redact(url)!r}; use sqs://region/queue-prefix (credentials come "
                "from the environment or keyword arguments, never the URL)"
            )
        _, found = split_options(url, _URL_OPTIONS)
        if "endpoint" in found:
            found["endpoint_url"] = found.pop("endpoint")
        if parts.path.strip("/"):
            found["queue_prefix"] = parts.path.strip("/")
        return cls(parts.netloc or "us-east-1", **(found | options))

    def queue_name(self, queue: str, *, dead: bool = False) -> str:
        """The SQS queue behind the flowkit queue ``queue`` (or its dead-letter queue)."""
        name = f"{self.queue_prefix}-{_token(queue)}" + ("-dlq" if dead else "")
        return name + (".fifo" if self.fifo else "")

    def _errors(self, operation: str, *, settling: bool = False) -> Any:
        where = self.endpoint_url or self.region
        return translate_errors(operation, repr(where), settling=settling)

    # -- sending ---------------------------------------------------------------
    async def send(
        self,
        queue: str,
        body: bytes,
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
        delay: float | None = None,
        priority: int | None = None,
    ) -> None:
        """``SendMessage``; ``delay`` as ``DelaySeconds`` (longer ones: see the module docs)."""
        if delay and self.fifo:
            raise TransportError(
                f"SQS FIFO queues take no per-message delay (send to {queue!r} with "
                f"delay={delay}); use SQSTransport(fifo=False), or a store timer"
            )
        url = await self._queue_url(queue)
        arguments = _encode(bytes(body), key, headers or {})
        seconds = _seconds(delay or 0.0)
        if seconds > MAX_DELAY:
            arguments["MessageAttributes"][DELIVER_AT_ATTR] = _attr(repr(time.time() + seconds))
        await self._send(url, arguments, key=key, delay=min(seconds, MAX_DELAY))

    async def _send(
        self,
        url: str,
        arguments: dict[str, Any],
        *,
        key: str | None,
        delay: int = 0,
        dedupe: str | None = None,
    ) -> None:
        if self.fifo:
            arguments["MessageGroupId"] = _group(key)
            arguments["MessageDeduplicationId"] = dedupe or uuid.uuid4().hex
        elif delay:
            arguments["DelaySeconds"] = delay
        client = await self._client()
        with self._errors(f"send to {url!r}"):
            await client.send_message(QueueUrl=url, **arguments)

    async def _bury(self, queue: str, message: Message, extra: Mapping[str, str]) -> None:
        """Send a copy of ``message`` with the ``extra`` attributes to the dead-letter queue."""
        url = await self._queue_url(queue, dead=True)
        dedupe = str(message.get("MessageId", "")) or None  # a repeated dead_letter: once
        await self._send(url, _copy(message, extra), key=_key(message), dedupe=dedupe)

    async def _defer(self, url: str, message: Message, seconds: float, attempts: int) -> None:
        """Send ``message`` again to arrive ``seconds`` from now; delete this copy."""
        due = repr(time.time() + seconds)
        arguments = _copy(message, {DELIVER_AT_ATTR: due, ATTEMPTS_ATTR: str(attempts)})
        await self._send(url, arguments, key=_key(message), delay=min(_seconds(seconds), MAX_DELAY))
        client = await self._client()
        with self._errors(f"delete a deferred message from {url!r}"):
            await client.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])

    # -- receiving -------------------------------------------------------------
    async def connect(self, queue: str) -> None:
        """Create ``queue`` and its dead-letter queue (``create_queues``), else look its URL
        up (idempotent); TransportError if SQS cannot be reached or the queue is missing."""
        await self._queue_url(queue)

    async def receive(self, queue: str) -> AsyncIterator[SQSDelivery]:
        """Deliveries from ``queue`` by long polling, until the transport is closed.

        Leaving the loop makes the messages received but not yielded yet
        visible again at once; yielded, unsettled ones come back after their
        visibility timeout.
        """
        url = await self._queue_url(queue)
        waiting: deque[tuple[Message, _Lease]] = deque()
        try:
            while not self._closed:
                if not waiting:
                    waiting.extend(await self._poll(url))
                    continue
                message, lease = waiting.popleft()
                delivery = await self._admit(queue, url, message, lease)
                if delivery is not None:
                    yield delivery
        finally:
            await self._release(url, waiting)

    async def _poll(self, url: str) -> list[tuple[Message, _Lease]]:
        """One long poll: the messages received, each with its lease clock.

        :meth:`close` cancels polls in flight, so a closing transport does not
        wait out ``wait_time``.
        """
        response: dict[str, Any] = {}
        with anyio.CancelScope() as scope:
            self._polls.add(scope)
            try:
                response = await self._receive_message(url)
            except TransportError:
                if not self._closed:
                    raise
            finally:
                self._polls.discard(scope)
        return [(m, _Lease(self.visibility_timeout)) for m in response.get("Messages", [])]

    async def _receive_message(self, url: str) -> dict[str, Any]:
        client = await self._client()
        with self._errors(f"receive from {url!r}"):
            response: dict[str, Any] = await client.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=self.batch,
                WaitTimeSeconds=self.wait_time,
                VisibilityTimeout=self.visibility_timeout,
                MessageSystemAttributeNames=["ApproximateReceiveCount"],
                MessageAttributeNames=["All"],
            )
        return response

    async def _admit(
        self, queue: str, url: str, message: Message, lease: _Lease
    ) -> SQSDelivery | None:
        """The delivery to yield for ``message``, or None if it was handled here."""
        if lease.expired():
            return None  # its visibility ran out while it waited here: SQS redelivers it
        left = _number(_attrs(message).get(DELIVER_AT_ATTR)) - time.time()
        if left > 0:
            await self._defer_early(url, message, left)
            return None
        delivery = SQSDelivery(self, queue, url, message, lease)
        return delivery if await fresh(delivery, lease, self.visibility_timeout) else None

    async def _defer_early(self, url: str, message: Message, left: float) -> None:
        attempts = int(_number(_attrs(message).get(ATTEMPTS_ATTR)))
        try:
            await self._defer(url, message, left, attempts)
        except TransportError as exc:  # it stays invisible until its visibility runs out
            _log.warning("could not pass on a delayed message", error=str(exc))

    async def _release(self, url: str, waiting: deque[tuple[Message, _Lease]]) -> None:
        """Make what was received but not yielded visible again."""
        await self._make_visible(url, [message for message, _ in waiting])

    async def _make_visible(self, url: str, messages: list[Message]) -> None:
        """``ChangeMessageVisibility(0)`` for ``messages``, best effort (they return anyway)."""
        if not messages or self._sqs is None:
            return
        with anyio.move_on_after(_RELEASE_TIMEOUT, shield=True):
            try:
                with self._errors(f"make messages of {url!r} visible"):
                    for start in range(0, len(messages), 10):  # SQS batches hold 10
                        entries = _visible_now(messages[start : start + 10])
                        await self._sqs.change_message_visibility_batch(
                            QueueUrl=url, Entries=entries
                        )
            except TransportError as exc:
                _log.debug("could not make messages visible again", error=str(exc))

    # -- topology --------------------------------------------------------------
    async def _queue_url(self, queue: str, *, dead: bool = False) -> str:
        """The URL of the queue (created with its dead-letter queue if missing)."""
        name = self.queue_name(queue, dead=dead)
        url = self._urls.get(name)
        if url is None:
            if self.create_queues:
                await self._create(queue)
                url = self._urls[name]
            else:
                url = self._urls[name] = await self._lookup(name)
        return url

    async def _create(self, queue: str) -> None:
        dlq_name = self.queue_name(queue, dead=True)
        dlq = await self._create_queue(dlq_name, self._base_attributes(_DLQ_RETENTION))
        client = await self._client()
        with self._errors(f"read the ARN of {dlq_name!r}"):
            response = await client.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])
        arn = response["Attributes"]["QueueArn"]
        name = self.queue_name(queue)
        url = await self._create_queue(name, self._work_attributes(arn))
        self._urls[dlq_name], self._urls[name] = dlq, url

    async def _create_queue(self, name: str, attributes: dict[str, str]) -> str:
        """``CreateQueue``; one that exists with other attributes is used as it is."""
        client = await self._client()
        try:
            with self._errors(f"create queue {name!r}"):
                response = await client.create_queue(QueueName=name, Attributes=attributes)
        except TransportError as exc:
            if _code(exc.__cause__ or exc) not in ("QueueAlreadyExists", "QueueNameExists"):
                raise
            _log.info("SQS queue exists with other attributes; using it", queue=name)
            return await self._lookup(name)
        return str(response["QueueUrl"])

    async def _lookup(self, name: str) -> str:
        client = await self._client()
        with self._errors(f"look up queue {name!r}"):
            response = await client.get_queue_url(QueueName=name)
        return str(response["QueueUrl"])

    def _base_attributes(self, retention: str | None = None) -> dict[str, str]:
        attributes = {"FifoQueue": "true"} if self.fifo else {}
        if retention:
            attributes["MessageRetentionPeriod"] = retention
        return attributes

    def _work_attributes(self, dlq_arn: str) -> dict[str, str]:
        redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": self.max_receive_count}
        return self._base_attributes() | {
            "VisibilityTimeout": str(self.visibility_timeout),
            "ReceiveMessageWaitTimeSeconds": str(self.wait_time),
            "RedrivePolicy": json.dumps(redrive),
        }

    # -- client ----------------------------------------------------------------
    async def _client(self) -> Any:
        if self._closed:
            raise TransportError("SQSTransport is closed")
        async with self._lock:
            if self._sqs is None:
                self._sqs = await self._open_client()
            return self._sqs

    async def _open_client(self) -> Any:
        config = AioConfig(
            connect_timeout=10,
            read_timeout=self.wait_time + 20,
            retries={"mode": "standard", "max_attempts": 3},
        )
        creator = get_session().create_client(
            "sqs",
            region_name=self.region,
            endpoint_url=self.endpoint_url,
            config=config,
            **self._credentials,
        )
        with self._errors("open a client"):
            return await self._stack.enter_async_context(creator)

    async def close(self) -> None:
        """Close the client: receivers stop; unsettled deliveries return when their
        visibility timeout runs out."""
        self._closed = True
        self._sqs = None
        for scope in list(self._polls):
            scope.cancel()
        with self._errors("close"):
            await self._stack.aclose()

    # -- inspection ------------------------------------------------------------
    async def dead_letters(self, queue: str) -> list[DeadLetter]:
        """The messages in ``queue``'s dead-letter queue.

        SQS has no peek: this receives every message, then makes them visible
        again, so run it while nobody else consumes the dead-letter queue.
        """
        url = await self._queue_url(queue, dead=True)
        messages: list[Message] = []
        try:
            while batch := await self._receive_dead(url):
                messages.extend(batch)
        finally:
            await self._make_visible(url, messages)
        return [_dead_letter(queue, m, self.max_receive_count) for m in messages]

    async def _receive_dead(self, url: str) -> list[Message]:
        client = await self._client()
        with self._errors(f"read the dead letters of {url!r}"):
            response = await client.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=1,  # long polling asks every server: none is missed
                VisibilityTimeout=60,
                MessageAttributeNames=["All"],
            )
        return list(response.get("Messages", []))

    def __repr__(self) -> str:
        where = self.endpoint_url or self.region
        return f"SQSTransport({where!r}, queue_prefix={self.queue_prefix!r}, fifo={self.fifo})"

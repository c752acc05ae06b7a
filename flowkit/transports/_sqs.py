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

import base64
import binascii
import hashlib
import json
import math
import re
import time
import uuid
from collections import deque
from contextlib import AsyncExitStack, contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

import anyio
import structlog

from .._errors import MissingDependency, TransportError
from ..stores._urls import ConfigurationError, redact
from ._memory import DeadLetter
from ._protocol import DeliveryError

try:
    import botocore.exceptions as boto_errors  # type: ignore[import-untyped,unused-ignore]
    from aiobotocore.config import AioConfig  # type: ignore[import-untyped,unused-ignore]
    from aiobotocore.session import get_session  # type: ignore[import-untyped,unused-ignore]
except ImportError:  # the "sqs" extra is not installed: SQSTransport() says so
    _HAVE_AIOBOTOCORE = False
else:
    _HAVE_AIOBOTOCORE = True

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator, Mapping

_log = structlog.get_logger("flowkit.transports")

Message = dict[str, Any]  # one message of a ReceiveMessage response

ENCODING_ATTR = "flowkit-encoding"
HEADERS_ATTR = "flowkit-headers"
KEY_ATTR = "flowkit-key"
REASON_ATTR = "flowkit-reason"
ATTEMPTS_ATTR = "flowkit-attempts"
QUEUE_ATTR = "flowkit-queue"
DELIVER_AT_ATTR = "flowkit-deliver-at"
MAX_DELAY = 900  # SQS's DelaySeconds limit
MAX_VISIBILITY = 43_200  # 12 hours
_DLQ_RETENTION = "1209600"  # 14 days, SQS's longest
_TOKEN_SAFE = re.compile(r"[A-Za-z0-9-]")
_PREFIX = re.compile(r"^[A-Za-z0-9_-]+$")
_GROUP_SAFE = re.compile(r"[\x21-\x7e]{1,128}")
_RELEASE_TIMEOUT = 5.0
_URL_OPTIONS: dict[str, Any] = {
    "endpoint": str,
    "visibility_timeout": int,
    "wait_time": int,
    "fifo": lambda text: {"true": True, "1": True, "false": False, "0": False}[text.lower()],
    "max_receive_count": int,
    "batch": int,
}
_STALE_CODES = ("ReceiptHandleIsInvalid", "MessageNotInflight", "InvalidParameterValue")
_AUTH_CODES = (
    "AccessDenied",
    "AccessDeniedException",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "UnrecognizedClientException",
    "ExpiredToken",
)


# -- errors ------------------------------------------------------------------
def sdk_errors() -> tuple[type[BaseException], ...]:
    """The roots of every exception botocore and aiobotocore raise, and socket errors."""
    return (
        boto_errors.BotoCoreError,
        boto_errors.ClientError,  # service errors, the modeled ones (QueueDoesNotExist) too
        boto_errors.UndefinedModelAttributeError,
        OSError,
    )


def _code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def _hint(exc: BaseException) -> str:
    """What to do next about ``exc``."""
    code = _code(exc)
    if "NonExistentQueue" in code or code == "QueueDoesNotExist":
        return "the queue does not exist: create it, or let SQSTransport (create_queues=True)"
    if code in _AUTH_CODES or isinstance(
        exc, boto_errors.NoCredentialsError | boto_errors.PartialCredentialsError
    ):
        return "check the AWS credentials and their SQS permissions"
    if code in _STALE_CODES:
        return "the delivery's visibility timeout may have run out: SQS redelivers it"
    if isinstance(exc, boto_errors.NoRegionError):
        return "give a region: SQSTransport('eu-west-1') or sqs://eu-west-1/prefix"
    if isinstance(exc, boto_errors.ConnectionError | boto_errors.HTTPClientError | OSError):
        return "check the network and the endpoint (endpoint_url) SQS is reached at"
    return "retry; if it keeps failing, check the request against the SQS limits"


def _text(exc: BaseException) -> str:
    """``exc`` as text (some SDK classes cannot ``str()`` without their arguments)."""
    try:
        return str(exc) or type(exc).__name__
    except Exception:  # an SDK class whose __str__ needs arguments it was not given
        return repr(exc.args)


@contextmanager
def translate_errors(operation: str, where: str, *, settling: bool = False) -> Iterator[None]:
    """Re-raise any SDK error in the block as a TransportError (DeliveryError if ``settling``)."""
    try:
        yield
    except sdk_errors() as exc:
        error = DeliveryError if settling else TransportError
        raise error(
            f"SQS {where}: {operation} failed ({type(exc).__name__}: {_text(exc)}); {_hint(exc)}"
        ) from exc


# -- messages ----------------------------------------------------------------
def _token(queue: str) -> str:
    """``queue`` as part of an SQS queue name (an injective encoding)."""
    return "".join(
        ch if _TOKEN_SAFE.fullmatch(ch) else "".join(f"_{b:02x}" for b in ch.encode())
        for ch in queue
    )


def _attr(value: str) -> dict[str, str]:
    return {"DataType": "String", "StringValue": value}


def _encode(body: bytes, key: str | None, headers: Mapping[str, str]) -> dict[str, Any]:
    """SendMessage arguments for a flowkit message."""
    attributes = {
        ENCODING_ATTR: _attr("base64" if body else "empty"),
        HEADERS_ATTR: _attr(json.dumps(dict(headers))),
    }
    if key is not None:
        attributes[KEY_ATTR] = _attr(json.dumps(key))  # JSON: an SQS value cannot be empty
    text = base64.b64encode(body).decode() if body else "-"
    return {"MessageBody": text, "MessageAttributes": attributes}


def _attrs(message: Message) -> dict[str, str]:
    raw = message.get("MessageAttributes") or {}
    return {name: str(value.get("StringValue", "")) for name, value in raw.items()}


def _body(message: Message) -> bytes:
    text = str(message.get("Body", ""))
    encoding = _attrs(message).get(ENCODING_ATTR)
    if encoding == "empty":
        return b""
    if encoding == "base64":
        try:
            return base64.b64decode(text, validate=True)
        except binascii.Error:
            pass  # a foreign message claiming base64: hand the text over as it is
    return text.encode()


def _headers(message: Message) -> dict[str, str]:
    """The sender's headers ({} if the attribute is missing or malformed)."""
    try:
        decoded = json.loads(_attrs(message).get(HEADERS_ATTR, "{}"))
    except ValueError:
        return {}
    if not isinstance(decoded, dict):
        return {}
    return {str(k): str(v) for k, v in decoded.items()}


def _key(message: Message) -> str | None:
    text = _attrs(message).get(KEY_ATTR)
    if text is None:
        return None
    try:
        key = json.loads(text)
    except ValueError:
        return text  # a foreign message's plain attribute
    return key if isinstance(key, str) else text


def _group(key: str | None) -> str:
    """A FIFO message group for ``key``: itself if SQS takes it, else its digest."""
    if key is None:
        return uuid.uuid4().hex
    if _GROUP_SAFE.fullmatch(key):
        return key
    return hashlib.sha256(key.encode()).hexdigest()


def _number(text: str | None) -> float:
    try:
        return float(text or 0)
    except ValueError:
        return 0.0


def _attempt(message: Message) -> int:
    count = int(_number(message.get("Attributes", {}).get("ApproximateReceiveCount")))
    return max(1, count) + int(_number(_attrs(message).get(ATTEMPTS_ATTR)))


def _seconds(value: float) -> int:
    """Whole seconds for SQS, never less than asked."""
    return max(0, math.ceil(value))


def _guard(seconds: float) -> float:
    return min(0.05 * seconds, 0.5)


class _Lease:
    """This process's view of a message's visibility: it ends no earlier than SQS's."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.until = time.monotonic() + seconds

    def renew(self, seconds: float) -> None:
        self.seconds = seconds
        self.until = time.monotonic() + seconds

    def expired(self) -> bool:
        return time.monotonic() > self.until - _guard(self.seconds)


# -- deliveries --------------------------------------------------------------
class SQSDelivery:
    """A delivery from :class:`SQSTransport`; settle it once.

    If settling fails (:class:`~flowkit.transports.DeliveryError`) the delivery
    stays unsettled: settle it again, or SQS redelivers it when its visibility
    timeout runs out.
    """

    def __init__(
        self, transport: SQSTransport, queue: str, url: str, message: Message, lease: _Lease
    ) -> None:
        self._transport = transport
        self._queue = queue
        self._url = url
        self._message = message
        self._lease = lease
        self._settled = False
        self.body: bytes = _body(message)
        self.headers: Mapping[str, str] = _headers(message)
        self.key: str | None = _key(message)
        self.attempt: int = _attempt(message)

    @property
    def _handle(self) -> str:
        return str(self._message["ReceiptHandle"])

    async def ack(self) -> None:
        """Done: ``DeleteMessage``."""
        self._check_held("ack")
        with self._errors("ack"):
            client = await self._transport._client()
            await client.delete_message(QueueUrl=self._url, ReceiptHandle=self._handle)
        self._settled = True

    async def nack(self, requeue_after: float | None = None) -> None:
        """Visible again now, or after ``requeue_after`` seconds (``ChangeMessageVisibility``)."""
        self._check_held("nack")
        seconds = _seconds(requeue_after or 0.0)
        if seconds > MAX_VISIBILITY and self._transport.fifo:
            raise DeliveryError(
                f"nack on {self._queue!r}: a FIFO queue can hold a message back at most "
                f"{MAX_VISIBILITY}s, not {seconds}s; use a store timer for longer waits"
            )
        with self._errors("nack"):
            if seconds > MAX_VISIBILITY:
                await self._transport._defer(self._url, self._message, seconds, self.attempt)
            else:
                await self._change_visibility(seconds)
        self._settled = True

    async def extend(self, seconds: float) -> None:
        """Keep the message invisible for ``seconds`` more (from now)."""
        self._check_held("extend")
        whole = _seconds(seconds)
        with self._errors("extend"):
            await self._change_visibility(whole)
        self._lease.renew(whole)

    async def dead_letter(self, reason: str) -> None:
        """Send a copy with ``reason`` to the dead-letter queue, then delete the original."""
        self._check_held("dead_letter")
        extra = {
            REASON_ATTR: reason or "(no reason given)",
            ATTEMPTS_ATTR: str(self.attempt),
            QUEUE_ATTR: self._queue,
        }
        with self._errors("dead_letter"):
            await self._transport._bury(self._queue, self._message, extra)
            client = await self._transport._client()
            await client.delete_message(QueueUrl=self._url, ReceiptHandle=self._handle)
        self._settled = True

    async def _change_visibility(self, seconds: int) -> None:
        client = await self._transport._client()
        await client.change_message_visibility(
            QueueUrl=self._url, ReceiptHandle=self._handle, VisibilityTimeout=seconds
        )

    def _errors(self, action: str) -> Any:
        return self._transport._errors(f"{action} on {self._queue!r}", settling=True)

    def _check_held(self, action: str) -> None:
        if self._settled:
            raise DeliveryError(f"{action}: the delivery on {self._queue!r} was already settled")
        if self._lease.expired():
            raise DeliveryError(
                f"{action}: the delivery on {self._queue!r} is no longer held (its visibility "
                f"timeout of {self._lease.seconds:g}s ran out, so SQS redelivers it); extend() "
                "long handlers or raise SQSTransport(visibility_timeout=...)"
            )


# -- the transport -----------------------------------------------------------
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
        aws_access_key_id, aws_secret_access_key, aws_session_token: credentials;
            by default botocore's chain (environment, profile, instance role).
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
        for name, text in parse_qsl(parts.query):
            if name not in _URL_OPTIONS:
                raise ConfigurationError(
                    f"unknown option {name!r} in {redact(url)!r}: use {', '.join(_URL_OPTIONS)}"
                )
            try:
                value = _URL_OPTIONS[name](text)
            except (ValueError, KeyError) as exc:
                raise ConfigurationError(f"bad {name}={text!r} in {redact(url)!r}") from exc
            options.setdefault("endpoint_url" if name == "endpoint" else name, value)
        if parts.path.strip("/"):
            options.setdefault("queue_prefix", parts.path.strip("/"))
        return cls(parts.netloc or "us-east-1", **options)

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
        return SQSDelivery(self, queue, url, message, lease)

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


def _copy(message: Message, extra: Mapping[str, str]) -> dict[str, Any]:
    """SendMessage arguments repeating ``message`` with ``extra`` attributes."""
    attributes = {
        name: _attr(value) for name, value in _attrs(message).items() if name != DELIVER_AT_ATTR
    }
    attributes.update({name: _attr(value) for name, value in extra.items()})
    return {"MessageBody": message["Body"], "MessageAttributes": attributes}


def _visible_now(messages: list[Message]) -> list[dict[str, Any]]:
    """ChangeMessageVisibilityBatch entries making ``messages`` visible at once."""
    return [
        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
        for i, m in enumerate(messages)
    ]


def _dead_letter(queue: str, message: Message, max_receive_count: int) -> DeadLetter:
    reason = _attrs(message).get(REASON_ATTR) or (
        f"received more than maxReceiveCount={max_receive_count} times (moved by SQS)"
    )
    return DeadLetter(queue, _body(message), _headers(message), reason)


def _check_options(
    prefix: str, visibility_timeout: int, wait_time: int, max_receive_count: int, batch: int
) -> None:
    if not _PREFIX.fullmatch(prefix):
        raise ConfigurationError(
            f"queue_prefix {prefix!r} must be letters, digits, '_' and '-' only"
        )
    if not 0 <= visibility_timeout <= MAX_VISIBILITY:
        raise ConfigurationError(f"visibility_timeout must be 0 to 43200, got {visibility_timeout}")
    if not 0 <= wait_time <= 20:
        raise ConfigurationError(f"wait_time must be 0 to 20 seconds, got {wait_time}")
    if not 1 <= max_receive_count <= 1000:
        raise ConfigurationError(f"max_receive_count must be 1 to 1000, got {max_receive_count}")
    if not 1 <= batch <= 10:
        raise ConfigurationError(f"batch must be 1 to 10, got {batch}")

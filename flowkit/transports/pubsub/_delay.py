"""The delay forwarder of a ``receive`` loop (see ``_pubsub.py``, **Delays**)."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from ._errors import translate_errors
from ._names import DELIVER_AFTER, KEY

if TYPE_CHECKING:
    from google.pubsub_v1.types import ReceivedMessage

    from ._receiver import _Receiver


class _Forwarder:
    """A thread moving due messages from a queue's delay subscription to its topic.

    It stops at its first failure and keeps the error, which ``receive`` then raises.
    """

    def __init__(self, receiver: _Receiver) -> None:
        self._receiver = receiver
        self._transport = receiver.transport
        self._names = receiver.names
        self._stopping = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="flowkit-pubsub-delay", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()

    def check(self) -> None:
        """Raise (translated) the error the forwarder stopped on, if any."""
        if self._error is not None:
            error, self._error = self._error, None
            with translate_errors("forwarding delayed messages", self._transport.where):
                raise error

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                self._forward_batch()
        except Exception as exc:  # kept for receive() to raise: a thread cannot raise it
            if not self._stopping.is_set():
                self._error = exc

    def _forward_batch(self) -> None:
        puller = self._receiver.puller()
        received = self._transport._pull_sync(puller, self._names.delay_subscription, 100)
        if self._stopping.is_set():
            self._transport._hand_back_sync(
                self._names.delay_subscription, [r.ack_id for r in received]
            )
            return
        for message in received:
            self._forward(message)

    def _forward(self, received: ReceivedMessage) -> None:
        attributes = dict(received.message.attributes)
        try:
            wait = float(attributes.pop(DELIVER_AFTER, "0")) - time.time()
        except ValueError:
            wait = 0.0  # a malformed due time: deliver now rather than never
        transport, names = self._transport, self._names
        if wait > 0:
            transport._modack_sync(names.delay_subscription, [received.ack_id], wait)
            return
        key = attributes.get(KEY)
        transport._publish_sync(names.topic, bytes(received.message.data), key, attributes)
        transport._ack_sync(names.delay_subscription, [received.ack_id])

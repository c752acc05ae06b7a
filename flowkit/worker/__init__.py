"""Distributed execution: ``Worker``, ``Client``, and ``python -m flowkit.worker``."""

from ._client import Client as Client
from ._client import ClientHandle as ClientHandle
from ._messages import MalformedMessage as MalformedMessage
from ._messages import NodeMessage as NodeMessage
from ._worker import Worker as Worker

__all__ = ["Client", "ClientHandle", "MalformedMessage", "NodeMessage", "Worker"]

"""Transports: at-least-once queues between clients and workers."""

from ._memory import MemoryDelivery as MemoryDelivery
from ._memory import MemoryTransport as MemoryTransport
from ._protocol import Delivery as Delivery
from ._protocol import DeliveryError as DeliveryError
from ._protocol import Transport as Transport
from ._urls import from_url as from_url

__all__ = [
    "Delivery",
    "DeliveryError",
    "MemoryDelivery",
    "MemoryTransport",
    "Transport",
    "from_url",
]

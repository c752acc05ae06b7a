"""Transports: at-least-once queues between clients and workers."""

from typing import TYPE_CHECKING

from ._memory import MemoryDelivery as MemoryDelivery
from ._memory import MemoryTransport as MemoryTransport
from ._protocol import Delivery as Delivery
from ._protocol import DeliveryError as DeliveryError
from ._protocol import Transport as Transport
from ._sqlqueue import SQLiteQueueTransport as SQLiteQueueTransport
from ._urls import from_url as from_url

if TYPE_CHECKING:
    from ._pgqueue import PostgresQueueTransport as PostgresQueueTransport

__all__ = [
    "Delivery",
    "DeliveryError",
    "MemoryDelivery",
    "MemoryTransport",
    "PostgresQueueTransport",
    "SQLiteQueueTransport",
    "Transport",
    "from_url",
]


def __getattr__(name: str) -> object:
    # Transports whose SDK is an optional extra load on first use.
    lazy = {
        "PostgresQueueTransport": ("._pgqueue", "PostgresQueueTransport"),
        "RabbitMQTransport": (".rabbitmq._transport", "RabbitMQTransport"),
        "KafkaTransport": (".kafka._transport", "KafkaTransport"),
        "RedisTransport": (".redis._transport", "RedisTransport"),
        "PubSubTransport": (".pubsub._transport", "PubSubTransport"),
        "ServiceBusTransport": ("._servicebus", "ServiceBusTransport"),
        "SQSTransport": (".sqs._transport", "SQSTransport"),
        "NATSTransport": (".nats._transport", "NATSTransport"),
    }
    if name in lazy:
        import importlib

        module, attr = lazy[name]
        return getattr(importlib.import_module(module, __name__), attr)
    raise AttributeError(f"module 'flowkit.transports' has no attribute {name!r}")

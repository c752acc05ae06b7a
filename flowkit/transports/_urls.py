"""``transports.from_url``: pick an implementation by URL scheme."""

from __future__ import annotations

import importlib
from typing import Any
from urllib.parse import urlsplit

from .._errors import ConfigurationError
from ..backends._options import redact

# scheme -> (module, class); the module (and its SDK) loads only when used
_SCHEMES: dict[str, tuple[str, str]] = {
    "memory": ("._memory", "MemoryTransport"),
    "sqlite": ("._sqlqueue", "SQLiteQueueTransport"),
    "postgres": ("._pgqueue", "PostgresQueueTransport"),
    "postgresql": ("._pgqueue", "PostgresQueueTransport"),
    "amqp": (".rabbitmq._transport", "RabbitMQTransport"),
    "amqps": (".rabbitmq._transport", "RabbitMQTransport"),
    "kafka": (".kafka._transport", "KafkaTransport"),
    "redis": (".redis._transport", "RedisTransport"),
    "rediss": (".redis._transport", "RedisTransport"),
    "pubsub": (".pubsub._transport", "PubSubTransport"),
    "servicebus": ("._servicebus", "ServiceBusTransport"),
    "sqs": (".sqs._transport", "SQSTransport"),
    "nats": (".nats._transport", "NATSTransport"),
}


def from_url(url: str, **options: Any) -> Any:
    """Build a transport from a URL: ``memory://``, ``sqlite:///flowkit.db``,
    ``postgresql://...``, ``amqp://...``, ``kafka://host:port``, ``redis://...``,
    ``pubsub://project``, ``servicebus://...``, ``sqs://region/prefix``, ``nats://host:port``.

    Each implementation's class method ``from_url(url, **options)`` parses the
    rest, including the ``?name=value`` options it lists; keyword ``options``
    override them.
    """
    scheme = urlsplit(url).scheme.lower()
    entry = _SCHEMES.get(scheme)
    if entry is None:
        raise ConfigurationError(
            f"unknown transport URL {redact(url)!r}: the scheme must be one of "
            f"{', '.join(sorted(_SCHEMES))}"
        )
    module_name, class_name = entry
    try:
        module = importlib.import_module(module_name, __package__)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("flowkit.transports."):
            raise ConfigurationError(
                f"the {scheme}:// transport is not available in this flowkit version"
            ) from exc
        raise
    return getattr(module, class_name).from_url(url, **options)

"""``RabbitMQTransport`` with ``max_priority=9`` in the transport conformance suite.

As ``factory_rabbitmq``, but the work queues are classic queues declared with
``x-max-priority`` (quorum queues of RabbitMQ 3.x have no priorities), so the
whole suite runs on that topology too. ``attempt`` on a classic queue is 2 once
RabbitMQ marks a message redelivered, whatever the true count.

Ordering: the highest priority first among the messages RabbitMQ has not handed
to a consumer yet (what a channel prefetched is not reordered); FIFO within a
priority for a single consumer and no redeliveries, reordered as in
``factory_rabbitmq`` otherwise.
"""

from __future__ import annotations

from typing import Any, ClassVar

from .factory_rabbitmq import RabbitMQFactory


class RabbitMQPriorityFactory(RabbitMQFactory):
    """A unique queue prefix per test; priority queues."""

    name = "rabbitmq-priority"
    priorities = True  # send(priority=) orders the queue
    options: ClassVar[dict[str, Any]] = {"max_priority": 9}


FACTORY = RabbitMQPriorityFactory()

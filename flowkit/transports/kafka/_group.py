"""Sticky partition assignment for flowkit's Kafka consumer groups (see ``_kafka.py``)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

try:
    from aiokafka.coordinator.protocol import (  # type: ignore[import-untyped,unused-ignore]
        ConsumerProtocolMemberAssignment,
        ConsumerProtocolMemberMetadata,
    )
except ImportError:  # the "kafka" extra is not installed: KafkaTransport() says so
    _HAVE_KAFKA = False
else:
    _HAVE_KAFKA = True

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from ._member import _Member


def balance(
    partitions: Iterable[int],
    members: Iterable[str],
    owned: Mapping[str, Iterable[int]],
    busy: Mapping[str, Iterable[int]],
) -> dict[str, list[int]]:
    """Sticky assignment of one topic's partitions to the members subscribed to it.

    A partition where a member holds unsettled deliveries stays with it; other
    partitions stay with their owner up to a fair share; the rest go to the
    least loaded members. So a member joining never takes work in progress.

    >>> balance(range(4), ["a", "b"], {"a": [0, 1, 2, 3]}, {"a": [3]})
    {'a': [3, 0], 'b': [1, 2]}
    """
    exists, names = set(partitions), sorted(members)
    result: dict[str, list[int]] = {name: [] for name in names}
    if not names:
        return result
    quota = -(-len(exists) // len(names))
    for claims, limit in ((busy, len(exists)), (owned, quota)):
        for name in names:
            for partition in sorted(claims.get(name, ())):
                if partition in exists and len(result[name]) < limit:
                    result[name].append(partition)
                    exists.discard(partition)
    for partition in sorted(exists):
        min(result.values(), key=len).append(partition)
    return result


class _StickyAssignor:
    """aiokafka partition assignor (protocol ``flowkit-sticky``) built on :func:`balance`.

    Each member's join metadata carries the partitions it owns and those with
    deliveries in flight. (aiokafka's own sticky assignor keeps its state on the
    class, so two consumers in one process would share it.)
    """

    name = "flowkit-sticky"
    version = 0

    def __init__(self, member: _Member) -> None:
        self.member = member

    def metadata(self, topics: Iterable[str]) -> Any:
        claims = json.dumps(self.member.claims()).encode()
        return ConsumerProtocolMemberMetadata(self.version, sorted(topics), claims)

    def on_assignment(self, assignment: Any) -> None:
        """Nothing to remember: claims are read from the member at each join."""

    def assign(self, cluster: Any, members: Mapping[str, Any]) -> dict[str, Any]:
        claims = {name: _claims(meta.user_data) for name, meta in members.items()}
        plan: dict[str, list[tuple[str, list[int]]]] = {name: [] for name in members}
        for topic in sorted({t for meta in members.values() for t in meta.subscription}):
            subscribed = [name for name, meta in members.items() if topic in meta.subscription]
            mine = {name: claims[name] for name in subscribed if claims[name]["topic"] == topic}
            owned = {name: claim["owned"] for name, claim in mine.items()}
            busy = {name: claim["busy"] for name, claim in mine.items()}
            partitions = cluster.partitions_for_topic(topic) or ()
            for name, assigned in balance(partitions, subscribed, owned, busy).items():
                plan[name].append((topic, assigned))
        return {
            name: ConsumerProtocolMemberAssignment(self.version, topics, b"")
            for name, topics in plan.items()
        }


def _claims(user_data: bytes | None) -> dict[str, Any]:
    try:
        claims = json.loads(user_data or b"{}")
        owned, busy = ([int(p) for p in claims[name]] for name in ("owned", "busy"))
        return {"topic": str(claims["topic"]), "owned": owned, "busy": busy}
    except (ValueError, TypeError, KeyError, RecursionError):
        return {"topic": "", "owned": [], "busy": []}

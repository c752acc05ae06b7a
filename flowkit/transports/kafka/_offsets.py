"""Out-of-order settlement bookkeeping of one Kafka partition (see ``_kafka.py``)."""

from __future__ import annotations

import json

import attrs
import structlog

log = structlog.get_logger("flowkit.transports.kafka")


@attrs.define
class _Offsets:
    """Settlement state of one partition: what may be committed, what to skip on refetch."""

    committed: int | None = None  # position last committed (or found) on the broker
    next: int = -1  # one past the highest offset known (fetched, or restored from a snapshot)
    fetched: int = -1  # one past the last record received: where fetching resumes
    pending: set[int] = attrs.Factory(set)  # known and unsettled
    unfetched: set[int] = attrs.Factory(set)  # restored as unsettled, not received yet
    written: tuple[int, int, frozenset[int]] | None = None  # last snapshot produced
    revoked: bool = False  # the partition went to another member

    def receive(self, offset: int) -> bool:
        """Note ``offset`` as fetched; False if it is settled already (skip it)."""
        self.fetched = offset + 1
        if offset < self.next:
            if offset not in self.unfetched:
                return False
            self.unfetched.discard(offset)
            return True
        self.pending.add(offset)
        self.next = offset + 1
        return True

    def position(self) -> int | None:
        """The offset to commit: the lowest unsettled one, else one past the last known."""
        if self.pending:
            return min(self.pending)
        return self.next if self.next >= 0 else None

    def wanted(self) -> tuple[int, bytes | None] | None:
        """``(position, snapshot or None)`` if the broker is behind, else None."""
        position = self.position()
        if position is None:
            return None
        state = (position, self.next, frozenset(self.pending))
        if self.next - position > len(self.pending) and state != self.written:
            body = {"c": position, "n": self.next, "u": sorted(self.pending)}
            return position, json.dumps(body).encode()
        return None if position == self.committed else (position, None)

    def wrote(self, position: int, snapshot: bytes | None) -> None:
        """The broker now has ``position`` (and ``snapshot``)."""
        self.committed = position
        if snapshot is not None:
            self.written = (position, self.next, frozenset(self.pending))

    def restore(self, snapshot: bytes) -> None:
        """Skip what a previous owner settled, if ``snapshot`` matches the committed offset."""
        try:
            data = json.loads(snapshot)
            committed, next_, unsettled = int(data["c"]), int(data["n"]), data["u"]
            unsettled = {int(offset) for offset in unsettled}
        except (ValueError, TypeError, KeyError, RecursionError):
            log.warning("ignoring an unreadable settlement snapshot")
            return
        if committed == self.committed:
            self.next = next_
            self.pending = set(unsettled)
            self.unfetched = set(unsettled)

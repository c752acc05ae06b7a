"""The schedules of :class:`~flowkit.stores.RedisStore`: two hashes under its prefix,
``{prefix}:schedules`` (id -> JSON data) and ``{prefix}:schedule-versions`` (id ->
version). A write is one Lua script that compares the version and writes both, so of
several writers from one version exactly one wins."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ._protocol import ScheduleRecord

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractContextManager

# KEYS: data hash, versions hash; ARGV: id, expected version, data
_WRITE = """
local v = tonumber(redis.call('hget', KEYS[2], ARGV[1]) or '0')
if v ~= tonumber(ARGV[2]) then return 0 end
redis.call('hset', KEYS[1], ARGV[1], ARGV[3])
redis.call('hset', KEYS[2], ARGV[1], v + 1)
return 1
"""
# KEYS: data hash, versions hash; ARGV: id
_DELETE = """
redis.call('hdel', KEYS[2], ARGV[1])
return redis.call('hdel', KEYS[1], ARGV[1])
"""


class RedisSchedules:
    """The schedule records of one store: its redis-py client, prefix and error translation."""

    def __init__(
        self,
        client: Any,
        prefix: str,
        url: str,
        translate: Callable[[str, str], AbstractContextManager[None]],
    ) -> None:
        self._client = client
        self._keys = [f"{prefix}:schedules", f"{prefix}:schedule-versions"]
        self._url = url
        self._translate = translate
        self._write = client.register_script(_WRITE)
        self._delete = client.register_script(_DELETE)

    async def load(self, schedule_id: str) -> ScheduleRecord | None:
        with self._translate("load_schedule", self._url):
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hget(self._keys[0], schedule_id)
                pipe.hget(self._keys[1], schedule_id)
                data, version = await pipe.execute()
        if data is None or version is None:
            return None
        return ScheduleRecord(schedule_id, int(version), json.loads(data))

    async def list(self) -> list[ScheduleRecord]:
        with self._translate("list_schedules", self._url):
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hgetall(self._keys[0])
                pipe.hgetall(self._keys[1])
                data, versions = await pipe.execute()
        return [
            ScheduleRecord(i, int(versions[i]), json.loads(data[i]))
            for i in sorted(data)
            if i in versions
        ]

    async def write(self, schedule_id: str, data: dict[str, Any], version: int) -> bool:
        with self._translate("write_schedule", self._url):
            written = await self._write(
                keys=self._keys, args=[schedule_id, version, json.dumps(data)]
            )
        return bool(written)

    async def delete(self, schedule_id: str) -> bool:
        with self._translate("delete_schedule", self._url):
            deleted = await self._delete(keys=self._keys, args=[schedule_id])
        return bool(deleted)

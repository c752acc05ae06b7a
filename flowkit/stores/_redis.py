"""``RedisStore``: runs in Redis, on redis-py's asyncio client.

Keys, under ``prefix``: ``{prefix}:run:{id}`` (a hash: header, ``version``,
``snapshot_version``, ``snapshot``, and the index fields ``created_at``,
``updated_at``, ``finished_at``, ``error_type``, ``error_message``, ``tags``),
``{prefix}:journal:{id}`` (a hash, version -> delta), ``{prefix}:history:{id}`` (a
hash, seq -> history event; the run hash's ``next_seq`` numbers the next one),
``{prefix}:lock:{id}`` (the transaction lock) and the sorted sets ``{prefix}:timers``
and ``{prefix}:leases``
(score: due or expiry time; member: ``run_id + "\\0" + key``).

The run index (``list_runs``) is sorted sets of run ids scored by ``created_at``:
``{prefix}:runs`` (every run), ``{prefix}:runs:status:{status}``,
``{prefix}:runs:flow:{blueprint id}``, ``{prefix}:runs:parent:{run id}`` and
``{prefix}:runs:tag:{json [key, value]}``. The create script adds a run to them,
and every commit script moves it between the status sets as it changes its
status, so a run is in the set of the status its hash holds at every instant. A
listing is one script too: it walks the smallest set that a filter names, from the
cursor down, checks the run's membership in the others and reads the runs' hashes.
Runs stored by a flowkit without the index are indexed by their next commit (as
created then); until then ``list_runs`` does not list them.

A :meth:`~RedisStore.transaction` holds the run's lock key (``SET NX PX`` with a
random token, waited for with backoff). Every commit is one Lua script that
checks that no other token holds the lock *and* the run is still at the
transaction's version before it writes, and then releases the lock (a block
that did not commit releases it by compare-and-delete), so a lock that expired
mid-transaction can never commit stale work, and a step costs two round trips.
:meth:`~RedisStore.attempt` runs the same script without taking the lock: a
process whose copy of the run is current commits in one round trip.
:meth:`~RedisStore.changes_since` reads the deltas a copy missed (one script), so a
process that another one's commits left behind catches up without loading the run.
Every redis-py error is translated to :class:`~flowkit.StoreError` by
:func:`translate_errors`.

redis-py's asyncio client runs on asyncio only (not trio). Not for Redis Cluster:
a commit touches the run's keys and the shared index keys in one script.
"""

from __future__ import annotations

import json
import secrets
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any

import anyio
import structlog

from .._durations import Backoff
from .._errors import ConfigurationError, MissingDependency, StoreError
from ..backends._options import HISTORY_URL_OPTIONS, check_positive, redact, split_options
from ..backends._redis import _HAVE_REDIS, error_roots, redis_client
from ._codec import decode_delta, decode_state, encode_delta, encode_state, replay
from ._history import DEFAULT_PAYLOAD, HistoryEntry, HistoryEvent, check_read, event
from ._history import history_options as checked_history
from ._index import (
    SUMMARY_FIELDS,
    created_fields,
    decode_tags,
    purge_query,
    run_query,
    split_info,
    summary,
)
from ._notices import finishes
from ._protocol import (
    NO_INDEX,
    Conflict,
    DueTimer,
    ExpiredLease,
    IndexOps,
    RunInfo,
    RunPage,
    RunSummary,
    ScheduleRecord,
    StoreStats,
)
from ._redis_schedules import RedisSchedules
from ._redis_slots import RedisSlots
from ._slots import OneHolderSlots

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Collection, Iterator, Mapping, Sequence
    from contextlib import AbstractAsyncContextManager

    from ..backends._options import Converter
    from ..core._state import Delta, RunState

_log = structlog.get_logger("flowkit.stores")
_SEP = "\x00"
_LOCK_BACKOFF = Backoff(initial=0.001, max=0.05, jitter=True)  # waiting for a run's lock
_URL_OPTIONS: dict[str, Converter] = {
    "prefix": str,
    "snapshot_every": int,
    "lock_timeout": float,
    "max_connections": int,
    **HISTORY_URL_OPTIONS,
}
_HEADER = ("blueprint_id", "digest", "status", "version", "parent")

# Shared by the write scripts: KEYS = run, journal, lock, timers, leases; ARGV is
# read in order: counted (field, value) pairs for the run hash, then the index ops.
_LUA_ARGS = """
local cursor = 0
local function arg() cursor = cursor + 1; return ARGV[cursor] end
local function hset_pairs(key)
  for _ = 1, tonumber(arg()) do local field = arg(); local value = arg()
    redis.call('hset', key, field, value) end
end
local function zadd_pairs(key)
  for _ = 1, tonumber(arg()) do local member = arg(); local score = arg()
    redis.call('zadd', key, score, member) end
end
local function zrem_all(key)
  for _ = 1, tonumber(arg()) do redis.call('zrem', key, arg()) end
end
local function apply_index()
  zadd_pairs(KEYS[4]); zrem_all(KEYS[4]); zadd_pairs(KEYS[5]); zrem_all(KEYS[5])
end
local kinds = {'status', 'flow', 'parent'}
-- Move run_id between the run index's sets of status, flow and parent: out of those of
-- `old` (hmget of status, blueprint_id, parent; nil: in none yet), into those of the
-- values its hash holds now, scored by its creation time.
local function reindex(prefix, run_id, score, old)
  local new = redis.call('hmget', KEYS[1], 'status', 'blueprint_id', 'parent')
  for i = 1, 3 do
    local before = false
    if old then before = old[i] end
    if before ~= new[i] then
      if before then redis.call('zrem', prefix .. ':runs:' .. kinds[i] .. ':' .. before, run_id) end
      if new[i] then
        redis.call('zadd', prefix .. ':runs:' .. kinds[i] .. ':' .. new[i], score, run_id)
      end
    end
  end
end
"""
# ... then ARGV: prefix, run id, created_at, the count of the run's tag sets and their
# keys, the count of history events and each (numbered from 1)
_CREATE = (
    _LUA_ARGS
    + """
if redis.call('exists', KEYS[1]) == 1 then return 0 end
hset_pairs(KEYS[1]); apply_index()
local prefix = arg(); local run_id = arg(); local created = arg()
redis.call('zadd', prefix .. ':runs', created, run_id)
reindex(prefix, run_id, created, nil)
for _ = 1, tonumber(arg()) do redis.call('zadd', arg(), created, run_id) end
local events = tonumber(arg())
for seq = 1, events do redis.call('hset', KEYS[6], seq, arg()) end
redis.call('hset', KEYS[1], 'next_seq', events + 1)
return 1
"""
)
# KEYS: run, journal. ARGV: a version. The run's version, then 1 and the journal entries
# after that version (0 if a snapshot pruned some); nothing if the run is gone.
_CHANGES = """
local v = redis.call('hmget', KEYS[1], 'version', 'snapshot_version')
if not v[1] then return nil end
local version = tonumber(v[1]); local from = tonumber(ARGV[1])
if from < tonumber(v[2] or '0') or from > version then return {version, 0} end
local fields = {}
for i = from + 1, version do fields[#fields + 1] = tostring(i) end
if #fields == 0 then return {version, 1} end
local found = redis.call('hmget', KEYS[2], unpack(fields))
local out = {version, 1}
for i = 1, #found do out[#out + 1] = found[i] end
return out
"""
# ARGV: token, expected version, new version, delta, snapshot ('' for none), the header
# pairs, the index ops, then the stamp: prefix, run id, at, finishing ('1'; '-1' for a
# retried run; '0'), and '1' with the error's type and message, or '0'; then the count of
# history events and each (numbered on from the run's next_seq, which moves past them).
# The commit releases the lock (saving the release's round trip). A later commit of the
# same block needs no lock back: the version check fails if anyone wrote in between,
# and the holder check if anyone holds the lock now.
_COMMIT = (
    _LUA_ARGS
    + """
local token = arg(); local expected = arg(); local new = arg()
local delta = arg(); local snapshot = arg()
local holder = redis.call('get', KEYS[3])
if holder and holder ~= token then return -1 end
if redis.call('hget', KEYS[1], 'version') ~= expected then return -2 end
local old = redis.call('hmget', KEYS[1], 'status', 'blueprint_id', 'parent', 'created_at')
if snapshot == '' then
  redis.call('hset', KEYS[2], new, delta)
  redis.call('hset', KEYS[1], 'version', new)
else
  redis.call('del', KEYS[2])
  redis.call('hset', KEYS[1], 'version', new, 'snapshot_version', new, 'snapshot', snapshot)
end
hset_pairs(KEYS[1]); apply_index()
local prefix = arg(); local run_id = arg(); local at = arg(); local finishing = arg()
redis.call('hset', KEYS[1], 'updated_at', at)
if finishing == '1' then redis.call('hsetnx', KEYS[1], 'finished_at', at)
elseif finishing == '-1' then  -- a retried run: neither finished nor failed any more
  redis.call('hdel', KEYS[1], 'finished_at', 'error_type', 'error_message')
end
if arg() == '1' then
  local error_type = arg(); local error_message = arg()
  redis.call('hset', KEYS[1], 'error_type', error_type, 'error_message', error_message)
end
if old[4] then
  reindex(prefix, run_id, old[4], old)
else  -- stored before the run index: indexed from now on, as created now
  redis.call('hset', KEYS[1], 'created_at', at)
  redis.call('zadd', prefix .. ':runs', at, run_id)
  reindex(prefix, run_id, at, nil)
end
local events = tonumber(arg())
if events > 0 then
  local first = tonumber(redis.call('hget', KEYS[1], 'next_seq') or '1')
  for i = 0, events - 1 do redis.call('hset', KEYS[6], first + i, arg()) end
  redis.call('hset', KEYS[1], 'next_seq', first + events)
end
redis.call('del', KEYS[3])
return 1
"""
)
# KEYS: the index sets a listing's filters name, in groups (a run must be in one set of
# every group), then a scratch key. ARGV: prefix, runs wanted, the number of groups,
# each group's size, created_before ('' for none, exclusive), created_after ('' for
# none, inclusive), the cursor's created_at ('' for none) and run id, and the hash fields
# to read. Returns each run's id and those fields, newest first. The walk goes down the
# smallest group (a group of several sets, the statuses of one filter, is merged into
# the scratch key first) from the cursor's rank, or where created_before puts it.
_LIST = """
local prefix = ARGV[1]; local want = tonumber(ARGV[2]); local count = tonumber(ARGV[3])
local groups = {}; local next_key = 1
for g = 1, count do
  local keys = {}
  for _ = 1, tonumber(ARGV[3 + g]) do keys[#keys + 1] = KEYS[next_key]; next_key = next_key + 1 end
  groups[g] = keys
end
local scratch = KEYS[next_key]
local hi = ARGV[4 + count]; local lo = ARGV[5 + count]
local cursor_at = ARGV[6 + count]; local cursor_id = ARGV[7 + count]
local best, fewest = 1, nil
for g = 1, count do
  local size = 0
  for _, key in ipairs(groups[g]) do size = size + redis.call('zcard', key) end
  if fewest == nil or size < fewest then best, fewest = g, size end
end
local driver = groups[best][1]
if #groups[best] > 1 then
  local union = {scratch, #groups[best]}
  for _, key in ipairs(groups[best]) do union[#union + 1] = key end
  union[#union + 1] = 'AGGREGATE'; union[#union + 1] = 'MAX'
  redis.call('zunionstore', unpack(union))
  driver = scratch
end
local function bytewise_before(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
local function in_other_groups(run_id)
  for g = 1, count do
    if g ~= best then
      local inside = false
      for _, key in ipairs(groups[g]) do
        if redis.call('zscore', key, run_id) then inside = true; break end
      end
      if not inside then return false end
    end
  end
  return true
end
local start = 0
if hi ~= '' then start = redis.call('zcount', driver, hi, '+inf') end
local cursor_score = nil
if cursor_at ~= '' then
  cursor_score = tonumber(cursor_at)
  local score = redis.call('zscore', driver, cursor_id)
  local after
  if score and tonumber(score) == cursor_score then
    after = redis.call('zrevrank', driver, cursor_id) + 1
  else  -- the cursor's run left this set: start at its time, skip the ties it precedes
    after = redis.call('zcount', driver, '(' .. cursor_at, '+inf')
  end
  if after > start then start = after end
end
local low = nil
if lo ~= '' then low = tonumber(lo) end
local found = {}
local done = false
local chunk = math.max(100, want)
while not done and #found < want do
  local batch = redis.call('zrevrange', driver, start, start + chunk - 1, 'WITHSCORES')
  if #batch == 0 then break end
  for i = 1, #batch, 2 do
    local run_id = batch[i]; local score = tonumber(batch[i + 1])
    if low and score < low then done = true; break end
    local skip = cursor_score ~= nil and score == cursor_score
      and not bytewise_before(run_id, cursor_id)
    if not skip and in_other_groups(run_id) then
      found[#found + 1] = run_id
      if #found >= want then done = true; break end
    end
  end
  start = start + chunk
end
if driver == scratch then redis.call('del', scratch) end
local out = {}
for _, run_id in ipairs(found) do
  local fields = redis.call('hmget', prefix .. ':run:' .. run_id, unpack(ARGV, 8 + count))
  out[#out + 1] = run_id
  for i = 1, #fields do out[#out + 1] = fields[i] end
end
return out
"""
# KEYS = lock, run; ARGV = token, lock ms. The run's versions if acquired, else nil.
_ACQUIRE = """
if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {redis.call('hget', KEYS[2], 'version') or '0',
          redis.call('hget', KEYS[2], 'snapshot_version') or '0'}
end
return false
"""
# KEYS: run, journal, lock, history, then the index sets the run is in (every run, status,
# flow, parent?, tags...); ARGV: run id, the status it was found in, finished_before
_PURGE_ONE = """
if redis.call('exists', KEYS[3]) == 1 then return 0 end
local run = redis.call('hmget', KEYS[1], 'status', 'finished_at', 'updated_at')
local ended = tonumber(run[2] or run[3] or '')
if run[1] ~= ARGV[2] or not ended or ended >= tonumber(ARGV[3]) then return 0 end
redis.call('del', KEYS[1], KEYS[2], KEYS[4])
for i = 5, #KEYS do redis.call('zrem', KEYS[i], ARGV[1]) end
return 1
"""
_PURGE_CHUNK = 200  # candidates read per round trip

_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


@contextmanager
def translate_errors(operation: str, url: str) -> Iterator[None]:
    """Re-raise any redis-py error in the block as a StoreError naming ``operation``."""
    try:
        yield
    except error_roots() as exc:
        raise StoreError(
            f"Redis store {redact(url)!r}: {operation} failed ({type(exc).__name__}: {exc}); "
            "check that the server is reachable"
        ) from exc


class RedisStore(OneHolderSlots):
    """Runs, timers and leases in Redis.

    Example::

        store = RedisStore("redis://localhost:6379/0", prefix="shop")
        async with store.transaction("order-A1") as txn:
            ...

    ``max_connections`` bounds the connection pool; beyond it callers wait for a
    connection (up to ``flowkit.backends._redis.POOL_TIMEOUT`` seconds) instead of failing.
    """

    def __init__(
        self,
        url: str,
        *,
        snapshot_every: int = 64,
        prefix: str = "flowkit",
        lock_timeout: float = 30.0,
        max_connections: int = 64,
        history: bool = True,
        history_payload: int = DEFAULT_PAYLOAD,
    ) -> None:
        if not _HAVE_REDIS:
            raise MissingDependency("RedisStore", "redis")
        self.history_options = checked_history("RedisStore", history, history_payload)
        check_positive(
            "RedisStore",
            snapshot_every=snapshot_every,
            lock_timeout=lock_timeout,
            max_connections=max_connections,
        )
        self.url = url
        self.prefix = prefix
        self.snapshot_every = snapshot_every
        self.lock_timeout = lock_timeout
        self.lock_ms = max(1, round(lock_timeout * 1000))
        self._unreleased: dict[str, str] = {}  # lock key -> our token, not yet released
        self.max_connections = max_connections
        self.stats = StoreStats()
        self._client = redis_client(url, max_connections, decode_responses=True)
        self._create = self._client.register_script(_CREATE)
        self._commit = self._client.register_script(_COMMIT)
        self._changes = self._client.register_script(_CHANGES)
        self._acquire = self._client.register_script(_ACQUIRE)
        self._release = self._client.register_script(_RELEASE)
        self._list = self._client.register_script(_LIST)
        self._purge_one = self._client.register_script(_PURGE_ONE)
        self._schedules = RedisSchedules(self._client, prefix, url, translate_errors)
        self._slots = RedisSlots(self._client, prefix, url, translate_errors)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisStore:
        """Build from ``redis://[:password@]host:port/db?prefix=shop&lock_timeout=10``
        (or ``rediss://``).

        Query options: ``prefix`` (str), ``snapshot_every`` (int),
        ``lock_timeout`` (float, seconds), ``max_connections`` (int), ``history``
        (true/false), ``history_payload`` (int). Other
        parameters (``socket_timeout=``, ``health_check_interval=``...) stay in
        the URL for redis-py. Keyword ``options`` override the query.

        Example::

            store = RedisStore.from_url("redis://cache:6379/2?prefix=shop&socket_timeout=5")
        """
        if not url.lower().startswith(("redis://", "rediss://")):
            raise ConfigurationError(
                f"not a Redis store URL: {redact(url)!r}; use redis://host:port/db"
            )
        rest, found = split_options(url, _URL_OPTIONS, mode="pass-through")
        return cls(rest, **(found | options))

    def __repr__(self) -> str:
        return f"RedisStore({redact(self.url)!r}, prefix={self.prefix!r})"

    def _keys(self, run_id: str) -> list[str]:
        """The keys a run's scripts touch: run, journal, lock, timers, leases, history."""
        p = self.prefix
        run_keys = [f"{p}:{kind}:{run_id}" for kind in ("run", "journal", "lock")]
        return [*run_keys, f"{p}:timers", f"{p}:leases", f"{p}:history:{run_id}"]

    def _events(self, history: Sequence[HistoryEntry]) -> list[str | int]:
        """The scripts' history arguments: the count, then each event as one string."""
        if not history or not self.history_options.enabled:
            return [0]
        return [len(history), *(_entry(entry) for entry in history)]

    def _index_key(self, kind: str, value: str) -> str:
        """A set of the run index: the runs of one status, flow, parent or tag."""
        return f"{self.prefix}:runs:{kind}:{value}"

    def _tag_key(self, key: str, value: str) -> str:
        return self._index_key("tag", json.dumps([key, value], ensure_ascii=False))

    # -- runs -----------------------------------------------------------------
    async def create_run(
        self,
        run_id: str,
        state: RunState,
        *,
        blueprint_id: str,
        digest: str,
        parent: str | None = None,
        index: IndexOps = NO_INDEX,
        tags: Mapping[str, str] | None = None,
        created_at: float | None = None,
        history: Sequence[HistoryEntry] = (),
    ) -> bool:
        """Store a new run at version 1 and index it; False (and nothing written) if it
        exists."""
        new = created_fields(state, created_at, tags)
        snapshot = encode_state(state)
        error_type, error_message = new.error or (None, None)
        fields = {
            "blueprint_id": blueprint_id,
            "digest": digest,
            "parent": parent,
            "status": new.status,
            "version": "1",
            "snapshot_version": "1",
            "snapshot": snapshot,
            "created_at": repr(new.created_at),
            "updated_at": repr(new.created_at),
            "finished_at": None if new.finished_at is None else repr(new.finished_at),
            "error_type": error_type,
            "error_message": error_message,
            "tags": new.tags_json,
        }
        tag_keys = [self._tag_key(key, value) for key, value in new.tags.items()]
        args = [*_pairs(fields), *_index_args(run_id, index)]
        args += [self.prefix, run_id, repr(new.created_at), len(tag_keys), *tag_keys]
        args += self._events(history)
        with translate_errors("create_run", self.url):
            created = bool(await self._create(keys=self._keys(run_id), args=args))
        if created:
            self.stats.commits += 1
            self.stats.snapshot_bytes += len(snapshot)
        return created

    @asynccontextmanager
    async def transaction(self, run_id: str) -> AsyncIterator[_RedisTransaction]:
        """Hold ``run_id``'s lock key until the block ends."""
        keys = self._keys(run_id)
        token = secrets.token_hex(16)
        txn: _RedisTransaction | None = None
        try:
            txn = _RedisTransaction(self, run_id, token, await self._lock(keys, token))
            yield txn
        finally:
            if txn is None or txn.holds_lock:  # a commit released it
                with anyio.CancelScope(shield=True):
                    await self._unlock(keys, token)

    def attempt(self, run_id: str, version: int) -> _RedisTransaction:
        """A lock-free transaction at ``version``: its commit script writes only if the
        run is still there and unlocked (one round trip), else raises :class:`Conflict`."""
        # the snapshot version is not read (that would cost the round trip saved):
        # attempts snapshot at multiples of snapshot_every, which bounds the journal too
        since = version - version % self.snapshot_every
        txn = _RedisTransaction(self, run_id, secrets.token_hex(16), (version, since))
        txn.holds_lock = False
        return txn

    async def _lock(self, keys: list[str], token: str) -> tuple[int, int]:
        await self._release_unreleased()
        pauses = _LOCK_BACKOFF.delays(token)  # jittered by the random token: contenders spread
        while True:
            with translate_errors("transaction", self.url):
                got = await self._acquire(keys=[keys[2], keys[0]], args=[token, self.lock_ms])
            if got is not None:
                return int(got[0]), int(got[1])
            await anyio.sleep(next(pauses))

    async def _unlock(self, keys: list[str], token: str) -> None:
        # A lock we cannot release (the server is away: a restart keeps the lock with an
        # append-only file) is released by our next call that reaches the server (a
        # worker's scheduler reads timers and leases every poll interval), else it would
        # expire only after lock_timeout and every other process wait that long for the run.
        try:
            with translate_errors("release", self.url):
                await self._release(keys=[keys[2]], args=[token])
        except StoreError as exc:
            self._unreleased[keys[2]] = token
            _log.warning("store.release_failed", store=repr(self), error=str(exc))

    async def _release_unreleased(self) -> None:
        for key, token in list(self._unreleased.items()):
            try:
                with translate_errors("release", self.url):
                    await self._release(keys=[key], args=[token])
            except StoreError:
                return  # still away: the next transaction tries again
            self._unreleased.pop(key, None)

    async def load(self, run_id: str) -> tuple[RunState, int] | None:
        """A consistent read (MULTI/EXEC) of the run's state and version."""
        if self._unreleased:
            await self._release_unreleased()
        with translate_errors("load", self.url):
            return await self._read(self._keys(run_id))

    async def _read(self, keys: list[str]) -> tuple[RunState, int] | None:
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.hmget(keys[0], ["version", "snapshot_version", "snapshot"])
            pipe.hgetall(keys[1])
            (version, since, snapshot), journal = await pipe.execute()
        if version is None:
            return None
        wanted = [journal.get(str(v)) for v in range(int(since) + 1, int(version) + 1)]
        if None in wanted:
            raise StoreError(f"corrupt run in {self!r}: journal entries missing under {keys[1]}")
        return replay(decode_state(snapshot), [decode_delta(d) for d in wanted]), int(version)

    async def changes_since(self, run_id: str, version: int) -> tuple[list[Delta], int] | None:
        """The deltas after ``version`` and the run's version, in one script; None if the
        run is gone or a snapshot pruned some of them."""
        with translate_errors("changes_since", self.url):
            found: Any = await self._changes(keys=self._keys(run_id)[:2], args=[version])
        if not found or not found[1] or None in found[2:]:
            return None
        self.stats.catch_ups += 1
        return [decode_delta(delta) for delta in found[2:]], int(found[0])

    async def info(self, run_id: str) -> RunInfo | None:
        """The run's header, or None."""
        if self._unreleased:
            await self._release_unreleased()
        with translate_errors("info", self.url):
            values: list[Any] = await self._client.hmget(self._keys(run_id)[0], list(_HEADER))
        blueprint_id, digest, status, version, parent = values
        if version is None:
            return None
        return RunInfo(run_id, blueprint_id, digest, status, int(version), parent)

    async def run_summary(self, run_id: str) -> RunSummary | None:
        """The run as ``list_runs`` lists it, or None."""
        with translate_errors("run_summary", self.url):
            values: list[Any] = await self._client.hmget(
                self._keys(run_id)[0], list(SUMMARY_FIELDS[1:])
            )
        if values[0] is None:
            return None
        if values[4] is None:  # stored before the run index, and not committed since
            values[4] = values[5] = "0"
        return summary([run_id, *values])

    async def history(
        self, run_id: str, *, after: int = 0, limit: int | None = None
    ) -> list[HistoryEvent]:
        """The run's history events after ``after``, in order (one ``HGETALL``)."""
        after, limit = check_read(after, limit)
        with translate_errors("history", self.url):
            stored: dict[str, str] = await self._client.hgetall(self._keys(run_id)[5])
        wanted = sorted(seq for seq in map(int, stored) if seq > after)
        if limit is not None:
            wanted = wanted[:limit]
        return [event(seq, _unentry(stored[str(seq)])) for seq in wanted]

    async def list_runs(
        self,
        *,
        flow: str | None = None,
        status: str | Collection[str] | None = None,
        tags: Mapping[str, str] | None = None,
        created_after: float | None = None,
        created_before: float | None = None,
        parent: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> RunPage:
        """Runs newest first (see :meth:`flowkit.stores.Store.list_runs`), in one script
        over the run index's sorted sets (see the module docstring). Runs stored by a
        flowkit without the index are listed once a commit indexed them."""
        query = run_query(
            flow=flow,
            status=status,
            tags=tags,
            created_after=created_after,
            created_before=created_before,
            parent=parent,
            limit=limit,
            cursor=cursor,
        )
        groups: list[list[str]] = []
        if query.flow is not None:
            groups.append([self._index_key("flow", query.flow)])
        if query.statuses is not None:
            groups.append([self._index_key("status", s) for s in query.statuses])
        if query.parent is not None:
            groups.append([self._index_key("parent", query.parent)])
        groups += [[self._tag_key(key, value)] for key, value in query.tags.items()]
        if not groups:
            groups.append([f"{self.prefix}:runs"])
        keys = [key for group in groups for key in group] + [f"{self.prefix}:runs-scratch"]
        after_at, after_id = query.after or (None, "")
        args: list[str | int] = [self.prefix, query.limit + 1, len(groups)]
        args += [len(group) for group in groups]
        args += [_score(query.created_before), _score(query.created_after), _score(after_at)]
        args += [after_id, *SUMMARY_FIELDS[1:]]
        with translate_errors("list_runs", self.url):
            found: list[Any] = await self._list(keys=keys, args=args)
        width = len(SUMMARY_FIELDS)
        return query.page([summary(found[i : i + width]) for i in range(0, len(found), width)])

    async def purge(
        self,
        *,
        finished_before: float,
        status: str | Collection[str] | None = None,
        limit: int = 500,
    ) -> list[str]:
        """Delete finished runs (see :meth:`flowkit.stores.Store.purge`): candidates from
        the status sets (scored by ``created_at``), each deleted by a script that checks
        it is still that status, finished before the cutoff and not locked. A finished
        run has no timers or leases left to delete."""
        query = purge_query(finished_before=finished_before, status=status, limit=limit)
        doomed: list[str] = []
        with translate_errors("purge", self.url):
            for wanted in query.statuses:
                await self._purge_status(wanted, query.before, query.limit, doomed)
        return doomed

    async def _purge_status(
        self, status: str, before: float, limit: int, doomed: list[str]
    ) -> None:
        skipped = 0  # candidates left in the set (not finished before the cutoff, locked)
        while len(doomed) < limit:
            ids: list[str] = await self._client.zrangebyscore(
                self._index_key("status", status),
                "-inf",
                f"({before!r}",
                start=skipped,
                num=min(_PURGE_CHUNK, limit - len(doomed)),
            )
            if not ids:
                return
            async with self._client.pipeline(transaction=False) as pipe:
                for run_id in ids:
                    pipe.hmget(self._keys(run_id)[0], ["blueprint_id", "parent", "tags"])
                found: list[Any] = await pipe.execute()
            async with self._client.pipeline(transaction=False) as pipe:
                for run_id, (flow, parent, tags) in zip(ids, found, strict=True):
                    run, journal, lock, _, _, history = self._keys(run_id)
                    keys = [run, journal, lock, history, f"{self.prefix}:runs"]
                    keys += [self._index_key("status", status), self._index_key("flow", flow or "")]
                    keys += [self._index_key("parent", parent)] if parent else []
                    keys += [self._tag_key(k, v) for k, v in decode_tags(tags).items()]
                    args = [run_id, status, repr(before)]
                    await self._purge_one(keys=keys, args=args, client=pipe)
                deleted: list[Any] = await pipe.execute()
            for run_id, gone in zip(ids, deleted, strict=True):
                if gone:
                    doomed.append(run_id)
                else:
                    skipped += 1

    # -- timers and leases ----------------------------------------------------
    async def due_timers(self, now: float, limit: int = 100) -> list[DueTimer]:
        """Timers due at ``now``, earliest first."""
        rows = await self._due("due_timers", f"{self.prefix}:timers", now, limit)
        return [DueTimer(run_id, key, at) for run_id, key, at in rows]

    async def claim_timer(self, run_id: str, timer_id: str) -> bool:
        """``ZREM`` the timer: 1 for exactly one claimer."""
        with translate_errors("claim_timer", self.url):
            removed = await self._client.zrem(f"{self.prefix}:timers", _member(run_id, timer_id))
        return bool(removed)

    async def expired_leases(self, now: float, limit: int = 100) -> list[ExpiredLease]:
        """Dispatches whose lease ran out, earliest first."""
        rows = await self._due("expired_leases", f"{self.prefix}:leases", now, limit)
        return [ExpiredLease(run_id, key, at) for run_id, key, at in rows]

    async def extend_lease(self, run_id: str, dispatch_id: str, expires_at: float) -> None:
        """Push an existing lease out (``ZADD XX``: a lease that is gone stays gone)."""
        member = _member(run_id, dispatch_id)
        with translate_errors("extend_lease", self.url):
            await self._client.zadd(f"{self.prefix}:leases", {member: expires_at}, xx=True)

    async def held_leases(self, leases: Collection[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of ``leases`` still exist (one ``ZMSCORE``)."""
        wanted = list(leases)
        if not wanted:
            return set()
        members = [_member(run_id, key) for run_id, key in wanted]
        with translate_errors("held_leases", self.url):
            scores: list[Any] = await self._client.zmscore(f"{self.prefix}:leases", members)
        return {pair for pair, score in zip(wanted, scores, strict=True) if score is not None}

    async def _due(
        self, operation: str, key: str, now: float, limit: int
    ) -> list[tuple[str, str, float]]:
        if self._unreleased:
            await self._release_unreleased()
        with translate_errors(operation, self.url):
            rows: list[Any] = await self._client.zrangebyscore(
                key, "-inf", now, start=0, num=limit, withscores=True
            )
        return [(*_split(member), float(at)) for member, at in rows]

    # -- schedules (see _redis_schedules) ----------------------------------------
    async def load_schedule(self, schedule_id: str) -> ScheduleRecord | None:
        return await self._schedules.load(schedule_id)

    async def list_schedules(self) -> list[ScheduleRecord]:
        return await self._schedules.list()

    async def write_schedule(self, schedule_id: str, data: dict[str, Any], *, version: int) -> bool:
        return await self._schedules.write(schedule_id, data, version)

    async def delete_schedule(self, schedule_id: str) -> bool:
        return await self._schedules.delete(schedule_id)

    # -- concurrency slots (see _redis_slots) ------------------------------------
    async def acquire_slots(
        self,
        limit_id: str,
        key: str,
        holders: Sequence[str],
        *,
        max: int,
        now: float,
        expires_at: float,
    ) -> int:
        return await self._slots.acquire(limit_id, key, holders, max, now, expires_at)

    async def extend_slot(self, limit_id: str, key: str, holder: str, expires_at: float) -> bool:
        return await self._slots.extend(limit_id, key, holder, expires_at)

    async def release_slots(self, limit_id: str, key: str, holders: Sequence[str]) -> None:
        await self._slots.release(limit_id, key, holders)

    async def reserve_tokens(
        self, limit_id: str, key: str, *, count: int, rate: float, capacity: float, now: float
    ) -> float:
        return await self._slots.reserve_tokens(limit_id, key, count, rate, capacity, now)

    async def slot_holders(self, limit_id: str, key: str) -> list[str]:
        return await self._slots.holders(limit_id, key)

    async def slot_pools(self, prefix: str) -> list[tuple[str, str]]:
        return await self._slots.pools(prefix)

    async def take_token(
        self, limit_id: str, key: str, *, rate: float, capacity: float, now: float
    ) -> float:
        return await self._slots.take_token(limit_id, key, rate, capacity, now)

    async def close(self) -> None:
        """Close the client's connections."""
        with translate_errors("close", self.url):
            await self._client.aclose()

    # -- notices -----------------------------------------------------------------
    @property
    def finished_channel(self) -> str:
        """The pub/sub channel a commit that finishes a run publishes its id on."""
        return f"{self.prefix}:finished"

    @property
    def cancelled_nodes_channel(self) -> str:
        """The pub/sub channel of runs some of whose dispatches were cancelled."""
        return f"{self.prefix}:cancelled-nodes"

    def watch_finished(self) -> AbstractAsyncContextManager[AsyncIterator[str]]:
        """While the block is open: the ids of runs that reach a final status (pub/sub)."""
        return self._subscribe(self.finished_channel, "watch_finished")

    def watch_cancelled_nodes(self) -> AbstractAsyncContextManager[AsyncIterator[str]]:
        """While the block is open: the ids of runs some of whose dispatches were cancelled."""
        return self._subscribe(self.cancelled_nodes_channel, "watch_cancelled_nodes")

    async def announce_cancelled_nodes(self, run_id: str) -> None:
        """Publish ``run_id``; a failure only costs workers a check interval."""
        await self._publish(self.cancelled_nodes_channel, run_id, "announce cancelled nodes")

    @asynccontextmanager
    async def _subscribe(self, channel: str, operation: str) -> AsyncIterator[AsyncIterator[str]]:
        pubsub: Any = self._client.pubsub(ignore_subscribe_messages=True)
        try:
            with translate_errors(operation, self.url):
                await pubsub.subscribe(channel)
            yield self._notices(pubsub, operation)
        finally:
            with anyio.CancelScope(shield=True):
                await pubsub.aclose()

    async def _notices(self, pubsub: Any, operation: str) -> AsyncIterator[str]:
        with translate_errors(operation, self.url):
            async for message in pubsub.listen():
                if message["type"] == "message":
                    yield str(message["data"])

    async def _announce_finished(self, run_id: str) -> None:
        """Publish ``run_id`` as finished; a failure only costs waiters a poll interval."""
        await self._publish(self.finished_channel, run_id, "publish a finished run")

    async def _publish(self, channel: str, run_id: str, operation: str) -> None:
        try:
            with translate_errors(operation, self.url):
                await self._client.publish(channel, run_id)
        except StoreError as exc:
            _log.warning(
                "could not publish a notice", operation=operation, run_id=run_id, error=str(exc)
            )


def _score(value: float | None) -> str:
    """A time as the scripts take it: ``repr`` keeps every bit; '' for none."""
    return "" if value is None else repr(float(value))


def _entry(entry: HistoryEntry) -> str:
    """A history event as the history hash keeps it: its fields joined by NUL ('' for
    None), the data (JSON, which escapes NUL) last."""
    at, kind, node_id, attempt, worker, data = entry
    fields = (repr(at), kind, node_id or "", "" if attempt is None else str(attempt), worker or "")
    return _SEP.join((*fields, data))


def _unentry(text: str) -> list[str | None]:
    """The fields of an event :func:`_entry` joined ('' back to None)."""
    at, kind, node_id, attempt, worker, data = text.split(_SEP, 5)
    return [at, kind, node_id or None, attempt or None, worker or None, data]


def _member(run_id: str, key: str) -> str:
    return f"{run_id}{_SEP}{key}"


def _split(member: str) -> tuple[str, str]:
    run_id, _, key = member.partition(_SEP)
    return run_id, key


def _pairs(fields: dict[str, Any]) -> list[str | int]:
    """``[count, field, value, ...]`` for the scripts' ``hset_pairs`` (None: left as is)."""
    present = [(k, v) for k, v in fields.items() if v is not None]
    return [len(present), *(str(item) for pair in present for item in pair)]


def _index_args(run_id: str, index: IndexOps) -> list[str | int]:
    """The scripts' ``apply_index`` arguments; scores as ``repr`` keep every bit."""
    args: list[str | int] = []
    for added, removed in ((index.timers, index.timers_done), (index.leases, index.leases_done)):
        args.append(len(added))
        for key, at in added:
            args += [_member(run_id, key), repr(float(at))]
        args.append(len(removed))
        args += [_member(run_id, key) for key in removed]
    return args


class _RedisTransaction:
    """One run held through its lock key."""

    def __init__(
        self, store: RedisStore, run_id: str, token: str, versions: tuple[int, int]
    ) -> None:
        self._store = store
        self._run_id = run_id
        self._keys = store._keys(run_id)
        self._token = token
        self.version, self._snapshot_version = versions
        self.holds_lock = True  # until a commit releases it

    @property
    def wants_snapshot(self) -> bool:
        """Whether the next commit should carry the full state."""
        return self.version > 0 and (
            self.version + 1 - self._snapshot_version >= self._store.snapshot_every
        )

    async def changes_since(self, version: int) -> list[Delta] | None:
        """Deltas after ``version``, or None if a snapshot pruned them."""
        if self.version == 0 or version < self._snapshot_version:
            return None
        wanted = [str(v) for v in range(version + 1, self.version + 1)]
        if not wanted:
            return []
        with translate_errors("changes_since", self._store.url):
            deltas: list[Any] = await self._store._client.hmget(self._keys[1], wanted)
        if any(d is None for d in deltas):
            return None  # pruned by a commit of a holder that outlived our lock
        return [decode_delta(d) for d in deltas]

    async def load(self) -> RunState | None:
        """The run's full state at :attr:`version`."""
        if self.version == 0:
            return None
        with translate_errors("load", self._store.url):
            found = await self._store._read(self._keys)
        return None if found is None else found[0]

    async def commit(
        self,
        delta: Delta,
        *,
        index: IndexOps = NO_INDEX,
        info: dict[str, Any] | None = None,
        state: RunState | None = None,
        history: Sequence[HistoryEntry] = (),
    ) -> int:
        """Append ``delta`` atomically (one Lua script), if we still hold the run."""
        if self.version == 0:
            raise StoreError(f"cannot commit to run {self._run_id!r}: it does not exist")
        encoded = encode_delta(delta)
        version = self.version + 1
        snapshot = encode_state(state) if state is not None and self.wants_snapshot else None
        columns, stamp = split_info(info)
        args: list[str | int] = [self._token, self.version, version, encoded, snapshot or ""]
        args += [*_pairs(columns), *_index_args(self._run_id, index)]
        finishing = 1 if stamp.finishing else -1 if stamp.reopening else 0
        args += [self._store.prefix, self._run_id, repr(stamp.at), finishing]
        args += [0] if stamp.error is None else [1, *stamp.error]
        args += self._store._events(history)
        with translate_errors("commit", self._store.url):
            outcome = await self._store._commit(keys=self._keys, args=args)
        if outcome != 1:
            self._store.stats.conflicts += 1
            raise Conflict(self._lost_message(outcome))
        self.holds_lock = False
        self._account(version, encoded, snapshot)
        if finishes(info):
            await self._store._announce_finished(self._run_id)
        return version

    def _lost_message(self, outcome: int) -> str:
        why = (
            "another transaction holds it (its lock expired, or this one never held it)"
            if outcome == -1
            else "another transaction changed it"
        )
        return (
            f"cannot commit to run {self._run_id!r} in {self._store!r}: {why} during the "
            "transaction (raise lock_timeout if transitions take that long); nothing was written"
        )

    def _account(self, version: int, encoded: str, snapshot: str | None) -> None:
        self.version = version
        stats = self._store.stats
        if snapshot is not None:
            self._snapshot_version = version
            stats.snapshot_bytes += len(snapshot)
        stats.commits += 1
        stats.bytes_written += len(encoded)

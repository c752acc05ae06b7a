"""The Lua scripts behind ``RedisTransport`` (see ``_redis.py`` for the keys they use)."""

_LIB = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function held(stream, group, id, consumer, count)
  local p = redis.call('XPENDING', stream, group, id, id, 1)[1]
  return p ~= nil and p[2] == consumer and tostring(p[4]) == count
end
local function get_field(fields, name)
  for i = 1, #fields, 2 do if fields[i] == name then return fields[i + 1] end end
  return nil
end
local function set_field(fields, name, value)
  for i = 1, #fields, 2 do
    if fields[i] == name then fields[i + 1] = value; return fields end
  end
  fields[#fields + 1] = name; fields[#fields + 1] = value
  return fields
end
"""
# KEYS: stream. ARGV: group. Creates the group unless it exists.
_CREATE_GROUP = """
local ok = redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')
if type(ok) == 'table' and ok.err then
  if string.find(ok.err, 'BUSYGROUP', 1, true) then return 0 end
  return redis.error_reply(ok.err)
end
return 1
"""
# KEYS: delayed, delayed msgs. ARGV: id, delay ms, field, value, ...
_DELAY = (
    _LIB
    + """
local fields = {}
for i = 3, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[2], ARGV[1], cmsgpack.pack(fields))
redis.call('ZADD', KEYS[1], now_ms() + tonumber(ARGV[2]), ARGV[1])
return 1
"""
)
# KEYS: stream, delayed, delayed msgs, high stream. ARGV: limit. Returns ms until the next
# due entry, 0 if more may be due now, -1 if none is waiting. An entry with a priority
# field goes to the high stream.
_PROMOTE = (
    _LIB
    + """
local now = now_ms()
local limit = tonumber(ARGV[1])
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, limit)
for _, id in ipairs(due) do
  local packed = redis.call('HGET', KEYS[3], id)
  if packed then
    local fields = cmsgpack.unpack(packed)
    local stream = KEYS[1]
    if KEYS[4] and get_field(fields, 'priority') then stream = KEYS[4] end
    redis.call('XADD', stream, '*', unpack(fields))
  end
  redis.call('ZREM', KEYS[2], id)
  redis.call('HDEL', KEYS[3], id)
end
if #due == limit then return 0 end
local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if first[2] == nil then return -1 end
return math.max(0, tonumber(first[2]) - now)
"""
)
# KEYS: stream, leases. ARGV: group, consumer, min idle ms, start, count.
# Returns {next start, {{id, fields, delivery count}, ...}}.
_CLAIM = (
    _LIB
    + """
local now = now_ms()
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[3], ARGV[4], '+', ARGV[5])
local claimed = {}
for _, p in ipairs(pending) do
  local id = p[1]
  if tonumber(redis.call('HGET', KEYS[2], id) or '0') <= now then
    redis.call('HDEL', KEYS[2], id)
    local got = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], id)
    if got[1] and got[1][2] then claimed[#claimed + 1] = {got[1][1], got[1][2], p[4] + 1} end
  end
end
local start = '-'
if #pending == tonumber(ARGV[5]) then start = '(' .. pending[#pending][1] end
return {start, claimed}
"""
)
# KEYS: stream, leases. ARGV: group, id, consumer, count, lease ms (0: keep the lease).
_EXTEND = (
    _LIB
    + """
if not held(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4]) then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[2], 'JUSTID')
local ms = tonumber(ARGV[5])
if ms > 0 then redis.call('HSET', KEYS[2], ARGV[2], now_ms() + ms) end
return 1
"""
)
# KEYS: stream, leases, dlq, delayed, delayed msgs.
# ARGV: group, id, consumer, count, mode (ack|requeue|return|dead), delay ms, new id, reason.
_SETTLE_BODY = """
if not held(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4]) then return 0 end
local entry = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])[1]
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('HDEL', KEYS[2], ARGV[2])
if ARGV[5] == 'ack' or entry == nil then return 1 end
local fields = entry[2]
local counted = tonumber(ARGV[4])
if ARGV[5] == 'return' then counted = counted - 1 end  -- it never reached a consumer
local attempts = (tonumber(get_field(fields, 'attempt')) or 0) + counted
set_field(fields, 'attempt', tostring(attempts))
if ARGV[5] == 'dead' then
  redis.call('XADD', KEYS[3], '*', unpack(set_field(fields, 'reason', ARGV[8])))
elseif tonumber(ARGV[6]) <= 0 then
  redis.call('XADD', KEYS[1], '*', unpack(fields))
else
  redis.call('HSET', KEYS[5], ARGV[7], cmsgpack.pack(fields))
  redis.call('ZADD', KEYS[4], now_ms() + tonumber(ARGV[6]), ARGV[7])
end
return 1
"""
_SETTLE = _LIB + _SETTLE_BODY
# XADD one entry per key from KEYS[first]: ARGV from ``at`` holds, for each, its number
# of field and value items, then those items.
_ADD_ALL = """
local function add_all(first, at)
  for k = first, #KEYS do
    local n = tonumber(ARGV[at])
    redis.call('XADD', KEYS[k], '*', unpack(ARGV, at + 1, at + n))
    at = at + n + 1
  end
end
"""
# KEYS: the streams. ARGV: the entries, as add_all reads them.
_SEND = _ADD_ALL + "add_all(1, 1)\nreturn 1\n"
# KEYS: _SETTLE's, then the streams. ARGV: _SETTLE's (mode ack), then the entries.
# The entries are added first: an error adding one leaves the delivery unsettled.
_SEND_THEN_SETTLE = _LIB + _ADD_ALL + "add_all(6, 9)\n" + _SETTLE_BODY
# KEYS: stream. ARGV: group, consumer. Forget the consumer if it holds nothing.
_RELEASE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local ok = redis.pcall('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if type(ok) ~= 'table' or ok.err or #ok > 0 then return 0 end
return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
"""

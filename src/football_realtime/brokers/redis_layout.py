"""The Redis broker's keys and scripts (:mod:`.redis` uses them).

Layout, per stream (subscription type) ``S``; the ``{frt:S}`` hash tag keeps a
stream's keys in one slot, so the publish script also runs on Redis Cluster:

* ``{frt:S}:meta``   hash ``epoch`` (random string), ``offset`` (last assigned).
* ``{frt:S}:log``    Redis Stream; entry id ``<offset>-0``, fields ``p`` (envelope
  JSON with ``stream`` and ``offset``), ``t`` (Redis time, ms), ``e`` (epoch), ``n``
  (a random id of this write, so a reader can tell two writes of one offset apart).
  Trimmed to ``history_size`` entries and ``history_ttl`` seconds.
* ``{frt:S}:snap``   hash ``<event_type>:<match_id>`` -> ``<offset>|<payload>``: the
  latest event per (event type, match), for ``snapshot: true``.
* ``{frt:S}:idem:K`` idempotency record ``<offset>|<epoch>`` with a TTL.
* ``{frt:S}:crit``   Redis Stream of the stream's critical events (``critical.types``,
  REALTIME_SESSION_CRITICAL_TYPES) for durable sessions: entry id ``<offset>-0``,
  fields ``p``, ``t``, ``e`` as in the log; trimmed to ``critical.size`` entries and
  ``critical.ttl`` seconds (REALTIME_SESSION_TTL), the key expiring that long after
  the last critical event. Written by the same publish script, only for those events.

Publishing is one Lua script (atomic on the server): create the epoch if the
stream has none, answer an idempotent retry from its record, else ``HINCRBY`` the
offset, ``XADD`` the entry with that offset as its id, trim, (a critical event) add it
to the critical stream, update the snapshot and record the idempotency key. Offsets
are therefore gapless and totally ordered per stream whichever instance or process
publishes.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..core.events import EventType, SubscriptionType
from .base import PublishedEvent

PREFIX = "frt"

# KEYS: meta, log, snap, idem, crit
# ARGV: epoch candidate (random per publish: also the entry's write id ``n``),
#       envelope JSON without its closing brace, stream name, history size, history
#       ttl ms, idem ttl s, snapshot field ('' = none), snapshot ttl s, critical ('1':
#       also keep it in crit, '' = no), critical size, critical ttl ms
# An idempotent retry rewrites its record (KEEPTTL): a write, so that a WAIT after it
# covers the original publish too (replication is in order).
PUBLISH_SCRIPT = """
local function trim_age(key, cutoff)
  -- Age trim, bounded per publish; readers also filter by age.
  local first = redis.call('XRANGE', key, '-', '+', 'COUNT', 1)
  if #first == 0 or tonumber(first[1][2][4]) >= cutoff then return end
  for _ = 1, 8 do
    local head = redis.call('XRANGE', key, '-', '+', 'COUNT', 32)
    local keep = nil
    for _, entry in ipairs(head) do
      if tonumber(entry[2][4]) >= cutoff then keep = entry[1] break end
    end
    if keep == nil then
      if #head == 0 then break end
      local last = head[#head][1]
      redis.call('XTRIM', key, 'MINID', (tonumber(string.match(last, '^(%d+)')) + 1) .. '-0')
    else
      redis.call('XTRIM', key, 'MINID', keep)
      break
    end
  end
end
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[5])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', 0)
end
local seen = redis.call('GET', KEYS[4])
if seen then
  local sep = string.find(seen, '|', 1, true)
  redis.call('SET', KEYS[4], seen, 'KEEPTTL')
  return {tonumber(string.sub(seen, 1, sep - 1)), string.sub(seen, sep + 1), 1}
end
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local payload = ARGV[2] .. ',"stream":"' .. ARGV[3] .. '","offset":' .. offset .. '}'
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[4], offset .. '-0', 'p', payload, 't', now, 'e', epoch,
  'n', ARGV[1])
trim_age(KEYS[2], now - tonumber(ARGV[5]))
redis.call('PEXPIRE', KEYS[2], ARGV[5])
if ARGV[9] ~= '' then
  local added = redis.pcall('XADD', KEYS[5], 'MAXLEN', ARGV[10], offset .. '-0', 'p', payload,
    't', now, 'e', epoch)
  if type(added) == 'table' and added.err then
    -- Entries at or above this offset: a lost epoch's, whose offsets are handed out
    -- again (the epoch was rotated without them). Drop them, never fail the publish.
    redis.call('DEL', KEYS[5])
    redis.call('XADD', KEYS[5], 'MAXLEN', ARGV[10], offset .. '-0', 'p', payload, 't', now,
      'e', epoch)
  end
  trim_age(KEYS[5], now - tonumber(ARGV[11]))
  redis.call('PEXPIRE', KEYS[5], ARGV[11])
end
if ARGV[7] ~= '' then
  redis.call('HSET', KEYS[3], ARGV[7], offset .. '|' .. payload)
  redis.call('EXPIRE', KEYS[3], ARGV[8])
end
redis.call('SET', KEYS[4], offset .. '|' .. epoch, 'EX', ARGV[6])
return {offset, epoch, 0}
"""

# KEYS: meta, log, snap, crit.  ARGV: epoch candidate, epoch this instance knows, the last
# offset it delivered, that entry's write id ('' = unknown). Creates the epoch if
# missing; rotates it when the counter went backwards under the same epoch (Redis
# restored from an older snapshot, or a failover to a replica that lacked the newest
# writes: those offsets would be handed out twice), or when the entry at the last
# delivered offset is another write than the one delivered (the same failover, after
# new publishes reused the lost offsets). Returns {epoch, offset}.
ENSURE_SCRIPT = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local offset = tonumber(redis.call('HGET', KEYS[1], 'offset') or '0')
local last = tonumber(ARGV[3])
local diverged = false
if epoch and epoch == ARGV[2] and ARGV[4] ~= '' and last > 0 and offset >= last then
  local e = redis.call('XRANGE', KEYS[2], last .. '-0', last .. '-0')
  if #e > 0 then
    local f = e[1][2]
    local n = ''
    for i = 1, #f, 2 do
      if f[i] == 'n' then n = f[i + 1] end
    end
    diverged = n ~= ARGV[4]
  end
end
if (not epoch) or (epoch == ARGV[2] and (offset < last or diverged)) then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', offset)
end
return {epoch, offset}
"""


def stream_keys(stream: SubscriptionType) -> tuple[str, str, str]:
    tag = f"{{{PREFIX}:{stream.value}}}"
    return f"{tag}:meta", f"{tag}:log", f"{tag}:snap"


def crit_key(stream: SubscriptionType) -> str:
    """The stream's critical events, kept for durable sessions (module docstring)."""
    return f"{{{PREFIX}:{stream.value}}}:crit"


def session_key(session_id: str) -> str:
    return f"{PREFIX}:session:{session_id}"


def owner_key(owner: str) -> str:
    """An owner's sessions: a sorted set of ids scored by expiry (ms, wall clock)."""
    return f"{PREFIX}:user-sessions:{owner}"


def idem_key(stream: SubscriptionType, key: str) -> str:
    return f"{{{PREFIX}:{stream.value}}}:idem:{key}"


def snapshot_field(event_type: str, data: dict[str, Any]) -> str:
    """The snapshot slot of an event: one per (event type, match)."""
    match_id = data.get("match_id")
    return f"{event_type}:{match_id if isinstance(match_id, int) else ''}"


def stored_event(stream: SubscriptionType, payload: bytes, t_ms: float) -> PublishedEvent:
    env = orjson.loads(payload)
    return PublishedEvent(
        stream=stream,
        offset=int(env["offset"]),
        event_type=EventType(env["event_type"]),
        data=env["data"],
        payload=payload,
        published_at=t_ms / 1000.0,
    )


def as_str(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


__all__ = [
    "ENSURE_SCRIPT",
    "PREFIX",
    "PUBLISH_SCRIPT",
    "as_str",
    "crit_key",
    "idem_key",
    "owner_key",
    "session_key",
    "snapshot_field",
    "stored_event",
    "stream_keys",
]

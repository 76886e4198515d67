"""The gateway's data access: cached keys, the catalogue, admission checks and metering.

Per request, in steady state: one Redis round trip before the upstream call (a Lua script that
settles the costs this worker metered since its last call, then reads the group's balance and
tier and the key's month-to-date spend, and counts the request against the per-key rate limit),
and one round trip after it to record the usage, in one of two ways (`GATEWAY_METERING`):

- "commit": one PostgreSQL statement (`METER_SQL`) inserts the usage event and its ledger debit.
  The cached balance follows with the next admission, or on its own within SETTLE_DELAY.
- "stream" (write-behind): one Redis script (`METER_STREAM_LUA`) appends the usage to the stream
  `portal:usage` and moves the cached balance at once. Every gateway worker runs a settler that
  reads the stream as a consumer group and writes what it read with the same `METER_SQL`, a batch
  every GATEWAY_SETTLE_INTERVAL, then acknowledges and deletes those entries. Until then the
  amounts count in `portal:unsettled`, so a balance re-read from PostgreSQL subtracts them.

Under load both round trips are group calls: requests that wait while one is in flight share the
next. Cache misses add a PostgreSQL read.

Exactly once: the usage event has a unique request id and the ledger debit a unique reference;
`METER_SQL` inserts both in one statement (the ledger trigger moves the balance in the same
transaction), so a retried settlement inserts nothing. The gateway records the usage — committed
to PostgreSQL, or appended to the stream — *before* it sends the last bytes of the response, so a
process that dies after a client got its full answer has always recorded it, and one that dies
earlier has neither answered fully nor charged. In stream mode an entry stays in the stream until
it is committed: a settler that dies between the commit and the acknowledgement leaves it pending,
another worker claims it (CLAIM_IDLE) and its second insert is a no-op. Rows PostgreSQL refuses
for good (say, their group was deleted) go to `portal:usage:dead` with the error, never dropped.
Durability in stream mode is Redis's: with `appendonly yes` a crash of the Redis process loses
nothing it acknowledged (an OS crash loses at most the last second with `appendfsync everysec`).

Overdraft bound: admission reads the cached balance without reserving anything, so requests
admitted concurrently while the balance is still positive are all served and charged: a group can
go below zero by at most the cost of the requests in flight when its balance crossed zero (plus
what other workers metered within SETTLE_DELAY). After that every request is 402.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import os
import socket
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import psycopg
import redis
import redis.asyncio as aioredis
from django.conf import settings
from django.db import connections
from psycopg_pool import AsyncConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from billing.balance_cache import key as balance_key
from billing.balance_cache import top_up_key
from gateway import metrics
from keys.cache import CHANGES, KEY_TTL, redis_key
from usage.pricing import Prices

log = logging.getLogger("portal.gateway")

ACCOUNT_TTL = 30  # seconds a cached balance may live before it is re-read from PostgreSQL
SPEND_TTL = 30
CATALOGUE_TTL = 5.0
# How long a worker keeps a key in memory while it is subscribed to keys.cache.CHANGES (a change
# drops it at once); unsubscribed, GATEWAY_KEY_CACHE_SECONDS.
KEY_CACHE_LIVE = 60.0
# Fail closed (keys/cache.py): every KEY_CHANGES_POLL seconds each worker reads the KeyChange rows
# of the last KEY_CHANGES_OVERLAP seconds (at start: of the last KEY_TTL + that, the oldest a stale
# Redis entry can be) and rewrites the Redis entry of each new one from PostgreSQL.
KEY_CHANGES_POLL = 0.25
KEY_CHANGES_OVERLAP = 30
# Unknown keys: remembered per worker (LRU, in memory only: never a Redis entry), and database
# look-ups for them limited per client address (settings.GATEWAY_INVALID_KEYS_PER_MINUTE).
UNKNOWN_KEYS_MAX = 10_000
UNKNOWN_KEY_SECONDS = 60.0


class TooManyInvalidKeys(Exception):  # a refusal, not a failure
    """This client looked up too many unknown keys this minute; retry after `retry_after` s."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many invalid keys; retry after {retry_after} s")
        self.retry_after = retry_after


def client_bucket(address: str | None) -> str:
    """The unit the invalid-key limit counts: an IPv4 address, or an IPv6 /64 network."""
    if not address:
        return "unknown"
    if ":" in address:
        with contextlib.suppress(ValueError):
            return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return address


# Settlement of one metered cost against the cache: KEYS[b+1..b+4] = the group's cached account,
# the key's month-to-date spend ('' if it has no limit), the key's last-used marker, the group's
# top-up marker. Returns a bit set: 1 = last_used_at is due; 2 = this debit took the balance under
# the group's auto top-up threshold (once per 60 s per group, whoever crossed it first).
_SETTLE_ONE = """
local function settle(b, cost)
  local flags = 0
  if redis.call('EXISTS', KEYS[b + 1]) == 1 then
    local bal = redis.call('HINCRBY', KEYS[b + 1], 'bal', -cost)
    local thr = tonumber(redis.call('HGET', KEYS[b + 1], 'thr') or '-1')
    if thr >= 0 and bal < thr and bal + cost >= thr then
      if redis.call('SET', KEYS[b + 4], '1', 'NX', 'EX', 60) then flags = flags + 2 end
    end
  end
  if KEYS[b + 2] ~= '' and redis.call('EXISTS', KEYS[b + 2]) == 1 then
    redis.call('INCRBY', KEYS[b + 2], cost)
  end
  if redis.call('SET', KEYS[b + 3], '1', 'NX', 'EX', 60) then flags = flags + 1 end
  return flags
end
"""

# One call admits a batch of requests and first settles the costs metered since the last call:
# ARGV = [rate-limit TTL, S, S costs]; KEYS = 4 per settlement, then 3 per admission (the group's
# cached account, the key's spend or '', the rate-limit counter). Returns S settlement bit sets,
# then one {balance, purchased, spend, requests in this window} per admission.
ADMIT_LUA = (
    _SETTLE_ONE
    + """
local s = tonumber(ARGV[2])
local out = {}
for i = 1, s do out[i] = settle((i - 1) * 4, tonumber(ARGV[2 + i])) end
local base = s * 4
for j = 1, (#KEYS - base) / 3 do
  local b = base + (j - 1) * 3
  local acct = redis.call('HMGET', KEYS[b + 1], 'bal', 'paid')
  local spend = false
  if KEYS[b + 2] ~= '' then spend = redis.call('GET', KEYS[b + 2]) end
  local n = redis.call('INCR', KEYS[b + 3])
  if n == 1 then redis.call('EXPIRE', KEYS[b + 3], ARGV[1]) end
  out[s + j] = {acct[1], acct[2], spend, n}
end
return out
"""
)

# Settlements alone, when no admission came to carry them (ARGV = costs, KEYS = 4 per cost).
SETTLE_LUA = (
    _SETTLE_ONE
    + """
local out = {}
for i = 1, #ARGV do out[i] = settle((i - 1) * 4, tonumber(ARGV[i])) end
return out
"""
)

# How long a metered cost may wait for the next admission to carry it to Redis before it is sent
# on its own. Within one worker no admission ever sees a balance without the costs settled before
# it; other workers see them at most this much later.
SETTLE_DELAY = 0.002

# Fill a group's cached account from PostgreSQL (KEYS = the account, `portal:unsettled`), less what
# the stream still owes PostgreSQL (ARGV = balance, purchased, TTL, threshold, unsettled field).
FILL_ACCOUNT_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  local owed = tonumber(redis.call('HGET', KEYS[2], ARGV[5]) or '0')
  local bal = string.format('%d', tonumber(ARGV[1]) - owed)
  redis.call('HSET', KEYS[1], 'bal', bal, 'paid', ARGV[2], 'thr', ARGV[4])
  redis.call('EXPIRE', KEYS[1], ARGV[3])
end
return redis.call('HMGET', KEYS[1], 'bal', 'paid')
"""

# Write-behind (GATEWAY_METERING=stream): the stream of usage not yet in PostgreSQL, its consumer
# group, the amounts it owes per group ('g:<id>') and per key with a spend limit ('k:<id>'), and
# where rows PostgreSQL refuses for good are kept.
USAGE_STREAM = "portal:usage"
SETTLERS = "settlers"
UNSETTLED = "portal:unsettled"
DEAD_LETTERS = "portal:usage:dead"
SETTLE_BATCH = 1000  # entries per settlement statement
CLAIM_IDLE_MS = 10_000  # an entry read this long ago and not acknowledged: its settler is gone
CLAIM_EVERY = 5.0  # seconds between looks for such entries


def owed_by_group(group_id: int) -> str:
    return f"g:{group_id}"


def owed_by_key(key_id: int) -> str:
    return f"k:{key_id}"


def wait_settled(client: redis.Redis, timeout: float) -> float:
    """Block until the usage stream is empty (all of it in PostgreSQL); return the seconds waited.

    TimeoutError when it is not empty within `timeout` seconds.
    """
    started = time.monotonic()
    while client.xlen(USAGE_STREAM):
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"the usage stream was not settled within {timeout:g} s")
        time.sleep(0.01)
    return time.monotonic() - started


# Record a batch of metered requests: for each, settle its cost in the cache (as ADMIT_LUA does),
# append it to the stream and count what it owes. ARGV = [n, then per request: cost, group field,
# key field or '', the usage as JSON]; KEYS = 4 per request (as in _SETTLE_ONE), then the stream
# and `portal:unsettled`. Returns the n settlement bit sets (also kept in each entry as 'f').
METER_STREAM_LUA = (
    _SETTLE_ONE
    + """
local n = tonumber(ARGV[1])
local stream, owed = KEYS[n * 4 + 1], KEYS[n * 4 + 2]
local out = {}
for i = 1, n do
  local a = 1 + (i - 1) * 4
  local cost = tonumber(ARGV[a + 1])
  local flags = settle((i - 1) * 4, cost)
  redis.call('XADD', stream, '*', 'd', ARGV[a + 4], 'f', flags)
  if cost > 0 then
    redis.call('HINCRBY', owed, ARGV[a + 2], cost)
    if ARGV[a + 3] ~= '' then redis.call('HINCRBY', owed, ARGV[a + 3], cost) end
  end
  out[i] = flags
end
return out
"""
)

# After a settlement's commit: acknowledge and delete each entry, and for each one acknowledged
# now (not by an earlier, interrupted settlement) stop counting what it owed. KEYS = the stream,
# `portal:unsettled`; ARGV = [consumer group, then per entry: id, group field, key field or '',
# cost]. Returns how many were acknowledged.
ACK_LUA = """
local n = 0
for i = 2, #ARGV, 4 do
  if redis.call('XACK', KEYS[1], ARGV[1], ARGV[i]) == 1 then
    n = n + 1
    local cost = tonumber(ARGV[i + 3])
    if cost > 0 then
      for _, field in ipairs({ARGV[i + 1], ARGV[i + 2]}) do
        if field ~= '' and redis.call('HINCRBY', KEYS[2], field, -cost) <= 0 then
          redis.call('HDEL', KEYS[2], field)
        end
      end
    end
  end
  redis.call('XDEL', KEYS[1], ARGV[i])
end
return n
"""

_METER_COLUMNS = (
    ("request_id", "varchar"),
    ("group_id", "bigint"),
    ("key_id", "bigint"),
    ("model_id", "bigint"),
    ("prompt_tokens", "integer"),
    ("completion_tokens", "integer"),
    ("citation_tokens", "integer"),
    ("reasoning_tokens", "integer"),
    ("search_queries", "integer"),
    ("context_size", "varchar"),
    ("input", "bigint"),
    ("output", "bigint"),
    ("citation", "bigint"),
    ("reasoning", "bigint"),
    ("search", "bigint"),
    ("request", "bigint"),
    ("total", "bigint"),
    ("streamed", "boolean"),
    ("latency_ms", "integer"),
    ("created", "float8"),  # when the gateway metered it (Unix time)
)

# One statement for a whole batch of metered requests: the usage events (a request id already
# recorded inserts nothing) and, for those inserted, their ledger debits. Debits are inserted in
# account order, so the ledger trigger locks credit accounts in one global order and concurrent
# batches cannot deadlock.
METER_SQL = f"""
WITH ev AS (
    INSERT INTO usage_usageevent (
        request_id, group_id, api_key_id, model_id, prompt_tokens, completion_tokens,
        citation_tokens, reasoning_tokens, search_queries, search_context_size,
        input_cost_micros, output_cost_micros, citation_cost_micros, reasoning_cost_micros,
        search_cost_micros, request_cost_micros, cost_micros, streamed, latency_ms, created_at
    )
    SELECT {", ".join(f'r."{name}"' for name, _ in _METER_COLUMNS[:-1])}, to_timestamp(r.created)
    FROM unnest(
        {", ".join(f"%s::{t}[]" for _, t in _METER_COLUMNS)}
    ) AS r({", ".join(f'"{name}"' for name, _ in _METER_COLUMNS)})
    ON CONFLICT (request_id) DO NOTHING
    RETURNING request_id, group_id, cost_micros, created_at
)
INSERT INTO billing_ledgerentry (account_id, kind, amount_micros, reference, description, created_at)
SELECT a.id, 'usage', -ev.cost_micros, 'usage:' || ev.request_id, '', ev.created_at
FROM ev JOIN billing_creditaccount a ON a.group_id = ev.group_id
WHERE ev.cost_micros > 0
ORDER BY a.id
"""

METER_BATCH_MAX = 256  # requests per statement
METER_FLUSHERS = 2  # statements in flight per worker


@dataclass(frozen=True)
class KeyInfo:
    id: int
    group_id: int
    name: str
    last_four: str
    expires_at: float | None
    monthly_limit_micros: int | None


@dataclass(frozen=True)
class ModelInfo:
    id: int
    name: str
    base_url: str
    api_key: str
    upstream_model: str
    prices: Prices
    rate_limit_rpm: int


@dataclass(frozen=True)
class Admission:
    balance_micros: int
    purchased_micros: int
    spend_micros: int | None
    requests_this_window: int


def _key_info(state: dict[str, Any]) -> KeyInfo | None:
    if not state.get("active"):
        return None
    return KeyInfo(
        id=state["id"],
        group_id=state["group_id"],
        name=state["name"],
        last_four=state["last_four"],
        expires_at=state["expires_at"],
        monthly_limit_micros=state["monthly_limit_micros"],
    )


def _conninfo() -> str:
    # Read at first use, so tests see the test database Django switched to.
    db = connections["default"].settings_dict
    parts = {
        "dbname": db["NAME"],
        "user": db.get("USER") or "",
        "password": db.get("PASSWORD") or "",
        "host": db.get("HOST") or "",
        "port": str(db.get("PORT") or ""),
        "connect_timeout": str(db.get("OPTIONS", {}).get("connect_timeout", 3)),
    }
    return psycopg.conninfo.make_conninfo(**{k: v for k, v in parts.items() if v})


def month_start(now: float | None = None) -> datetime:
    moment = datetime.fromtimestamp(now or time.time(), UTC)
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


class _Batcher:
    """Group calls: while `inflight` calls run, later callers queue and share the next call.

    `call(items)` returns one result per item (an exception instance fails that item alone).
    Alone, an item is sent at once (no added latency); under load, one round trip serves many.
    """

    def __init__(self, call: Any, *, inflight: int = 2, max_batch: int = 128) -> None:
        self._call = call
        self._inflight = inflight
        self._max = max_batch
        self._pending: list[tuple[Any, asyncio.Future[Any]]] = []
        self._running = 0

    async def submit(self, item: Any) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._running < self._inflight:
            self._running += 1
            asyncio.ensure_future(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self._max]
                del self._pending[: self._max]
                try:
                    results = await self._call([item for item, _ in batch])
                except BaseException as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
                else:
                    for (_, future), result in zip(batch, results, strict=True):
                        if future.done():
                            continue
                        if isinstance(result, BaseException):
                            future.set_exception(result)
                        else:
                            future.set_result(result)
        finally:
            self._running -= 1


class Store:
    """Connections and caches of one gateway worker (one event loop)."""

    def __init__(self) -> None:
        self.pool = AsyncConnectionPool(
            _conninfo(),
            min_size=1,
            max_size=settings.GATEWAY_DB_POOL_SIZE,
            open=False,
            kwargs={"autocommit": True, "prepare_threshold": 0},
            timeout=5,
        )
        # A blocking pool: a burst beyond 256 concurrent calls (e.g. requests that waited out a
        # PostgreSQL outage and settle at once) queues for a connection instead of failing.
        # A pooled connection that Redis closed (it restarted) fails on its next use before the
        # command reaches Redis: that one case is retried once on a fresh connection.
        self.redis = aioredis.Redis(
            connection_pool=aioredis.BlockingConnectionPool.from_url(
                settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=2,
                max_connections=256, timeout=2,
                retry=Retry(NoBackoff(), 1), retry_on_error=[redis.ConnectionError],
            )
        )  # fmt: skip
        self._admit_script = self.redis.register_script(ADMIT_LUA)
        self._settle_script = self.redis.register_script(SETTLE_LUA)
        self._admissions = _Batcher(self._admit_many)
        # Metered costs waiting to be settled in Redis: item keys -> [summed cost, key].
        self._unsettled: dict[tuple[str, ...], list[Any]] = {}
        self._settle_timer: asyncio.TimerHandle | None = None
        self._background: set[asyncio.Task[Any]] = set()
        # Called (in a thread) with a group id when a debit took its balance under the threshold.
        self.on_top_up: Any = None
        self._fill_account = self.redis.register_script(FILL_ACCOUNT_LUA)
        self._keys: dict[str, tuple[float, KeyInfo | None]] = {}
        self._unknown: OrderedDict[str, float] = OrderedDict()  # hash -> remembered until
        self._invalid_limit = settings.GATEWAY_INVALID_KEYS_PER_MINUTE
        self._blocked: dict[str, float] = {}  # client bucket -> refused until (monotonic)
        self._change_ids: dict[int, float] = {}  # KeyChange rows applied -> their time
        self._repairs: set[str] = set()  # hashes whose Redis entry is still to be rewritten
        self._changes_task: asyncio.Task[None] | None = None
        self._key_ttl = settings.GATEWAY_KEY_CACHE_SECONDS
        self._keys_live = False  # subscribed to key changes
        self._key_changes = 0  # messages seen: a load that overlapped one is not kept long
        self._watcher: asyncio.Task[None] | None = None
        self._models: dict[str, ModelInfo] = {}
        self._models_loaded = 0.0
        self._models_refreshing = False
        self._opened = False
        self._meterings = _Batcher(
            self._write_many, inflight=METER_FLUSHERS, max_batch=METER_BATCH_MAX
        )
        # Write-behind (GATEWAY_METERING=stream): metering appends to the usage stream, and a
        # settler task writes the stream to PostgreSQL. The settler runs in either mode, so a
        # stream left over from stream mode is settled after a switch back to commit.
        self.write_behind = settings.GATEWAY_METERING == "stream"
        self._settle_interval = settings.GATEWAY_SETTLE_INTERVAL
        self._meter_stream = self.redis.register_script(METER_STREAM_LUA)
        self._ack = self.redis.register_script(ACK_LUA)
        self._streamings = _Batcher(self._stream_many, max_batch=METER_BATCH_MAX)
        self._settler: asyncio.Task[None] | None = None
        self._closing = False

    async def open(self, *, settler: bool = True) -> None:
        if not self._opened:
            await self.pool.open(wait=False)
            self._opened = True
            if settler:
                self._settler = asyncio.ensure_future(self._settle_forever())
            self._watcher = asyncio.ensure_future(self._watch_keys())
            self._changes_task = asyncio.ensure_future(self._follow_key_changes())

    async def close(self) -> None:
        # The flag, not only the cancellation, ends the background loops: a client library that
        # turns a cancellation into a timeout error must not keep them running.
        self._closing = True
        tasks = [t for t in (self._settler, self._watcher, self._changes_task) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        if self._opened:
            await self.pool.close()
        await self.redis.aclose()

    # --- keys ---------------------------------------------------------------------------------

    async def key_by_hash(self, secret_hash: str, client: str | None = None) -> KeyInfo | None:
        """Return the active key with this hash, or None (unknown, revoked or expired).

        A hash in neither memory nor Redis costs a PostgreSQL query; `client` (the caller's
        address) pays for it from its allowance: TooManyInvalidKeys when that is used up.
        """
        now = time.monotonic()
        cached = self._keys.get(secret_hash)
        if cached is not None and cached[0] >= now:
            info = cached[1]
        elif self._unknown.get(secret_hash, 0.0) >= now:
            self._unknown.move_to_end(secret_hash)
            return None
        else:
            seen = self._key_changes
            state = await self._load_key(secret_hash, client)
            if state is None:  # no such key: remembered here only, bounded
                self._unknown[secret_hash] = now + UNKNOWN_KEY_SECONDS
                while len(self._unknown) > UNKNOWN_KEYS_MAX:
                    self._unknown.popitem(last=False)
                return None
            info = _key_info(state)
            if len(self._keys) > 50_000:
                self._keys.clear()
            live = self._keys_live and seen == self._key_changes
            self._keys[secret_hash] = (now + (KEY_CACHE_LIVE if live else self._key_ttl), info)
        if info is not None and info.expires_at is not None and info.expires_at <= time.time():
            return None
        return info

    def _forget_key(self, secret_hash: str) -> None:
        self._key_changes += 1  # a load that overlapped this is kept only briefly
        self._keys.pop(secret_hash, None)
        self._unknown.pop(secret_hash, None)

    async def _spend_lookup(self, client: str) -> str:
        """Count one database look-up of a key against the client's allowance for this minute;
        return the counter's name (to refund it)."""
        now = time.monotonic()
        if self._blocked.get(client, 0.0) > now:
            raise TooManyInvalidKeys(max(1, math.ceil(self._blocked[client] - now)))
        window, left = divmod(time.time(), 60)
        bucket = f"portal:badkey:{client}:{int(window)}"
        pipe = self.redis.pipeline(transaction=False)
        pipe.incr(bucket)
        pipe.expire(bucket, 61)
        count, _ = await pipe.execute()
        if count > self._invalid_limit:
            if len(self._blocked) > 10_000:
                self._blocked = {c: t for c, t in self._blocked.items() if t > now}
            self._blocked[client] = now + 60 - left
            raise TooManyInvalidKeys(max(1, math.ceil(60 - left)))
        return bucket

    async def _refund_lookup(self, bucket: str) -> None:
        """A look-up that found an active key is not counted."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.decr(bucket)
        pipe.expire(bucket, 61)  # never a counter without expiry, even if it expired meanwhile
        await pipe.execute()

    async def _watch_keys(self) -> None:
        """Drop a key from memory as soon as the portal announces a change to it."""
        backoff = 0.5
        while not self._closing:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(CHANGES)
                while not self._closing:
                    message = await pubsub.get_message(timeout=5.0)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        # From now on no change goes unseen: forget what was read before.
                        self._keys.clear()
                        self._keys_live = True
                        backoff = 0.5
                    elif message["type"] == "message":
                        self._forget_key(message["data"].decode())
            except asyncio.CancelledError:
                raise
            except (redis.RedisError, OSError) as exc:
                log.warning("key changes not received, caching keys briefly: %s", exc)
            finally:
                self._keys_live = False
                self._keys.clear()  # kept for the live TTL: re-read them with the short one
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def _load_key(self, secret_hash: str, client: str | None = None) -> dict[str, Any] | None:
        """The key's state from Redis, else from PostgreSQL (then cached in Redis with SET NX,
        unless no such key exists: unknown keys leave nothing in Redis); None when unknown."""
        raw = await self.redis.get(redis_key(secret_hash))
        if raw is not None:
            state = orjson.loads(raw)
            return state if "id" in state else None
        bucket = await self._spend_lookup(client) if client is not None else None
        state = await self._key_from_db(secret_hash)
        if "id" not in state:
            return None
        if bucket is not None and state["active"]:
            await self._refund_lookup(bucket)
        await self.redis.set(redis_key(secret_hash), orjson.dumps(state), ex=KEY_TTL, nx=True)
        return state

    async def _key_from_db(self, secret_hash: str) -> dict[str, Any]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT id, group_id, name, last_four, status, expires_at, monthly_limit_micros "
                "FROM keys_apikey WHERE secret_hash = %s",
                (secret_hash,),
            )
            row = await cur.fetchone()
        if row is None:
            return {"active": False}
        return {
            "id": row[0],
            "group_id": row[1],
            "name": row[2],
            "last_four": row[3],
            "active": row[4] == "active",
            "expires_at": row[5].timestamp() if row[5] else None,
            "monthly_limit_micros": row[6],
        }

    async def _follow_key_changes(self) -> None:
        """Apply the KeyChange rows (keys/cache.py): rewrite each key's Redis entry from
        PostgreSQL and drop it from memory, whether or not its announcement arrived."""
        lookback = KEY_TTL + KEY_CHANGES_OVERLAP  # at start: whatever a stale entry may predate
        failing = False
        while not self._closing:
            try:
                async with self.pool.connection(timeout=1.0) as conn:
                    cur = await conn.execute(
                        "SELECT id, secret_hash, extract(epoch FROM created_at) "
                        "FROM keys_keychange WHERE created_at > now() - make_interval(secs => %s) "
                        "ORDER BY id",
                        (lookback,),
                    )
                    rows = await cur.fetchall()
                lookback = KEY_CHANGES_OVERLAP
                for change_id, secret_hash, created in rows:
                    if change_id not in self._change_ids:
                        self._change_ids[change_id] = float(created)
                        self._repairs.add(secret_hash)
                        self._forget_key(secret_hash)
                oldest = time.time() - 2 * (KEY_TTL + KEY_CHANGES_OVERLAP)
                self._change_ids = {i: t for i, t in self._change_ids.items() if t > oldest}
                for secret_hash in sorted(self._repairs):
                    state = await self._key_from_db(secret_hash)
                    if "id" in state:
                        await self.redis.set(
                            redis_key(secret_hash), orjson.dumps(state), ex=KEY_TTL
                        )
                    else:
                        await self.redis.delete(redis_key(secret_hash))
                    self._repairs.discard(secret_hash)
                    self._forget_key(secret_hash)  # a load that read the old entry meanwhile
                if failing:
                    log.info("key changes followed again")
                failing = False
            except asyncio.CancelledError:
                raise
            except (psycopg.Error, redis.RedisError, OSError) as exc:
                if not failing:
                    log.warning("key changes not followed (%d to repair): %s",
                                len(self._repairs), exc)  # fmt: skip
                failing = True
            await asyncio.sleep(KEY_CHANGES_POLL)

    async def touch_key(self, key_id: int) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(
                "UPDATE keys_apikey SET last_used_at = now() WHERE id = %s", (key_id,)
            )

    # --- catalogue ----------------------------------------------------------------------------

    async def models(self) -> dict[str, ModelInfo]:
        if time.monotonic() - self._models_loaded > CATALOGUE_TTL:
            if self._models and self._models_refreshing:
                return self._models  # one request refreshes it; the others need not wait
            self._models_refreshing = True
            try:
                # With a catalogue in hand, do not wait long for a connection: serve with it.
                async with self.pool.connection(timeout=1.0 if self._models else None) as conn:
                    cur = await conn.execute(
                        "SELECT id, name, upstream_base_url, upstream_api_key_env, "
                        "upstream_model, input_per_m, output_per_m, citation_per_m, "
                        "reasoning_per_m, search_per_k, request_low_per_k, request_medium_per_k, "
                        "request_high_per_k, rate_limit_rpm "
                        "FROM usage_aimodel WHERE enabled ORDER BY name"
                    )
                    rows = await cur.fetchall()
            except psycopg.OperationalError as exc:
                if not self._models:
                    raise
                # Serve with the catalogue we have; try again after CATALOGUE_TTL.
                log.warning("catalogue not refreshed (PostgreSQL unavailable): %s", exc)
                self._models_loaded = time.monotonic()
                return self._models
            finally:
                self._models_refreshing = False
            self._models = {
                r[1]: ModelInfo(
                    id=r[0],
                    name=r[1],
                    base_url=r[2].rstrip("/"),
                    api_key=os.environ.get(r[3], "") if r[3] else "",
                    upstream_model=r[4] or r[1],
                    prices=Prices(*r[5:13]),
                    rate_limit_rpm=r[13],
                )
                for r in rows
            }
            self._models_loaded = time.monotonic()
        return self._models

    # --- admission and metering ---------------------------------------------------------------

    async def admit(self, key: KeyInfo, model: ModelInfo, window: int) -> Admission:
        acct_key = balance_key(key.group_id)
        spend_key = self._spend_key(key)
        rl_key = f"portal:rl:{key.id}:{model.id}:{window}"
        bal, paid, spend, count = await self._admissions.submit((acct_key, spend_key, rl_key))
        if bal is None:
            bal, paid = await self._load_account(key.group_id)
        if spend_key and spend is None:
            spend = await self._load_spend(key, spend_key)
        return Admission(
            balance_micros=int(bal),
            purchased_micros=int(paid or 0),
            spend_micros=int(spend) if spend is not None else None,
            requests_this_window=int(count),
        )

    def _spend_key(self, key: KeyInfo) -> str:
        if key.monthly_limit_micros is None:
            return ""
        return f"portal:kspend:{key.id}:{month_start():%Y%m}"

    async def _load_account(self, group_id: int) -> tuple[int, int]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT a.balance_micros, a.purchased_micros, CASE WHEN p.auto_top_up_enabled "
                "THEN p.auto_top_up_threshold_micros ELSE -1 END "
                "FROM billing_creditaccount a "
                "LEFT JOIN billing_billingprofile p ON p.group_id = a.group_id "
                "WHERE a.group_id = %s",
                (group_id,),
            )
            row = await cur.fetchone()
        bal, paid, thr = (row[0], row[1], row[2]) if row else (0, 0, -1)
        bal, paid = await self._fill_account(
            keys=[balance_key(group_id), UNSETTLED],
            args=[bal, paid, ACCOUNT_TTL, thr, owed_by_group(group_id)],
        )
        return int(bal), int(paid)

    async def _load_spend(self, key: KeyInfo, spend_key: str) -> int:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT COALESCE(SUM(cost_micros), 0) FROM usage_usageevent "
                "WHERE api_key_id = %s AND created_at >= %s",
                (key.id, month_start()),
            )
            row = await cur.fetchone()
        spend = int(row[0]) if row else 0
        spend += int(
            await self.redis.hget(UNSETTLED, owed_by_key(key.id)) or 0
        )  # still in the stream
        await self.redis.set(spend_key, spend, ex=SPEND_TTL, nx=True)
        return spend

    async def meter(self, key: KeyInfo, params: dict[str, Any]) -> None:
        """Record a metered request, once per request id; return when it is durable.

        Commit mode: the usage event and its ledger debit are committed to PostgreSQL. Group
        commit (see _Batcher): a request that arrives while METER_FLUSHERS statements are in
        flight goes into the next one with every request waiting by then. Stream mode: the usage
        is appended to the usage stream (same batching); should Redis fail, it is committed to
        PostgreSQL instead, and the stream copy, if the failed call had written one, inserts
        nothing when it is settled.
        """
        if self.write_behind:
            try:
                await self._streamings.submit((key, params))
                return
            except (redis.RedisError, OSError) as exc:
                log.warning("usage stream unavailable, committing to PostgreSQL: %s", exc)
        started = time.perf_counter()
        await self._meterings.submit(params)
        metrics.METERING_LAG.observe(time.perf_counter() - started)
        self.settle(key, params["total"])

    async def _stream_many(self, items: list[tuple[KeyInfo, dict[str, Any]]]) -> list[None]:
        keys: list[str] = []
        args: list[Any] = [len(items)]
        for key, params in items:
            limited = key.monthly_limit_micros is not None
            keys += self._settle_keys(key)
            args += [
                params["total"],
                owed_by_group(key.group_id),
                owed_by_key(key.id) if limited else "",
                orjson.dumps({**params, "limited": limited}),
            ]
        await self._meter_stream(keys=[*keys, USAGE_STREAM, UNSETTLED], args=args)
        return [None] * len(items)

    async def _write_many(self, rows: list[dict[str, Any]]) -> list[Exception | None]:
        try:
            await self._write(rows)
        except psycopg.Error as exc:
            if len(rows) == 1 or isinstance(exc, psycopg.OperationalError):
                raise
            # One bad row must not fail the others: write them one by one.
            return [await self._write_one(row) for row in rows]
        return [None] * len(rows)

    async def _write_one(self, row: dict[str, Any]) -> Exception | None:
        try:
            await self._write([row])
        except psycopg.Error as exc:
            return exc
        return None

    async def _write(self, rows: list[dict[str, Any]]) -> None:
        metrics.METER_BATCH.observe(len(rows))
        columns = [[row[name] for row in rows] for name, _ in _METER_COLUMNS]
        async with self.pool.connection() as conn:
            await conn.execute(METER_SQL, columns)

    def _settle_keys(self, key: KeyInfo) -> tuple[str, str, str, str]:
        """The cache keys _SETTLE_ONE moves for a cost of this key, in its order."""
        return (
            balance_key(key.group_id),
            self._spend_key(key),
            f"portal:keyused:{key.id}",
            top_up_key(key.group_id),
        )

    def settle(self, key: KeyInfo, cost: int) -> None:
        """Queue a committed cost for the cached balance and spend (see ADMIT_LUA, SETTLE_DELAY)."""
        item = self._settle_keys(key)
        entry = self._unsettled.get(item)
        if entry is None:
            self._unsettled[item] = [cost, key]
        else:
            entry[0] += cost
        if self._settle_timer is None:
            self._settle_timer = asyncio.get_running_loop().call_later(
                SETTLE_DELAY, self._settle_due
            )

    def _take_unsettled(self) -> list[tuple[tuple[str, ...], int, KeyInfo]]:
        taken = [(item, cost, key) for item, (cost, key) in self._unsettled.items()]
        self._unsettled.clear()
        if self._settle_timer is not None:
            self._settle_timer.cancel()
            self._settle_timer = None
        return taken

    def _settle_due(self) -> None:
        self._settle_timer = None
        if self._unsettled:
            self._spawn(self._settle_alone(self._take_unsettled()))

    async def _settle_alone(self, settles: list[tuple[tuple[str, ...], int, KeyInfo]]) -> None:
        keys = [k for item, _, _ in settles for k in item]
        try:
            flags = await self._settle_script(keys=keys, args=[cost for _, cost, _ in settles])
        except (redis.RedisError, OSError) as exc:
            log.warning("balance cache not settled: %s", exc)
            return
        self._settled(settles, flags)

    def _settled(self, settles: list[tuple[tuple[str, ...], int, KeyInfo]], flags: list) -> None:
        for (_, _, key), bits in zip(settles, flags, strict=True):
            self._follow_up(key.id, key.group_id, int(bits))

    def _follow_up(self, key_id: int, group_id: int, bits: int) -> None:
        """After a debit: note the key's use (bit 1), queue an auto top-up (bit 2)."""
        if bits & 1:
            self._spawn(self.touch_key(key_id))
        if bits & 2 and self.on_top_up is not None:
            self._spawn(asyncio.to_thread(self.on_top_up, group_id))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _admit_many(self, items: list[tuple[str, str, str]]) -> list[Any]:
        settles = self._take_unsettled()
        keys = [k for item, _, _ in settles for k in item] + [k for item in items for k in item]
        args = [61, len(settles), *(cost for _, cost, _ in settles)]
        # Should this call fail, its settlements are not re-sent (Redis may have applied them): a
        # cached balance that is too high is corrected when it expires and is re-read from
        # PostgreSQL (ACCOUNT_TTL), which has every debit.
        out = list(await self._admit_script(keys=keys, args=args))
        self._settled(settles, out[: len(settles)])
        return out[len(settles) :]

    # --- write-behind settlement --------------------------------------------------------------

    async def _settle_forever(self) -> None:
        """Settle the usage stream into PostgreSQL, a batch at a time, until cancelled."""
        consumer = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        retry: list[Any] = []  # entries read and not yet committed
        claim_at = 0.0
        backoff = 0.5
        ready = False
        while not self._closing:
            try:
                if not ready:
                    await self._prepare_stream()
                    ready = True
                entries = retry
                if not entries and time.monotonic() >= claim_at:
                    # Entries a settler read and never acknowledged: it died, or it is us and
                    # PostgreSQL refused them last time.
                    claim_at = time.monotonic() + CLAIM_EVERY
                    claimed = await self.redis.xautoclaim(
                        USAGE_STREAM, SETTLERS, consumer, CLAIM_IDLE_MS, "0-0", count=SETTLE_BATCH
                    )
                    entries = claimed[1]
                if not entries:
                    read: Any = await self.redis.xreadgroup(
                        SETTLERS, consumer, {USAGE_STREAM: ">"}, count=SETTLE_BATCH, block=1000
                    )
                    entries = read[0][1] if read else []
                retry = entries
                if entries:
                    retry = await self.settle_entries(entries)
                backoff = 0.5
                if len(entries) < SETTLE_BATCH:  # a full batch means a backlog: no pause
                    await asyncio.sleep(self._settle_interval)
            except asyncio.CancelledError:
                raise
            except (redis.RedisError, psycopg.Error, OSError) as exc:
                if isinstance(exc, redis.ResponseError) and "NOGROUP" in str(exc):
                    ready = False  # Redis lost the stream (restarted without persistence)
                log.warning("usage settlement paused (%d entries waiting): %s", len(retry), exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _prepare_stream(self) -> None:
        try:
            await self.redis.xgroup_create(USAGE_STREAM, SETTLERS, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        if self.write_behind:
            try:
                aof: Any = await self.redis.config_get("appendonly")
            except redis.ResponseError:  # CONFIG is disabled (managed Redis): cannot tell
                return
            if aof.get(b"appendonly", aof.get("appendonly")) in (b"no", "no"):
                log.warning(
                    "GATEWAY_METERING=stream but Redis has appendonly=no: usage not yet settled "
                    "into PostgreSQL is lost if Redis restarts"
                )

    async def settle_entries(self, entries: list[Any]) -> list[Any]:
        """Commit stream entries to PostgreSQL, then acknowledge them; return those to retry.

        Raises when PostgreSQL or Redis is unavailable (the caller retries the same entries).
        """
        rows: list[tuple[Any, dict[str, Any], int]] = []  # (entry, its usage, its follow-up bits)
        gone: list[Any] = []
        for entry in entries:
            entry_id, fields = entry
            if fields:
                rows.append((entry, orjson.loads(fields[b"d"]), int(fields.get(b"f", 0))))
            else:
                gone.append(entry_id)  # deleted while pending: only its acknowledgement is due
        results: list[Exception | None] = []
        if rows:
            try:
                results = await self._write_many([data for _, data, _ in rows])
            except psycopg.OperationalError:
                raise
            except psycopg.Error as exc:  # a batch of one that PostgreSQL refused
                results = [exc]
        done: list[tuple[Any, dict[str, Any], int]] = []
        retry: list[Any] = []
        for (entry, data, bits), result in zip(rows, results, strict=True):
            entry_id = entry[0]
            if result is None:
                done.append((entry_id, data, bits))
            elif isinstance(result, psycopg.OperationalError):
                retry.append(entry)
            else:
                log.error("usage %s refused by PostgreSQL, kept in %s: %s",
                          data.get("request_id"), DEAD_LETTERS, result)  # fmt: skip
                await self.redis.xadd(
                    DEAD_LETTERS, {"d": orjson.dumps(data), "error": str(result)[:500]}
                )
                done.append((entry_id, data, 0))
        args: list[Any] = [SETTLERS]
        for entry_id, data, _ in done:
            key_field = owed_by_key(data["key_id"]) if data.get("limited") else ""
            args += [entry_id, owed_by_group(data["group_id"]), key_field, data["total"]]
        for entry_id in gone:
            args += [entry_id, "", "", 0]
        if len(args) > 1:
            await self._ack(keys=[USAGE_STREAM, UNSETTLED], args=args)
        now = time.time()
        for _, data, bits in done:
            metrics.METERING_LAG.observe(max(0.0, now - data["created"]))
            self._follow_up(data["key_id"], data["group_id"], bits)
        return retry

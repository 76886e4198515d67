"""The gateway's data access: cached keys, the catalogue, admission checks and metering.

Per request, in steady state: one Redis round trip before the upstream call (a Lua script that
settles the costs this worker metered since its last call, then reads the group's balance and
tier and the key's month-to-date spend, and counts the request against its API group's limit for
the request's API family, refusing it at the limit: see gateway/admission.py),
and one round trip after it to record the usage, in one of two ways (`GATEWAY_METERING`):

- "commit": one PostgreSQL statement (`METER_SQL`, gateway/sql/meter.sql) inserts the usage event
  and its ledger debit.
  The cached balance follows with the next admission, or on its own within SETTLE_DELAY.
- "stream" (write-behind): one Redis script (gateway/lua/meter_stream.lua) appends the usage to the stream
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

Overdraft bound: see gateway/admission.py.

Where each part lives (this module only opens the connections and puts them together):
  gateway/keycache.py      API keys: memory, Redis, PostgreSQL; revocations followed (fail closed)
  gateway/invalid_keys.py  the limit on database look-ups of unknown keys per client address
  gateway/catalogue.py     the enabled models and their prices
  gateway/admission.py     the admission round trip and reservations; committed costs settled
  gateway/budgets.py       the hard budgets of the groups served, their windows and spend
  gateway/estimates.py     what a request may cost at most (its reservation)
  gateway/metering.py      recording a request's usage (commit or stream)
  gateway/settlement.py    the write-behind settler: the usage stream into PostgreSQL
  gateway/batching.py      group calls (one round trip serves the requests waiting for it)
  gateway/lua/, gateway/sql/  the Redis scripts and SQL statements, read once at import
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import redis
import redis.asyncio as aioredis
from django.conf import settings
from django.db import connections
from psycopg_pool import AsyncConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from gateway.admission import Admission, Admissions
from gateway.batching import Batcher
from gateway.budgets import BudgetCache
from gateway.catalogue import Catalogue, ModelInfo, RateInfo
from gateway.invalid_keys import InvalidKeyLimiter, TooManyInvalidKeys, client_bucket
from gateway.keycache import KeyCache, KeyInfo
from gateway.metering import Metering
from gateway.settlement import (
    DEAD_LETTERS,
    SETTLERS,
    UNSETTLED,
    USAGE_STREAM,
    Settler,
    wait_settled,
)

# What the gateway, its tests and the benchmark take from here.
__all__ = [
    "DEAD_LETTERS",
    "SETTLERS",
    "UNSETTLED",
    "USAGE_STREAM",
    "Admission",
    "KeyInfo",
    "ModelInfo",
    "RateInfo",
    "Store",
    "TooManyInvalidKeys",
    "client_bucket",
    "wait_settled",
]


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
        self._background: set[asyncio.Task[Any]] = set()
        # Called (in a thread) with a group id when a debit took its balance under the threshold.
        self.on_top_up: Any = None
        self.keys = KeyCache(
            self.pool,
            self.redis,
            InvalidKeyLimiter(self.redis, settings.GATEWAY_INVALID_KEYS_PER_MINUTE),
            settings.GATEWAY_KEY_CACHE_SECONDS,
        )
        self.catalogue = Catalogue(self.pool)
        self.budgets = BudgetCache(self.pool)
        self.admissions = Admissions(
            self.pool, self.redis, self._follow_up, self._spawn, self.budgets,
            bound=settings.GATEWAY_OVERDRAFT_BOUND_MICROS,
            hold_seconds=settings.GATEWAY_RESERVATION_SECONDS,
        )  # fmt: skip
        # Write-behind (GATEWAY_METERING=stream): metering appends to the usage stream, and a
        # settler task writes the stream to PostgreSQL. The settler runs in either mode, so a
        # stream left over from stream mode is settled after a switch back to commit.
        write_behind = settings.GATEWAY_METERING == "stream"
        self.metering = Metering(self.pool, self.redis, self.admissions, write_behind=write_behind)
        self.settler = Settler(
            self.redis,
            self.metering.write_many,
            self._follow_up,
            write_behind=write_behind,
            interval=settings.GATEWAY_SETTLE_INTERVAL,
        )
        # The request path calls the parts directly (no extra await per call).
        self.key_by_hash = self.keys.key_by_hash
        self.touch_key = self.keys.touch_key
        self.models = self.catalogue.models
        self.admit = self.admissions.admit
        self.meter = self.metering.meter
        # Stored copies (the Agent API's responses): concurrent writes share one pipeline.
        self._puts = Batcher(self._put_many, max_batch=128)
        self._tasks: list[asyncio.Task[None]] = []
        self._opened = False

    def put(self, key: str, value: bytes, seconds: int) -> asyncio.Future[Any]:
        """`SET key value EX seconds`, sent with the other writes waiting by then; await the
        future for it to be written (it is sent whether or not it is awaited)."""
        return self._puts.enqueue((key, value, seconds))

    async def _put_many(self, items: list[tuple[str, bytes, int]]) -> list[Any]:
        if len(items) == 1:
            key, value, seconds = items[0]
            await self.redis.set(key, value, ex=seconds)
            return [None]
        pipe = self.redis.pipeline(transaction=False)
        for key, value, seconds in items:
            pipe.set(key, value, ex=seconds)
        await pipe.execute()
        return [None] * len(items)

    async def open(self, *, settler: bool = True) -> None:
        if not self._opened:
            await self.pool.open(wait=False)
            self._opened = True
            loops = [self.keys.watch(), self.keys.follow_changes(), self.budgets.follow()]
            if settler:
                loops.insert(0, self.settler.run())
            self._tasks = [asyncio.ensure_future(loop) for loop in loops]

    async def close(self) -> None:
        # The flags, not only the cancellation, end the background loops: a client library that
        # turns a cancellation into a timeout error must not keep them running.
        self.keys.closing = self.settler.closing = self.budgets.closing = True
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        if self._opened:
            await self.pool.close()
        await self.redis.aclose()

    def _follow_up(self, key_id: int, group_id: int, bits: int) -> None:
        """After a debit: note the key's use (bit 1), queue an auto top-up (bit 2)."""
        if bits & 1:
            self._spawn(self.keys.touch_key(key_id))
        if bits & 2 and self.on_top_up is not None:
            self._spawn(asyncio.to_thread(self.on_top_up, group_id))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

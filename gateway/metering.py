"""Metering: a request's usage recorded once, before the last bytes of its answer.

Two ways (`GATEWAY_METERING`):

- "commit": one PostgreSQL statement (gateway/sql/meter.sql, METER_SQL) inserts the usage event
  and its ledger debit. The cached balance follows with the next admission, or on its own within
  SETTLE_DELAY (gateway/admission.py).
- "stream" (write-behind): one Redis script (gateway/lua/meter_stream.lua) appends the usage to
  the stream `portal:usage` and moves the cached balance at once; the settlers write the stream to
  PostgreSQL with the same METER_SQL (gateway/settlement.py).

Either way, requests that arrive while METER_FLUSHERS calls are in flight share the next one
(gateway/batching.py).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
import psycopg
import redis
import redis.asyncio as aioredis
from psycopg_pool import AsyncConnectionPool

from gateway import attribution, metrics
from gateway.admission import RESERVATION_KEYS, Admissions
from gateway.batching import Batcher
from gateway.keycache import KeyInfo
from gateway.settlement import UNSETTLED, USAGE_STREAM, owed_by_group
from gateway.sources import lua, sql
from usage.metrics import CACHE_COUNTS, COST_COLUMNS, COST_PARTS, COUNTS

log = logging.getLogger("portal.gateway")

METER_BATCH_MAX = 256  # requests per statement
METER_FLUSHERS = 2  # statements in flight per worker

# A metered request (the dict gateway/app.py builds, also the stream's JSON): each field, the
# usage event's column it fills and its SQL type, in column order. `created` (Unix time, when the
# gateway metered it) fills created_at. `api` is "chat" or "agent" (usage.metrics.APIS);
# `tool_calls` is {tool: {"invocations": n, "cost_micros": c}} (usage.pricing.AgentCost), sent as
# JSON text and stored as jsonb.
METER_COLUMNS = (
    ("request_id", "request_id", "varchar"),
    ("group_id", "group_id", "bigint"),
    ("key_id", "api_key_id", "bigint"),
    ("model_id", "model_id", "bigint"),
    ("api", "api", "varchar"),
    *((name, name, "integer") for name in COUNTS),
    ("context_size", "search_context_size", "varchar"),
    *((part, column, "bigint") for part, column in zip(COST_PARTS, COST_COLUMNS, strict=True)),
    ("tool_calls", "tool_calls", "text"),
    # Who the request was for (gateway/attribution.py): the end user and tags, as given.
    ("end_user", "end_user", "varchar"),
    ("tags", "tags", "text"),
    ("total", "cost_micros", "bigint"),
    ("streamed", "streamed", "boolean"),
    ("latency_ms", "latency_ms", "integer"),
    ("created", "created_at", "float8"),
)
METER_FIELDS = tuple(field for field, _, _ in METER_COLUMNS)
# What a field left out of a metered request stands for: a chat completions request (and usage
# a gateway of the previous release put in the stream) has no API, cache counts or tool fees.
METER_DEFAULTS: dict[str, Any] = {
    "api": "chat",
    **dict.fromkeys(CACHE_COUNTS, 0),
    **dict.fromkeys(("cache_read", "cache_write", "tools"), 0),
    "tool_calls": {},
    "end_user": None,
    "tags": {},
}
METER_CASTS = {"tool_calls": "::jsonb", "tags": "::jsonb"}
JSON_FIELDS = frozenset(METER_CASTS)
METER_SQL = sql(
    "meter",
    columns=", ".join(column for _, column, _ in METER_COLUMNS[:-1]),
    values=", ".join(f'r."{field}"{METER_CASTS.get(field, "")}' for field in METER_FIELDS[:-1]),
    arrays=", ".join(f"%s::{kind}[]" for _, _, kind in METER_COLUMNS),
    names=", ".join(f'"{field}"' for field in METER_FIELDS),
)
METER_STREAM_LUA = lua("settle_one", "reserve_one", "meter_stream")


class Metering:
    """Metering of one gateway worker (one event loop)."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        client: aioredis.Redis,
        admissions: Admissions,
        *,
        write_behind: bool,
    ) -> None:
        self.pool = pool
        self.redis = client
        self._admissions = admissions
        self.write_behind = write_behind
        self._meter_stream = client.register_script(METER_STREAM_LUA)
        self._meterings = Batcher(
            self.write_many, inflight=METER_FLUSHERS, max_batch=METER_BATCH_MAX
        )
        self._streamings = Batcher(self._stream_many, max_batch=METER_BATCH_MAX)

    async def meter(self, key: KeyInfo, params: dict[str, Any]) -> None:
        """Record a metered request, once per request id; return when it is durable.

        Commit mode: the usage event and its ledger debit are committed to PostgreSQL. Group
        commit (see Batcher): a request that arrives while METER_FLUSHERS statements are in
        flight goes into the next one with every request waiting by then. Stream mode: the usage
        is appended to the usage stream (same batching); should Redis fail, it is committed to
        PostgreSQL instead, and the stream copy, if the failed call had written one, inserts
        nothing when it is settled.

        The request's end user and tags (gateway/attribution.py) are stamped on it here, unless
        it names them itself.
        """
        if "end_user" not in params:
            params.update(attribution.current().params())
        if self.write_behind:
            try:
                await self._streamings.submit((key, params))
                return
            except (redis.RedisError, OSError) as exc:
                log.warning("usage stream unavailable, committing to PostgreSQL: %s", exc)
        started = time.perf_counter()
        await self._meterings.submit(params)
        metrics.METERING_LAG.observe(time.perf_counter() - started)
        self._admissions.settle(key, params["total"], params["request_id"])

    async def _stream_many(self, items: list[tuple[KeyInfo, dict[str, Any]]]) -> list[None]:
        keys: list[str] = [*RESERVATION_KEYS, USAGE_STREAM, UNSETTLED]
        args: list[Any] = [len(items)]
        now = time.time()
        for key, params in items:
            limited = key.monthly_limit_micros is not None
            item, rids, n = self._admissions.settle_item(key, params["request_id"], now)
            keys += item
            budgets = [int(counter.split(":")[2]) for counter in item[4:]]
            args += [
                params["total"],
                ",".join(rids),
                n,
                owed_by_group(key.group_id),
                self._admissions.owed_fields(key, item),
                orjson.dumps({**params, "limited": limited, "budgets": budgets}),
            ]
        await self._meter_stream(keys=keys, args=args)
        for _, params in items:
            self._admissions.held.pop(params["request_id"], None)
        return [None] * len(items)

    async def write_many(self, rows: list[dict[str, Any]]) -> list[Exception | None]:
        """Commit metered requests with METER_SQL; one result per row (None or its error)."""
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
        columns = [[_value(row, name) for row in rows] for name in METER_FIELDS]
        async with self.pool.connection() as conn:
            await conn.execute(METER_SQL, columns)


def _value(row: dict[str, Any], name: str) -> Any:
    """A field of a metered request as METER_SQL takes it (METER_DEFAULTS for those left out)."""
    value = row[name] if name in row or name not in METER_DEFAULTS else METER_DEFAULTS[name]
    if name in JSON_FIELDS:
        return orjson.dumps(value).decode()
    return value

"""Write-behind settlement (GATEWAY_METERING=stream): the usage stream into PostgreSQL.

In stream mode metering appends each request's usage to the Redis stream `portal:usage`
(gateway/metering.py). Every gateway worker runs a settler that reads the stream as a consumer
group and writes what it read with the metering statement (gateway/sql/meter.sql), a batch every
GATEWAY_SETTLE_INTERVAL, then acknowledges and deletes those entries (gateway/lua/ack.lua). Until
then the amounts count in `portal:unsettled`, so a balance re-read from PostgreSQL subtracts them.

An entry stays in the stream until it is committed: a settler that dies between the commit and
the acknowledgement leaves it pending, another worker claims it (CLAIM_IDLE_MS) and its second
insert is a no-op. Rows PostgreSQL refuses for good (say, their group was deleted) go to
`portal:usage:dead` with the error, never dropped. The settler runs in either mode, so a stream
left over from stream mode is settled after a switch back to commit.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import psycopg
import redis
import redis.asyncio as aioredis

from gateway import metrics
from gateway.sources import lua

log = logging.getLogger("portal.gateway")

# The stream of usage not yet in PostgreSQL, its consumer group, the amounts it owes per group
# ('g:<id>'), per key with a spend limit ('k:<id>') and per hard budget ('b:<id>'), and where rows PostgreSQL refuses for good
# are kept.
USAGE_STREAM = "portal:usage"
SETTLERS = "settlers"
UNSETTLED = "portal:unsettled"
DEAD_LETTERS = "portal:usage:dead"
SETTLE_BATCH = 1000  # entries per settlement statement
CLAIM_IDLE_MS = 10_000  # an entry read this long ago and not acknowledged: its settler is gone
CLAIM_EVERY = 5.0  # seconds between looks for such entries

ACK_LUA = lua("ack")

# Write rows with the metering statement: one result per row (None, or the error for that row).
WriteMany = Callable[[list[dict[str, Any]]], Awaitable[list[Exception | None]]]


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


class Settler:
    """The settler of one gateway worker: `run` until `closing` is set (or it is cancelled)."""

    def __init__(
        self,
        client: aioredis.Redis,
        write_many: WriteMany,
        follow_up: Callable[[int, int, int], None],
        *,
        write_behind: bool,
        interval: float,
    ) -> None:
        self.redis = client
        self._write_many = write_many
        self._follow_up = follow_up
        self._write_behind = write_behind
        self._interval = interval
        self._ack = client.register_script(ACK_LUA)
        self.closing = False

    async def run(self) -> None:
        """Settle the usage stream into PostgreSQL, a batch at a time, until cancelled."""
        consumer = f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        retry: list[Any] = []  # entries read and not yet committed
        claim_at = 0.0
        backoff = 0.5
        ready = False
        while not self.closing:
            try:
                if not ready:
                    await self.prepare_stream()
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
                    await asyncio.sleep(self._interval)
            except asyncio.CancelledError:
                raise
            except (redis.RedisError, psycopg.Error, OSError) as exc:
                if isinstance(exc, redis.ResponseError) and "NOGROUP" in str(exc):
                    ready = False  # Redis lost the stream (restarted without persistence)
                log.warning("usage settlement paused (%d entries waiting): %s", len(retry), exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def prepare_stream(self) -> None:
        try:
            await self.redis.xgroup_create(USAGE_STREAM, SETTLERS, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        if self._write_behind:
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
                await self._dead_letter(data, result)
                done.append((entry_id, data, 0))
        await self._acknowledge(done, gone)
        now = time.time()
        for _, data, bits in done:
            metrics.METERING_LAG.observe(max(0.0, now - data["created"]))
            self._follow_up(data["key_id"], data["group_id"], bits)
        return retry

    async def _dead_letter(self, data: dict[str, Any], error: Exception) -> None:
        log.error("usage %s refused by PostgreSQL, kept in %s: %s",
                  data.get("request_id"), DEAD_LETTERS, error)  # fmt: skip
        await self.redis.xadd(DEAD_LETTERS, {"d": orjson.dumps(data), "error": str(error)[:500]})

    async def _acknowledge(
        self, done: list[tuple[Any, dict[str, Any], int]], gone: list[Any]
    ) -> None:
        args: list[Any] = [SETTLERS]
        for entry_id, data, _ in done:
            fields = [owed_by_key(data["key_id"])] if data.get("limited") else []
            fields += [f"b:{budget}" for budget in data.get("budgets") or ()]
            args += [entry_id, owed_by_group(data["group_id"]), ",".join(fields), data["total"]]
        for entry_id in gone:
            args += [entry_id, "", "", 0]
        if len(args) > 1:
            await self._ack(keys=[USAGE_STREAM, UNSETTLED], args=args)

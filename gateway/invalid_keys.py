"""The invalid-key limiter: database look-ups for unknown keys, limited per client address.

A key in neither the worker's memory nor Redis costs a PostgreSQL query. Each client (an IPv4
address or an IPv6 /64) may cause settings.GATEWAY_INVALID_KEYS_PER_MINUTE of them per clock
minute, counted in Redis across workers; a look-up that finds an active key is refunded. Past the
limit the client gets TooManyInvalidKeys (429) until the minute ends, remembered in memory so a
flood costs no Redis call either.
"""

from __future__ import annotations

import contextlib
import ipaddress
import math
import time

import redis.asyncio as aioredis


class TooManyInvalidKeys(Exception):
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


class InvalidKeyLimiter:
    """Counts database look-ups of keys per client bucket and minute (one per gateway worker)."""

    def __init__(self, client: aioredis.Redis, limit: int) -> None:
        self._redis = client
        self._limit = limit
        self.blocked: dict[str, float] = {}  # client bucket -> refused until (monotonic)

    async def spend(self, client: str) -> str:
        """Count one database look-up of a key against the client's allowance for this minute;
        return the counter's name (to refund it)."""
        now = time.monotonic()
        if self.blocked.get(client, 0.0) > now:
            raise TooManyInvalidKeys(max(1, math.ceil(self.blocked[client] - now)))
        window, left = divmod(time.time(), 60)
        bucket = f"portal:badkey:{client}:{int(window)}"
        pipe = self._redis.pipeline(transaction=False)
        pipe.incr(bucket)
        pipe.expire(bucket, 61)
        count, _ = await pipe.execute()
        if count > self._limit:
            if len(self.blocked) > 10_000:
                self.blocked = {c: t for c, t in self.blocked.items() if t > now}
            self.blocked[client] = now + 60 - left
            raise TooManyInvalidKeys(max(1, math.ceil(60 - left)))
        return bucket

    async def refund(self, bucket: str) -> None:
        """A look-up that found an active key is not counted."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.decr(bucket)
        pipe.expire(bucket, 61)  # never a counter without expiry, even if it expired meanwhile
        await pipe.execute()

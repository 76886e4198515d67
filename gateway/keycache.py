"""The gateway's key cache: API keys in the worker's memory, in Redis, and from PostgreSQL.

A key is looked up in memory, then in Redis (keys/cache.py: the portal rewrites or deletes the
entry on every change), then in PostgreSQL. In memory a key lives KEY_CACHE_LIVE seconds while the
worker is subscribed to keys.cache.CHANGES (a change drops it at once), otherwise
GATEWAY_KEY_CACHE_SECONDS. Fail closed: every KEY_CHANGES_POLL seconds each worker also reads the
KeyChange rows of the last KEY_CHANGES_OVERLAP seconds (at start: of the last KEY_TTL + that, the
oldest a stale Redis entry can be) and rewrites the Redis entry of each new one from PostgreSQL,
so a revocation holds even when its announcement or Redis write was lost.

Unknown keys are remembered per worker (LRU, in memory only: never a Redis entry), and their
database look-ups are limited per client address (gateway/invalid_keys.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
import redis
import redis.asyncio as aioredis
from psycopg_pool import AsyncConnectionPool

from gateway.invalid_keys import InvalidKeyLimiter
from gateway.sources import sql
from keys.cache import CHANGES, KEY_TTL, redis_key

log = logging.getLogger("portal.gateway")

KEY_CACHE_LIVE = 60.0
KEY_CHANGES_POLL = 0.25
KEY_CHANGES_OVERLAP = 30
UNKNOWN_KEYS_MAX = 10_000
UNKNOWN_KEY_SECONDS = 60.0
KEYS_MAX = 50_000  # keys kept in memory; beyond it the memory cache starts afresh

KEY_SQL = sql("key")
KEY_CHANGES_SQL = sql("key_changes")
TOUCH_KEY_SQL = sql("touch_key")


@dataclass(frozen=True)
class KeyInfo:
    id: int
    group_id: int
    name: str
    last_four: str
    expires_at: float | None
    monthly_limit_micros: int | None
    # Restrictions (keys/restrictions.py), each None when the key has none ("all").
    models: frozenset[str] | None = None
    apis: frozenset[str] | None = None
    tools: frozenset[str] | None = None
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] | None = None


def _allowlist(values: Any) -> frozenset[str] | None:
    return frozenset(values) if values else None


def _networks(values: Any) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] | None:
    """The key's client IP ranges, parsed once per cache fill. An unparsable entry (never
    written by the portal) is skipped: with none left, no address matches (fail closed)."""
    if not values:
        return None
    networks = []
    for value in values:
        with contextlib.suppress(ValueError, TypeError):
            networks.append(ipaddress.ip_network(value, strict=False))
    return tuple(networks)


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
        models=_allowlist(state.get("allowed_models")),
        apis=_allowlist(state.get("allowed_apis")),
        tools=_allowlist(state.get("allowed_tools")),
        networks=_networks(state.get("allowed_ips")),
    )


class KeyCache:
    """The keys of one gateway worker (one event loop); `watch` and `follow_changes` run while
    it is open, until `closing` is set."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        client: aioredis.Redis,
        limiter: InvalidKeyLimiter,
        ttl: float,
    ) -> None:
        self.pool = pool
        self.redis = client
        self.limiter = limiter
        self._ttl = ttl  # settings.GATEWAY_KEY_CACHE_SECONDS
        self._keys: dict[str, tuple[float, KeyInfo | None]] = {}
        self._unknown: OrderedDict[str, float] = OrderedDict()  # hash -> remembered until
        self._change_ids: dict[int, float] = {}  # KeyChange rows applied -> their time
        self._repairs: set[str] = set()  # hashes whose Redis entry is still to be rewritten
        self._live = False  # subscribed to key changes
        self._changes = 0  # messages seen: a load that overlapped one is not kept long
        self.closing = False

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
            seen = self._changes
            state = await self._load_key(secret_hash, client)
            if state is None:  # no such key: remembered here only, bounded
                self._unknown[secret_hash] = now + UNKNOWN_KEY_SECONDS
                while len(self._unknown) > UNKNOWN_KEYS_MAX:
                    self._unknown.popitem(last=False)
                return None
            info = _key_info(state)
            if len(self._keys) > KEYS_MAX:
                self._keys.clear()
            live = self._live and seen == self._changes
            self._keys[secret_hash] = (now + (KEY_CACHE_LIVE if live else self._ttl), info)
        if info is not None and info.expires_at is not None and info.expires_at <= time.time():
            return None
        return info

    def _forget_key(self, secret_hash: str) -> None:
        self._changes += 1  # a load that overlapped this is kept only briefly
        self._keys.pop(secret_hash, None)
        self._unknown.pop(secret_hash, None)

    async def _load_key(self, secret_hash: str, client: str | None = None) -> dict[str, Any] | None:
        """The key's state from Redis, else from PostgreSQL (then cached in Redis with SET NX,
        unless no such key exists: unknown keys leave nothing in Redis); None when unknown."""
        raw = await self.redis.get(redis_key(secret_hash))
        if raw is not None:
            state = orjson.loads(raw)
            return state if "id" in state else None
        bucket = await self.limiter.spend(client) if client is not None else None
        state = await self._key_from_db(secret_hash)
        if "id" not in state:
            return None
        if bucket is not None and state["active"]:
            await self.limiter.refund(bucket)
        await self.redis.set(redis_key(secret_hash), orjson.dumps(state), ex=KEY_TTL, nx=True)
        return state

    async def _key_from_db(self, secret_hash: str) -> dict[str, Any]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(KEY_SQL, {"hash": secret_hash})
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
            "allowed_models": row[7] or [],
            "allowed_apis": row[8] or [],
            "allowed_tools": row[9] or [],
            "allowed_ips": row[10] or [],
        }

    async def touch_key(self, key_id: int) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(TOUCH_KEY_SQL, (key_id,))

    # --- keeping it current -------------------------------------------------------------------

    async def watch(self) -> None:
        """Drop a key from memory as soon as the portal announces a change to it."""
        backoff = 0.5
        while not self.closing:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.subscribe(CHANGES)
                while not self.closing:
                    message = await pubsub.get_message(timeout=5.0)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        # From now on no change goes unseen: forget what was read before.
                        self._keys.clear()
                        self._live = True
                        backoff = 0.5
                    elif message["type"] == "message":
                        self._forget_key(message["data"].decode())
            except asyncio.CancelledError:
                raise
            except (redis.RedisError, OSError) as exc:
                log.warning("key changes not received, caching keys briefly: %s", exc)
            finally:
                self._live = False
                self._keys.clear()  # kept for the live TTL: re-read them with the short one
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def follow_changes(self) -> None:
        """Apply the KeyChange rows (keys/cache.py): rewrite each key's Redis entry from
        PostgreSQL and drop it from memory, whether or not its announcement arrived."""
        lookback = KEY_TTL + KEY_CHANGES_OVERLAP  # at start: whatever a stale entry may predate
        failing = False
        while not self.closing:
            try:
                rows = await self._changes_since(lookback)
                lookback = KEY_CHANGES_OVERLAP
                await self._apply_changes(rows)
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

    async def _changes_since(self, lookback: float) -> list[Any]:
        """The KeyChange rows of the last `lookback` seconds."""
        async with self.pool.connection(timeout=1.0) as conn:
            cur = await conn.execute(KEY_CHANGES_SQL, (lookback,))
            return await cur.fetchall()

    async def _apply_changes(self, rows: list[Any]) -> None:
        """Repair the Redis entry of each change not applied yet; forget it in memory."""
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
                await self.redis.set(redis_key(secret_hash), orjson.dumps(state), ex=KEY_TTL)
            else:
                await self.redis.delete(redis_key(secret_hash))
            self._repairs.discard(secret_hash)
            self._forget_key(secret_hash)  # a load that read the old entry meanwhile

"""Admission: one Redis round trip before the upstream call, and the cached balances it reads.

The admission script (gateway/lua/admit.lua) first settles the costs this worker metered since its
last call, then reads the group's balance and the key's month-to-date spend and counts the request
against its API family's rate limit (gateway/catalogue.py RateInfo). Admissions waiting while one
is in flight share the next call (gateway/batching.py). A cache miss reads the account or the
spend from PostgreSQL, less what the usage stream still owes it (gateway/settlement.py).

Rate limits (usage/tiers.py, `[limits]` in usage/catalogue.toml) are counted per API group and
family, shared by all the group's keys and by every gateway worker: one Redis counter per window
(`portal:rl:<group>:<family>:<seconds>:<window number>`, a fixed window of one minute and/or one
second). The script knows the group's tier from its cached purchases and refuses a request at
the limit without counting it. At most `limit` requests are admitted per window in all; across a
window's boundary a client can get up to 2 × limit within one window's length (the fixed
window's slack, where Perplexity's leaky bucket has none). With the account not cached (a miss,
every ACCOUNT_TTL or after a purchase) the request is counted first and checked after the load.

Overdraft bound: admission reads the cached balance without reserving anything, so requests
admitted concurrently while the balance is still positive are all served and charged: a group can
go below zero by at most the cost of the requests in flight when its balance crossed zero (plus
what other workers metered within SETTLE_DELAY). After that every request is 402.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
import redis.asyncio as aioredis
from psycopg_pool import AsyncConnectionPool

from billing.balance_cache import key as balance_key
from billing.balance_cache import top_up_key
from gateway.batching import Batcher
from gateway.catalogue import RateInfo
from gateway.keycache import KeyInfo
from gateway.settlement import UNSETTLED, owed_by_group, owed_by_key
from gateway.sources import lua, sql
from usage.tiers import TIERS

log = logging.getLogger("portal.gateway")

ACCOUNT_TTL = 30  # seconds a cached balance may live before it is re-read from PostgreSQL
SPEND_TTL = 30
# How long a metered cost may wait for the next admission to carry it to Redis before it is sent
# on its own. Within one worker no admission ever sees a balance without the costs settled before
# it; other workers see them at most this much later.
SETTLE_DELAY = 0.002
# The purchase thresholds of tiers 1..5, as admit.lua compares them with the cached purchases.
TIER_ARGS = tuple(str(tier.min_purchased_micros).encode() for tier in TIERS[1:])
NO_RATE = ("", "", *(b"0",) * 14)  # keys and args of a request not rate-limited

ADMIT_LUA = lua("settle_one", "admit")
SETTLE_LUA = lua("settle_one", "settle")
FILL_ACCOUNT_LUA = lua("fill_account")
ACCOUNT_SQL = sql("account")
KEY_SPEND_SQL = sql("key_spend")

# After a debit: (key id, group id, the settlement's bit set) -> note the key's use, top up.
FollowUp = Callable[[int, int, int], None]


@dataclass(frozen=True)
class Admission:
    balance_micros: int
    purchased_micros: int
    spend_micros: int | None
    # Requests of the group's family in each window of its RateInfo (this one included when
    # counted); `refused` is the window (1 or 2) at its limit, 0 if none; `tier` is -1 when the
    # script did not know it (the account was not cached).
    counts: tuple[int, int] = (0, 0)
    refused: int = 0
    tier: int = -1

    @property
    def requests_this_window(self) -> int:
        return self.counts[0]


def month_start(now: float | None = None) -> datetime:
    moment = datetime.fromtimestamp(now or time.time(), UTC)
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def spend_key(key: KeyInfo) -> str:
    """The Redis counter of the key's month-to-date spend ('' when it has no monthly limit)."""
    if key.monthly_limit_micros is None:
        return ""
    return f"portal:kspend:{key.id}:{month_start():%Y%m}"


def settle_keys(key: KeyInfo) -> tuple[str, str, str, str]:
    """The cache keys settle_one.lua moves for a cost of this key, in its order."""
    return (
        balance_key(key.group_id),
        spend_key(key),
        f"portal:keyused:{key.id}",
        top_up_key(key.group_id),
    )


class Admissions:
    """Admission checks of one gateway worker, and the costs it still has to settle in Redis."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        client: aioredis.Redis,
        follow_up: FollowUp,
        spawn: Callable[[Any], None],
    ) -> None:
        self.pool = pool
        self.redis = client
        self._follow_up = follow_up
        self._spawn = spawn
        self._admit_script = client.register_script(ADMIT_LUA)
        self._settle_script = client.register_script(SETTLE_LUA)
        self._fill_account = client.register_script(FILL_ACCOUNT_LUA)
        self._admissions = Batcher(self._admit_many)
        # Metered costs waiting to be settled in Redis: item keys -> [summed cost, key].
        self._unsettled: dict[tuple[str, ...], list[Any]] = {}
        self._settle_timer: asyncio.TimerHandle | None = None

    async def admit(
        self, key: KeyInfo, rate: RateInfo | None, now: float, *, spend: bool = True
    ) -> Admission:
        """Read the balance (and the key's spend, unless `spend` is False) and count the request
        against `rate` (None: not limited), in one round trip."""
        acct_key = balance_key(key.group_id)
        spend_at = spend_key(key) if spend else ""
        if rate is None or not rate.windows:
            item: tuple[Any, ...] = (acct_key, spend_at, *NO_RATE)
        else:
            counters = [
                f"portal:rl:{key.group_id}:{rate.key}:{seconds}:{int(now // seconds)}"
                for seconds, _ in rate.windows
            ]
            if len(counters) == 1:
                counters.append("")
            item = (acct_key, spend_at, *counters, *rate.args)
        bal, paid, spent, n1, n2, refused, tier = await self._admissions.submit(item)
        if bal is None:
            bal, paid = await self._load_account(key.group_id)
        if spend_at and spent is None:
            spent = await self._load_spend(key, spend_at)
        return Admission(
            balance_micros=int(bal),
            purchased_micros=int(paid or 0),
            spend_micros=int(spent) if spent is not None else None,
            counts=(int(n1), int(n2)),
            refused=int(refused),
            tier=int(tier),
        )

    async def _load_account(self, group_id: int) -> tuple[int, int]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(ACCOUNT_SQL, (group_id,))
            row = await cur.fetchone()
        bal, paid, thr = (row[0], row[1], row[2]) if row else (0, 0, -1)
        bal, paid = await self._fill_account(
            keys=[balance_key(group_id), UNSETTLED],
            args=[bal, paid, ACCOUNT_TTL, thr, owed_by_group(group_id)],
        )
        return int(bal), int(paid)

    async def _load_spend(self, key: KeyInfo, spend_key: str) -> int:
        async with self.pool.connection() as conn:
            cur = await conn.execute(KEY_SPEND_SQL, (key.id, month_start()))
            row = await cur.fetchone()
        spend = int(row[0]) if row else 0
        spend += int(
            await self.redis.hget(UNSETTLED, owed_by_key(key.id)) or 0
        )  # still in the stream
        await self.redis.set(spend_key, spend, ex=SPEND_TTL, nx=True)
        return spend

    async def _admit_many(self, items: list[tuple[Any, ...]]) -> list[Any]:
        settles = self._take_unsettled()
        keys = [k for item, _, _ in settles for k in item]
        args: list[Any] = [len(settles), *TIER_ARGS, *(cost for _, cost, _ in settles)]
        for item in items:  # 4 keys, then 14 args (see admit.lua)
            keys += item[:4]
            args += item[4:]
        # Should this call fail, its settlements are not re-sent (Redis may have applied them): a
        # cached balance that is too high is corrected when it expires and is re-read from
        # PostgreSQL (ACCOUNT_TTL), which has every debit.
        out = list(await self._admit_script(keys=keys, args=args))
        self._settled(settles, out[: len(settles)])
        return out[len(settles) :]

    # --- costs committed, still to be settled in the cache -----------------------------------

    def settle(self, key: KeyInfo, cost: int) -> None:
        """Queue a committed cost for the cached balance and spend (see admit.lua, SETTLE_DELAY)."""
        item = settle_keys(key)
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

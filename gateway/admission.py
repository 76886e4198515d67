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

Budgets and the overdraft bound (docs/gateway.md, "Overdraft bound"): each request is admitted
with a reservation — an estimate of what it may cost (gateway/estimates.py) — held in Redis
against its group's balance and its hard budgets (gateway/budgets.py) by the same script, in the
same round trip. A request whose reservation does not fit (balance − reserved − estimate <
−GATEWAY_OVERDRAFT_BOUND_MICROS, or a budget's spend + reserved + estimate > its amount + the
bound) is refused with 402. Metering gives the reservation back in the script that moves the
cached balance by the actual cost (gateway/lua/reserve_one.lua settle_all); a request that ends
unmetered (refused, failed upstream, client gone) gives it back when its handler returns; a
reservation nobody gave back (its worker died) expires after GATEWAY_RESERVATION_SECONDS.
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
from gateway.budgets import BUDGET_SPEND_TTL, BudgetCache, BudgetInfo
from gateway.catalogue import RateInfo
from gateway.keycache import KeyInfo
from gateway.settlement import UNSETTLED, owed_by_group, owed_by_key
from gateway.sources import lua, sql
from usage.tiers import TIERS, tier_for

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

ADMIT_LUA = lua("settle_one", "reserve_one", "admit")
SETTLE_LUA = lua("settle_one", "reserve_one", "settle")
RESERVE_LUA = lua("settle_one", "reserve_one", "reserve")
RELEASE_LUA = lua("settle_one", "reserve_one", "release")
# Reservations (gateway/lua/reserve_one.lua): the sums held per group and budget, the
# reservations by expiry, and each reservation's amount and fields.
RESERVED = "portal:res"
RESERVATIONS = "portal:resz"
RESERVATION_DATA = "portal:resd"
RESERVATION_KEYS = (RESERVED, RESERVATIONS, RESERVATION_DATA)
# Verdicts of the admission script (reserve_one.lua verdict()).
UNKNOWN, ADMITTED, NO_CREDIT, KEY_LIMIT = -1, 0, 1, 2
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
    # The credit verdict (ADMITTED, NO_CREDIT, KEY_LIMIT, or KEY_LIMIT + i: budget i of
    # `budgets` is spent), the hard budgets checked and their spends in the current window.
    verdict: int = ADMITTED
    budgets: tuple[BudgetInfo, ...] = ()
    budget_spends: tuple[int, ...] = ()
    reserved_micros: int = 0

    @property
    def exceeded_budget(self) -> tuple[BudgetInfo, int] | None:
        """The hard budget that refused the request, and its spend, if one did."""
        i = self.verdict - KEY_LIMIT - 1
        if i < 0 or i >= len(self.budgets):
            return None
        return self.budgets[i], self.budget_spends[i]

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


@dataclass
class Held:
    """A request admitted with a reservation, until it is metered or given back."""

    key: KeyInfo
    budgets: tuple[BudgetInfo, ...]
    amount: int
    detached: bool = False  # outlives its handler (a background response, an async job)


class Admissions:
    """Admission checks of one gateway worker, and the costs it still has to settle in Redis."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        client: aioredis.Redis,
        follow_up: FollowUp,
        spawn: Callable[[Any], None],
        budgets: BudgetCache,
        *,
        bound: int = 0,
        hold_seconds: float = 1800.0,
    ) -> None:
        self.pool = pool
        self.redis = client
        self.budgets = budgets
        self.bound = bound  # settings.GATEWAY_OVERDRAFT_BOUND_MICROS
        self.hold_seconds = hold_seconds  # settings.GATEWAY_RESERVATION_SECONDS
        self._follow_up = follow_up
        self._spawn = spawn
        self._admit_script = client.register_script(ADMIT_LUA)
        self._settle_script = client.register_script(SETTLE_LUA)
        self._reserve_script = client.register_script(RESERVE_LUA)
        self._fill_account = client.register_script(FILL_ACCOUNT_LUA)
        self._admissions = Batcher(self._admit_many)
        # Metered costs waiting to be settled in Redis: item keys -> [summed cost, key, request
        # ids whose reservations they end, number of budget counters].
        self._unsettled: dict[tuple[str, ...], list[Any]] = {}
        self._releases: list[str] = []  # reservations of requests that ended unmetered
        self._settle_timer: asyncio.TimerHandle | None = None
        self.held: dict[str, Held] = {}  # request id -> its reservation, until metered

    async def admit(
        self, key: KeyInfo, rate: RateInfo | None, now: float, *, spend: bool = True,
        request_id: str = "", estimate: int = 0, hold_seconds: float | None = None,
    ) -> Admission:  # fmt: skip
        """Read the balance (and the key's spend and hard budgets, unless `spend` is False),
        count the request against `rate` (None: not limited) and, when it may go ahead, reserve
        `estimate` for `request_id` (nothing without one) — in one round trip when cached."""
        acct_key = balance_key(key.group_id)
        spend_at = spend_key(key) if spend else ""
        budgets = await self.budgets.for_key(key.group_id, key.id) if spend else ()
        if rate is None or not rate.windows:
            item: list[Any] = [acct_key, spend_at, *NO_RATE]
        else:
            counters = [
                f"portal:rl:{key.group_id}:{rate.key}:{seconds}:{int(now // seconds)}"
                for seconds, _ in rate.windows
            ]
            if len(counters) == 1:
                counters.append("")
            item = [acct_key, spend_at, *counters, *rate.args]
        estimate = max(0, int(estimate))
        expiry = int(now + (hold_seconds or self.hold_seconds))
        limit = key.monthly_limit_micros if spend_at else None
        tail = [
            1 if spend else 0, request_id, estimate, expiry, -1 if limit is None else limit,
            owed_by_group(key.group_id), len(budgets),
        ]  # fmt: skip
        for budget in budgets:
            tail += [budget.amount_micros, budget.field]
        counters_of = [budget.counter(now) for budget in budgets]
        row = await self._admissions.submit((item, tail, counters_of))
        bal, paid, spent, n1, n2, refused, tier, verdict, reserved = row[:9]
        spends: list[Any] = list(row[9:]) + [None] * (len(budgets) - len(row[9:]))
        if bal is None and verdict != UNKNOWN:  # no credit check (admit_rate): the tier only
            bal, paid = await self._load_account(key.group_id)
        if verdict == UNKNOWN:  # something was not cached: fill it, then decide
            if bal is None:
                bal, paid = await self._load_account(key.group_id)
            if spend_at and spent is None:
                spent = await self._load_spend(key, spend_at)
            for i, budget in enumerate(budgets):
                if spends[i] is None:
                    await self._load_budget(budget, counters_of[i], now)
            over = int(refused) != 0 or (
                int(tier) < 0 and _rate_refused(rate, (int(n1), int(n2)), int(paid or 0))
            )
            keys = [*RESERVATION_KEYS, acct_key, spend_at, *counters_of]
            args = [request_id, estimate, self.bound, expiry, tail[4], tail[5],
                    1 if over else 0, len(budgets), *tail[7:]]  # fmt: skip
            found = await self._reserve_script(keys=keys, args=args)
            verdict, spends = found[0], list(found[1:]) + [None] * len(budgets)
            reserved = 1 if int(verdict) == ADMITTED and not over and estimate and request_id else 0
        if int(reserved):
            self.held[request_id] = Held(key, budgets, estimate)
        return Admission(
            balance_micros=int(bal),
            purchased_micros=int(paid or 0),
            spend_micros=int(spent) if spent is not None else None,
            counts=(int(n1), int(n2)),
            refused=int(refused),
            tier=int(tier),
            verdict=int(verdict),
            budgets=budgets,
            budget_spends=tuple(int(x or 0) for x in spends[: len(budgets)]),
            reserved_micros=estimate if int(reserved) else 0,
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

    async def _load_budget(self, budget: BudgetInfo, counter: str, now: float) -> None:
        """Fill a budget's spend counter from PostgreSQL (plus what the stream still owes it)."""
        spend = await self.budgets.load_spend(budget, now)
        spend += int(await self.redis.hget(UNSETTLED, budget.field) or 0)
        await self.redis.set(counter, spend, ex=BUDGET_SPEND_TTL, nx=True)

    async def _admit_many(self, items: list[tuple[Any, ...]]) -> list[Any]:
        settles = self._take_unsettled()
        releases = self._take_releases()
        keys: list[Any] = [*RESERVATION_KEYS]
        args: list[Any] = [int(time.time()), self.bound, len(settles), len(items), *TIER_ARGS,
                           releases]  # fmt: skip
        for item_keys, (cost, _, rids, n) in settles:
            keys += item_keys
            args += [cost, ",".join(rids), n]
        for item, tail, counters in items:  # see admit.lua
            keys += [*item[:4], *counters]
            args += [*item[4:], *tail]
        # Should this call fail, its settlements are not re-sent (Redis may have applied them): a
        # cached balance that is too high is corrected when it expires and is re-read from
        # PostgreSQL (ACCOUNT_TTL), which has every debit. Reservations it held expire.
        out = list(await self._admit_script(keys=keys, args=args))
        self._settled(settles, out[: len(settles)])
        return out[len(settles) :]

    # --- reservations -------------------------------------------------------------------------

    def detach(self, request_id: str) -> None:
        """The request goes on after its handler returns: `release` it with force=True."""
        held = self.held.get(request_id)
        if held is not None:
            held.detached = True

    def hand_over(self, request_id: str) -> None:
        """Another process gives the reservation back (an async job's Celery worker, by its
        request id: gateway/async_runner.py); this worker forgets it."""
        self.held.pop(request_id, None)

    def release(self, request_id: str, *, force: bool = False) -> None:
        """Give back the reservation of a request that ended without being metered (with the
        next admission, or on its own within SETTLE_DELAY)."""
        held = self.held.get(request_id)
        if held is None or (held.detached and not force):
            return
        del self.held[request_id]
        self._releases.append(request_id)
        self._arm()

    def _take_releases(self) -> str:
        rids = ",".join(self._releases)
        self._releases.clear()
        return rids

    # --- costs committed, still to be settled in the cache -----------------------------------

    def settle_item(
        self, key: KeyInfo, request_id: str, now: float
    ) -> tuple[tuple[str, ...], list[str], int]:
        """The cache keys a cost of this request moves (settle_all() of reserve_one.lua), the
        reservation it ends ([] or [its id]) and how many budget counters it moves. The caller
        forgets the reservation (`held.pop`) once the cost is recorded."""
        held = self.held.get(request_id)
        budgets = held.budgets if held is not None else self.budgets.known(key.group_id, key.id)
        counters = tuple(budget.counter(now) for budget in budgets)
        return (*settle_keys(key), *counters), [request_id] if held else [], len(counters)

    def owed_fields(self, key: KeyInfo, item: tuple[str, ...]) -> str:
        """The `portal:unsettled` fields besides the group's a cost of this item owes."""
        fields = [owed_by_key(key.id)] if key.monthly_limit_micros is not None else []
        fields += [f"b:{counter.split(':')[2]}" for counter in item[4:]]
        return ",".join(fields)

    def settle(self, key: KeyInfo, cost: int, request_id: str = "") -> None:
        """Queue a committed cost for the cached balance, spend and budgets, and give back the
        request's reservation (see admit.lua, SETTLE_DELAY)."""
        item, rids, n = self.settle_item(key, request_id, time.time())
        self.held.pop(request_id, None)
        entry = self._unsettled.get(item)
        if entry is None:
            self._unsettled[item] = [cost, key, rids, n]
        else:
            entry[0] += cost
            entry[2] += rids
        self._arm()

    def _arm(self) -> None:
        if self._settle_timer is None:
            self._settle_timer = asyncio.get_running_loop().call_later(
                SETTLE_DELAY, self._settle_due
            )

    def _take_unsettled(self) -> list[tuple[tuple[str, ...], list[Any]]]:
        taken = list(self._unsettled.items())
        self._unsettled.clear()
        if self._settle_timer is not None:
            self._settle_timer.cancel()
            self._settle_timer = None
        return taken

    def _settle_due(self) -> None:
        self._settle_timer = None
        if self._unsettled or self._releases:
            self._spawn(self._settle_alone(self._take_unsettled(), self._take_releases()))

    async def _settle_alone(
        self, settles: list[tuple[tuple[str, ...], list[Any]]], releases: str
    ) -> None:
        keys: list[Any] = [*RESERVATION_KEYS]
        args: list[Any] = [len(settles), releases]
        for item_keys, (cost, _, rids, n) in settles:
            keys += item_keys
            args += [cost, ",".join(rids), n]
        try:
            flags = await self._settle_script(keys=keys, args=args)
        except (redis.RedisError, OSError) as exc:
            log.warning("balance cache not settled: %s", exc)
            return
        self._settled(settles, flags)

    def _settled(self, settles: list[tuple[tuple[str, ...], list[Any]]], flags: list) -> None:
        for (_, (_, key, _, _)), bits in zip(settles, flags, strict=True):
            self._follow_up(key.id, key.group_id, int(bits))


def _rate_refused(rate: RateInfo | None, counts: tuple[int, int], purchased: int) -> bool:
    """Over the rate limit by the counts (when the script did not know the tier)."""
    if rate is None:
        return False
    tier = tier_for(purchased).number
    return any(counts[i] > limits[tier] for i, (_, limits) in enumerate(rate.windows))


def release_script(client: redis.Redis) -> Any:
    """The script that gives back reservations by request id (synchronous Redis; the async
    runner's): call it with keys=RESERVATION_KEYS, args=request ids."""
    return client.register_script(RELEASE_LUA)

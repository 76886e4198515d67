"""The hard budgets the gateway enforces (billing.models.Budget), as each worker knows them.

A worker keeps the hard budgets of the groups it served in the last BUDGETS_KEEP seconds in
memory and re-reads all of them with one query every BUDGETS_POLL seconds, so a budget created,
changed or deleted in the portal is in force within about that long on every worker, whether or
not Redis is reachable (no announcement to lose). A group seen for the first time is read on the
request path (one indexed query, shared by every request of the group waiting for it: a burst on
a new group takes one connection, not one each). Should PostgreSQL be unreachable, the last copy
is kept.

Spend per budget and window is counted in Redis (`portal:bspend:<budget id>:<window start>`,
BUDGET_SPEND_TTL seconds, re-read from PostgreSQL on a miss: the usage events of the window plus
what the usage stream still owes it), moved by the same settlement as the cached balance
(gateway/lua/reserve_one.lua), and checked — with this request's reservation — by the admission
script (gateway/admission.py). Windows start at midnight in the group's time zone
(billing/windows.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
from django.db.models import Q
from psycopg_pool import AsyncConnectionPool

from billing import windows
from billing.models import Budget, BudgetEnforcement
from gateway.sources import sql

log = logging.getLogger("portal.gateway")

BUDGETS_POLL = 0.5  # seconds between re-reads of the known groups' budgets
BUDGETS_KEEP = 600.0  # a group not served for this long is forgotten
BUDGET_SPEND_TTL = 60  # seconds a budget's cached spend lives before it is re-read

BUDGETS_SQL = sql("budgets")
BUDGET_SPEND_SQL = sql("budget_spend")


@dataclass(frozen=True)
class BudgetInfo:
    id: int
    group_id: int
    key_id: int | None  # None: the whole group's
    name: str  # the key's name, or the group's
    amount_micros: int
    window: str
    time_zone: str

    @property
    def field(self) -> str:
        """Its field in `portal:res` (reserved) and `portal:unsettled` (owed by the stream)."""
        return f"b:{self.id}"

    def bounds(self, now: float) -> tuple[float, float | None]:
        """[start, end) of its window at `now`, as Unix times (end None: lifetime)."""
        return window_bounds(self.window, self.time_zone, now)

    def counter(self, now: float) -> str:
        """The Redis counter of its spend in the window at `now`."""
        return spend_counter(self.id, self.bounds(now)[0])

    def describe(self) -> str:
        whose = f"API key “{self.name}”" if self.key_id is not None else f"API group “{self.name}”"
        return f"the {self.window} budget of ${self.amount_micros / 1_000_000:,.2f} of {whose}"


def spend_counter(budget_id: int, window_start: float) -> str:
    return f"portal:bspend:{budget_id}:{int(window_start)}"


_WINDOWS: dict[tuple[str, str], tuple[float, float | None]] = {}


def window_bounds(window: str, tz_name: str, now: float) -> tuple[float, float | None]:
    """billing.windows.bounds as Unix times, remembered until the window ends."""
    cached = _WINDOWS.get((window, tz_name))
    if cached is not None and cached[0] <= now and (cached[1] is None or now < cached[1]):
        return cached
    start, end = windows.bounds(window, tz_name, datetime.fromtimestamp(now, UTC))
    found = (start.timestamp(), end.timestamp() if end is not None else None)
    if len(_WINDOWS) > 10_000:
        _WINDOWS.clear()
    _WINDOWS[(window, tz_name)] = found
    return found


class BudgetCache:
    """The hard budgets of the groups one worker serves; `follow` runs while it is open."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool
        self._budgets: dict[int, tuple[BudgetInfo, ...]] = {}
        self._used: dict[int, float] = {}  # group -> last served (monotonic)
        self._reading: dict[int, asyncio.Future[None]] = {}  # group -> its first read under way
        self.closing = False

    async def for_key(self, group_id: int, key_id: int) -> tuple[BudgetInfo, ...]:
        """The hard budgets a request of this key counts against: its group's and its own."""
        self._used[group_id] = time.monotonic()
        budgets = self._budgets.get(group_id)
        if budgets is None:
            await self._first_read(group_id)
            budgets = self._budgets.get(group_id, ())
        if not budgets:
            return ()
        return tuple(b for b in budgets if b.key_id is None or b.key_id == key_id)

    def known(self, group_id: int, key_id: int) -> tuple[BudgetInfo, ...]:
        """for_key from memory only (() for a group not read yet)."""
        return tuple(
            b for b in self._budgets.get(group_id, ()) if b.key_id is None or b.key_id == key_id
        )

    async def _first_read(self, group_id: int) -> None:
        """Read a group's budgets once for all its requests waiting on it (each of them fails
        with the read; one that is cancelled does not cancel it for the others). Each reading it
        on its own took a connection each: a burst of 500 requests on a new group asked a pool of
        10 for 250 at once per worker (tests/reliability/test_spend_bound.py)."""
        reading = self._reading.get(group_id)
        if reading is None:
            # One read for many requests: it may wait as long as any (the pool's timeout).
            reading = asyncio.ensure_future(self._load([group_id], wait=None))
            self._reading[group_id] = reading
            reading.add_done_callback(lambda done: self._read_done(group_id, done))
        await asyncio.shield(reading)

    def _read_done(self, group_id: int, done: asyncio.Future[None]) -> None:
        self._reading.pop(group_id, None)
        if not done.cancelled():
            done.exception()  # retrieved: its waiters were told (or were all gone)

    async def _load(self, group_ids: list[int], wait: float | None = 2.0) -> None:
        async with self.pool.connection(timeout=wait) as conn:
            cur = await conn.execute(BUDGETS_SQL, (group_ids,))
            rows = await cur.fetchall()
        found: dict[int, list[BudgetInfo]] = {g: [] for g in group_ids}
        for group_id, tz, budget_id, key_id, name, amount, window in rows:
            if budget_id is not None:
                found[group_id].append(
                    BudgetInfo(budget_id, group_id, key_id, name, amount, window, tz)
                )
        for group_id, budgets in found.items():
            self._budgets[group_id] = tuple(budgets)

    async def follow(self) -> None:
        """Re-read the budgets of the groups served lately, every BUDGETS_POLL seconds."""
        failing = False
        while not self.closing:
            await asyncio.sleep(BUDGETS_POLL)
            cutoff = time.monotonic() - BUDGETS_KEEP
            for group_id in [g for g, at in self._used.items() if at < cutoff]:
                self._used.pop(group_id, None)
                self._budgets.pop(group_id, None)
            if not self._used:
                continue
            try:
                await self._load(list(self._used))
                failing = False
            except asyncio.CancelledError:
                raise
            except (psycopg.Error, OSError) as exc:
                if not failing:
                    log.warning("budgets not re-read (keeping the last copy): %s", exc)
                failing = True

    async def load_spend(self, budget: BudgetInfo, now: float) -> int:
        """What the budget's window has spent so far, from PostgreSQL (committed usage)."""
        start = datetime.fromtimestamp(budget.bounds(now)[0], UTC)
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                BUDGET_SPEND_SQL, {"group": budget.group_id, "start": start, "key": budget.key_id}
            )
            row = await cur.fetchone()
        return int(row[0]) if row else 0


def budget_counters(group_id: int, key_id: int, now: float) -> list[str]:
    """The Redis spend counters of the hard budgets a cost of this key moves, in the windows at
    `now` (synchronous: for code outside the gateway's loop, such as the async runner)."""
    rows = (
        Budget.objects.filter(group_id=group_id, enforcement=BudgetEnforcement.HARD)
        .filter(Q(api_key__isnull=True) | Q(api_key_id=key_id))
        .values_list("id", "window", "group__time_zone")
    )
    return [
        spend_counter(budget_id, window_bounds(window, tz, now)[0])
        for budget_id, window, tz in rows
    ]

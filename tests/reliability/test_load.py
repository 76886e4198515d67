"""Load: measure saturation, then hold 70 % of it with 50 keys in 5 groups.

    RELIABILITY_LOAD_SECONDS=120 python -m portal.devstack test tests/reliability/test_load.py -s

The rate is held for 2 minutes (RELIABILITY_LOAD_SECONDS, default 120), in `make test` as well. Expected: no errors at all,
p99 reported, and the ledger reconciled to the micro-dollar: every 200 has one usage event and one
debit, and each group's balance fell by exactly the cost of its new usage.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os

import pytest

from tests.reliability.conftest import record
from tests.reliability.load import closed_loop, open_loop
from tests.reliability.stack import last_event_id, reconcile

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("invariants")]

SECONDS = float(os.environ.get("RELIABILITY_LOAD_SECONDS", "120"))
# Saturation: 32 closed-loop clients for 15 s, counted over the last 10 s only. A short burst
# overstates what the machine sustains for minutes (the first seconds ride on warm caches and an
# idle disk), and 70 % of a burst once left the open loop above capacity: queues, then 503s.
SATURATION_CLIENTS = 32
SATURATION_SECONDS = 15.0
SATURATION_WARMUP = 5.0
SHARE = 0.70
# The same 2-core machine measured 484 req/s one day and 2,325 the next (another host, or its
# CPU bursting). At 2,325 the 70 % (1,628 req/s) outran what it then sustained for two minutes:
# the queues grew and it answered 503s and timed out (CI, 2026-12-02), while 1,480 req/s held
# cleanly on 2026-11-29. Above this cap the test would measure the host's burst credit, not us.
RATE_CAP = 1200.0


def run(coro):  # type: ignore[no-untyped-def]
    """asyncio.run in a thread of its own: the session's Playwright browser (if the browser tests
    ran first) keeps an event loop running in the main thread."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def balances(stack) -> dict[int, int]:  # type: ignore[no-untyped-def]
    return dict(stack.sql("SELECT group_id, balance_micros FROM billing_creditaccount"))


def test_seventy_percent_of_saturation_without_errors(stack):  # type: ignore[no-untyped-def]
    saturation = run(closed_loop(stack.url, stack.secrets, SATURATION_CLIENTS, SATURATION_SECONDS))
    t0 = min(t for t, _ in saturation.timeline)
    steady = sum(1 for t, s in saturation.timeline if s == 200 and t >= t0 + SATURATION_WARMUP)
    saturation.rate = steady / (saturation.seconds - SATURATION_WARMUP)
    rate = max(20.0, min(RATE_CAP, SHARE * saturation.rate))

    since = last_event_id(stack)
    before = balances(stack)
    load = run(open_loop(stack.url, stack.secrets, rate, SECONDS))
    money = reconcile(stack, load.ok_ids, since)
    after = balances(stack)
    spent = dict(
        stack.sql(
            "SELECT group_id, sum(cost_micros) FROM usage_usageevent WHERE id > %s"
            " GROUP BY group_id",
            [since],
        )
    )
    record("load", {"saturation_per_s": round(saturation.rate), "saturation_p99_ms": round(saturation.pct(0.99), 1),
                    **load.summary(), **money})  # fmt: skip

    assert saturation.statuses[200] == saturation.sent, saturation.summary()
    assert load.statuses[200] == load.sent == int(rate * SECONDS), load.summary()
    assert money["missing"] == money["duplicates"] == 0, money
    assert money["new_events"] == money["debits_for_200s"] == load.sent, money
    assert len(spent) == 5
    for group_id, cost in spent.items():
        assert before[group_id] - after[group_id] == cost

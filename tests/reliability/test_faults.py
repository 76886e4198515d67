"""PostgreSQL, Redis and the web process fail under gateway load; the money stays right.

Each test holds a fixed request rate against the private deployment (tests/reliability/stack.py),
breaks one part for a while, and then checks what a customer would notice: clear 503
`service_unavailable` answers while a dependency is down (never a 500 or a hang), the service
recovering by itself, every answered request (200) recorded exactly once as a usage event with
its ledger debit, nothing charged for a refused one, and the ledger's invariants.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest

from portal.launcher import wait_for
from tests.reliability.conftest import record
from tests.reliability.load import Load, open_loop
from tests.reliability.stack import NOT_YET, Stack, charged_without_200, last_event_id, reconcile

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("invariants")]

RATE = 150  # requests per second: well under saturation, with room for the other tests' CPU
BEFORE, DOWN, AFTER = 3.0, 10.0, 10.0


def under_load(stack: Stack, fault: Callable[[], None], recover: Callable[[], None]) -> tuple[Load, float, float]:  # fmt: skip
    """Run the load; BEFORE seconds in, apply the fault, DOWN seconds later recover."""
    box: dict[str, Load] = {}
    runner = threading.Thread(
        target=lambda: box.setdefault(
            "load", asyncio.run(open_loop(stack.url, stack.secrets, RATE, BEFORE + DOWN + AFTER))
        )
    )
    runner.start()
    time.sleep(BEFORE)  # the load is under way: now break something
    down_at = time.time()
    fault()
    time.sleep(DOWN)  # the outage itself
    recover()
    up_at = time.time()
    runner.join()
    return box["load"], down_at, up_at


def recovered_after(load: Load, up_at: float) -> float:
    """Seconds from the restart to the first request after which every request got a 200."""
    last_bad = max((t for t, s in load.timeline if s != 200), default=up_at)
    return max(0.0, last_bad - up_at)


def check_dependency_outage(name: str, stack: Stack, fault, recover, *, refused: bool = True) -> dict:  # type: ignore[no-untyped-def]  # fmt: skip
    since = last_event_id(stack)
    load, down_at, up_at = under_load(stack, fault, recover)
    settled_in = stack.wait_settled()  # stream mode: what the outage held back reaches PostgreSQL
    money = reconcile(stack, load.ok_ids, since)
    during = load.statuses_between(down_at + 1, up_at)
    recovery = recovered_after(load, up_at)
    record(name, {**load.summary(), **money, "during_outage": dict(during),
                  "charged_without_200": charged_without_200(stack, load.other_ids),
                  "recovered_in_s": round(recovery, 1),
                  "settled_in_s": round(settled_in, 1)})  # fmt: skip

    # Clear answers while it is down: 503 service_unavailable (in a stream: an error event).
    assert set(load.statuses) <= {200, 503, 598}, load.summary()
    assert set(load.codes) <= {"service_unavailable", "stream_cut"}, load.codes
    if refused:
        assert during[503] > 0, during
    # It recovers by itself, and soon.
    assert recovery < AFTER - 3, (recovery, load.summary())
    # Every 200 is charged exactly once; nothing else is.
    assert money["missing"] == 0 and money["duplicates"] == 0, money
    assert money["debits_for_200s"] == money["unique_ids"] == money["answered_200"], money
    assert money["new_events"] == money["answered_200"], money
    return dict(during)


def test_postgres_stopped_for_10_seconds_under_load(stack):  # type: ignore[no-untyped-def]
    check_dependency_outage("postgres_down_10s", stack, stack.postgres.stop, stack.postgres.start)


def test_redis_stopped_for_10_seconds_under_load(stack):  # type: ignore[no-untyped-def]
    check_dependency_outage("redis_down_10s", stack, stack.redis.crash, stack.redis.start)


def test_web_process_killed_under_load(stack):  # type: ignore[no-untyped-def]
    since = last_event_id(stack)
    load, killed_at, up_at = under_load(stack, stack.kill_web, stack.start_web)
    money = reconcile(stack, load.ok_ids, since)
    record("web_sigkill", {**load.summary(), **money,
                           "recovered_in_s": round(recovered_after(load, up_at), 1)})  # fmt: skip

    # While it is dead, connections are refused (599) or cut; nothing answers wrongly.
    assert set(load.statuses) <= {200, 598, 599}, load.summary()
    # No request that got a 200 is missing from usage, none is charged twice.
    assert money["missing"] == 0 and money["duplicates"] == 0, money
    assert money["debits_for_200s"] == money["unique_ids"] == money["answered_200"], money
    # A request cut by the kill after its metering statement is charged without a 200:
    # at most the requests in flight at that moment.
    assert 0 <= money["new_events"] - money["answered_200"] <= RATE, money
    wait_for(stack.healthy, 10, "the restarted web process", retry_on=NOT_YET)


# --- the same faults with write-behind metering (GATEWAY_METERING=stream) -----------------------


@pytest.fixture
def stream_mode(stack):  # type: ignore[no-untyped-def]
    stack.set_metering("stream")
    yield stack
    stack.wait_settled()
    stack.set_metering("commit")


def test_postgres_stopped_in_stream_mode_keeps_answering_and_settles_afterwards(stream_mode):
    stack = stream_mode
    during = check_dependency_outage(
        "stream_postgres_down_10s", stack, stack.postgres.stop, stack.postgres.start,
        refused=False,
    )  # fmt: skip
    # Keys, balances and the catalogue are cached and the usage waits in Redis: most requests
    # are answered while PostgreSQL is down (a group whose cached balance expires gets 503s).
    assert during.get(200, 0) > during.get(503, 0), during


def test_redis_killed_in_stream_mode_loses_no_usage(stream_mode):
    # SIGKILL: the usage appended before each 200 survives in Redis's append-only file.
    stack = stream_mode
    check_dependency_outage("stream_redis_down_10s", stack, stack.redis.crash, stack.redis.start)


def test_web_process_killed_in_stream_mode(stream_mode):
    stack = stream_mode
    since = last_event_id(stack)
    load, killed_at, up_at = under_load(stack, stack.kill_web, stack.start_web)
    settled_in = stack.wait_settled()  # the dead workers' entries are claimed by the new ones
    money = reconcile(stack, load.ok_ids, since)
    record("stream_web_sigkill", {**load.summary(), **money, "settled_in_s": round(settled_in, 1),
                                  "recovered_in_s": round(recovered_after(load, up_at), 1)})  # fmt: skip
    assert set(load.statuses) <= {200, 598, 599}, load.summary()
    assert money["missing"] == 0 and money["duplicates"] == 0, money
    assert money["debits_for_200s"] == money["unique_ids"] == money["answered_200"], money
    assert 0 <= money["new_events"] - money["answered_200"] <= RATE, money

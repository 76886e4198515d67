"""Write-behind metering (GATEWAY_METERING=stream): the usage stream and its settlement.

The end-to-end behaviour in stream mode (prices, streaming, concurrency on a small balance, spend
limits, top-ups) is covered by the `both_modes` tests in test_gateway.py. These drive the Store
directly, to stop and start its settler at the moments that matter.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
import psycopg
import pytest

from billing import balance_cache
from billing.models import CreditAccount, LedgerEntry
from billing.services import ledger_post
from core.redis import get_redis
from gateway import settlement
from gateway.metering import Metering
from gateway.store import DEAD_LETTERS, SETTLERS, UNSETTLED, USAGE_STREAM, KeyInfo, Store
from keys.services import api_key_create
from tests.factories import GroupFactory
from usage.catalogue import catalogue_sync
from usage.models import AIModel, UsageEvent

pytestmark = pytest.mark.django_db(transaction=True)

COST = 28_207


@pytest.fixture(autouse=True)
def stream_mode(settings):  # type: ignore[no-untyped-def]
    settings.GATEWAY_METERING = "stream"
    settings.GATEWAY_SETTLE_INTERVAL = 0.01
    get_redis().delete(USAGE_STREAM, UNSETTLED, DEAD_LETTERS)
    catalogue_sync()
    yield
    get_redis().delete(USAGE_STREAM, UNSETTLED, DEAD_LETTERS)


@pytest.fixture
def funded():  # type: ignore[no-untyped-def]
    group = GroupFactory()
    ledger_post(group=group, amount_micros=1_000_000, kind="purchase", reference="pi_wb")
    key = api_key_create(group=group, name="K").key
    info = KeyInfo(key.pk, group.pk, key.name, key.last_four, None, None)
    SONAR["id"] = AIModel.objects.get(name="sonar").pk
    return group, info


SONAR: dict[str, int] = {}


def usage(info: KeyInfo, request_id: str, group_id: int | None = None) -> dict[str, Any]:
    return {
        "request_id": request_id, "group_id": group_id or info.group_id, "key_id": info.id,
        "model_id": SONAR["id"], "prompt_tokens": 10,
        "completion_tokens": 20, "citation_tokens": 0, "reasoning_tokens": 0,
        "search_queries": 0, "context_size": "low", "input": 10, "output": 20, "citation": 0,
        "reasoning": 0, "search": 0, "request": COST - 30, "total": COST, "streamed": False,
        "latency_ms": 3, "created": time.time(),
    }  # fmt: skip


def run(body: Callable[[Store], Awaitable[Any]], *, settler: bool = False) -> Any:
    """Run `body` with a Store on its own event loop (in a thread: the browser tests leave a
    loop running on this one). With `settler`, the store's settler runs meanwhile."""

    async def main() -> Any:
        store = Store()
        await store.open(settler=settler)
        try:
            return await body(store)
        finally:
            await store.close()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, main()).result(timeout=120)


async def wait_settled(timeout: float = 10.0) -> None:
    # In a thread: the settler runs on this event loop meanwhile.
    await asyncio.to_thread(settlement.wait_settled, get_redis(), timeout)


def balance(group) -> int:  # type: ignore[no-untyped-def]
    return CreditAccount.objects.get(group=group).balance_micros


def test_usage_waits_in_the_stream_and_a_reloaded_balance_counts_it(funded):
    group, info = funded

    async def admit(store: Store) -> int:
        model = (await store.models())["sonar"]
        return (
            await store.admit(info, store.catalogue.rate_limit(model, None), 0.0)
        ).balance_micros

    async def meter_three(store: Store) -> None:
        assert await admit(store) == 1_000_000  # the balance is now cached in Redis
        for i in range(3):
            await store.meter(info, usage(info, f"wb-{i}"))

    run(meter_three)  # no settler: the usage is only in the stream
    r = get_redis()
    assert r.xlen(USAGE_STREAM) == 3
    assert int(r.hget(UNSETTLED, f"g:{group.pk}")) == 3 * COST
    assert UsageEvent.objects.count() == 0
    assert balance(group) == 1_000_000  # PostgreSQL has not seen it yet

    # The cached balance moved at once; re-read from PostgreSQL (a purchase or the TTL drops
    # the cache), it still subtracts what the stream owes.
    assert int(r.hget(balance_cache.key(group.pk), "bal")) == 1_000_000 - 3 * COST
    balance_cache.forget(group_id=group.pk)
    assert run(admit) == 1_000_000 - 3 * COST

    async def settle(store: Store) -> None:
        await wait_settled()

    run(settle, settler=True)
    assert sorted(UsageEvent.objects.values_list("request_id", flat=True)) == [
        "wb-0", "wb-1", "wb-2",
    ]  # fmt: skip
    assert LedgerEntry.objects.filter(kind="usage").count() == 3
    assert balance(group) == 1_000_000 - 3 * COST
    assert r.hget(UNSETTLED, f"g:{group.pk}") is None  # nothing owed any more
    balance_cache.forget(group_id=group.pk)
    assert run(admit) == 1_000_000 - 3 * COST  # and not subtracted twice


def test_a_settler_that_died_after_its_commit_is_replaced_and_nothing_is_charged_twice(
    funded, monkeypatch
):
    group, info = funded
    r = get_redis()

    async def die_after_commit(store: Store) -> None:
        for i in range(5):
            await store.meter(info, usage(info, f"crash-{i}"))
        await store.settler.prepare_stream()
        # A settler reads the entries and commits them, then dies before acknowledging.
        read = await store.redis.xreadgroup(SETTLERS, "dead-worker", {USAGE_STREAM: ">"})
        entries = read[0][1]
        assert len(entries) == 5
        await store.metering.write_many([orjson.loads(f[b"d"]) for _, f in entries])

    run(die_after_commit)
    assert UsageEvent.objects.count() == 5
    assert balance(group) == 1_000_000 - 5 * COST
    assert r.xpending(USAGE_STREAM, SETTLERS)["pending"] == 5

    # Another worker claims the dead settler's entries once they have been idle long enough.
    monkeypatch.setattr(settlement, "CLAIM_IDLE_MS", 50)
    monkeypatch.setattr(settlement, "CLAIM_EVERY", 0.05)

    async def take_over(store: Store) -> None:
        await asyncio.sleep(0.1)
        await wait_settled()

    run(take_over, settler=True)
    assert UsageEvent.objects.count() == 5  # the second insert of each was a no-op
    assert LedgerEntry.objects.filter(kind="usage").count() == 5
    assert balance(group) == 1_000_000 - 5 * COST
    assert r.xpending(USAGE_STREAM, SETTLERS)["pending"] == 0
    assert r.hget(UNSETTLED, f"g:{group.pk}") is None  # owed once, released once


def test_postgresql_unavailable_while_settling_keeps_the_usage_until_it_is_back(
    funded, monkeypatch
):
    group, info = funded
    failures = {"left": 3}
    real_write = Metering._write

    async def flaky_write(self: Metering, rows: list[dict[str, Any]]) -> None:
        if failures["left"]:
            failures["left"] -= 1
            raise psycopg.OperationalError("connection refused (simulated outage)")
        await real_write(self, rows)

    monkeypatch.setattr(Metering, "_write", flaky_write)

    async def meter_and_settle(store: Store) -> None:
        for i in range(4):
            await store.meter(info, usage(info, f"outage-{i}"))
        await wait_settled(timeout=20)

    run(meter_and_settle, settler=True)
    assert failures["left"] == 0  # it did fail three times, then recovered
    assert UsageEvent.objects.count() == 4
    assert balance(group) == 1_000_000 - 4 * COST


def test_a_row_postgresql_refuses_for_good_is_kept_aside_and_the_rest_settle(funded):
    group, info = funded

    async def meter(store: Store) -> None:
        await store.meter(info, usage(info, "good-1"))
        await store.meter(info, usage(info, "orphan", group_id=2_000_000_000))  # no such group
        await store.meter(info, usage(info, "good-2"))
        await wait_settled()

    run(meter, settler=True)
    assert sorted(UsageEvent.objects.values_list("request_id", flat=True)) == ["good-1", "good-2"]
    assert balance(group) == 1_000_000 - 2 * COST
    dead = get_redis().xrange(DEAD_LETTERS)
    assert len(dead) == 1
    kept = orjson.loads(dead[0][1][b"d"])
    assert kept["request_id"] == "orphan" and kept["total"] == COST
    assert b"foreign key" in dead[0][1][b"error"] or b"violates" in dead[0][1][b"error"]
    assert get_redis().hget(UNSETTLED, "g:2000000000") is None


def test_redis_failing_at_metering_time_commits_to_postgresql_instead(funded, monkeypatch):
    group, info = funded
    import redis

    async def broken(self: Metering, items: list) -> list:
        raise redis.ConnectionError("simulated")

    monkeypatch.setattr(Metering, "_stream_many", broken)

    async def meter(store: Store) -> None:
        await store.meter(info, usage(info, "fallback"))

    run(meter)
    assert UsageEvent.objects.get().request_id == "fallback"
    assert balance(group) == 1_000_000 - COST


def test_an_agent_api_request_settles_with_its_cache_counts_and_tool_fees(funded):
    from tests.gateway.test_metering import AGENT_TOOLS

    group, info = funded
    model_id = AIModel.objects.get(name="perplexity/sonar").pk
    params = {
        **usage(info, "wb-agent"), "model_id": model_id, "api": "agent", "prompt_tokens": 1_000,
        "completion_tokens": 200, "cache_read_tokens": 400, "cache_write_tokens": 100,
        "input": 125, "output": 500, "request": 0, "cache_read": 25, "cache_write": 25,
        "tools": 5_500, "tool_calls": AGENT_TOOLS, "total": 6_175,
    }  # fmt: skip

    async def meter_and_settle(store: Store) -> None:
        await store.meter(info, params)
        await store.meter(info, params)  # a retry of the same request
        await wait_settled()

    run(meter_and_settle, settler=True)
    event = UsageEvent.objects.get(request_id="wb-agent")
    assert event.api == "agent"
    assert (event.cache_read_tokens, event.cache_write_tokens) == (400, 100)
    assert (event.cache_read_cost_micros, event.cache_write_cost_micros) == (25, 25)
    assert event.tools_cost_micros == 5_500
    assert event.tool_calls == AGENT_TOOLS
    assert LedgerEntry.objects.filter(reference="usage:wb-agent").count() == 1
    assert balance(group) == 1_000_000 - 6_175

"""Issue 19's concurrency proof at its scale, in real processes: the overdraft bound holds.

    python -m portal.devstack test tests/reliability/test_spend_bound.py -q -s

Against the private deployment (tests/reliability/stack.py: uvicorn with 2 worker processes, its
own PostgreSQL and Redis) and a second fake upstream that holds every chat completion open for
STREAM_SECONDS (benchmarks/gateway/servers.py --chunk-delay):

1. 500 concurrent long streams over 20 keys against a group holding exactly $5: every answer is a
   200 ending with [DONE] or a 402 insufficient_credits; every 200 has one usage event and one
   debit, no 402 any; the final balance is $5 − the events' cost and ≥ −the bound.
2. 200 concurrent requests on one key with a hard monthly budget: its spend never passes the
   budget by more than the bound; the refusals are 402 budget_exceeded.

The model (tests/reliability/seed.py SPEND_MODEL) costs 50,000 µ$ a request, and the requests
reserve exactly that (40 input tokens estimated from the messages, max_tokens = the 120 tokens
the upstream reports): each admitted request costs all of its reservation, the worst case for
the bound. So $5 pays for exactly 100 requests, whatever the order they are admitted and
metered in, and the other 400 must be refused.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import aiohttp
import orjson
import pytest
import redis

from gateway.admission import RESERVATION_DATA, RESERVATIONS, RESERVED
from gateway.estimates import text_tokens
from gateway.settlement import owed_by_group
from portal.launcher import stop_groups, wait_for
from tests.reliability.conftest import record
from tests.reliability.stack import Stack, charged_without_200

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("invariants")]

COST = 50_000  # µ$ a request of SPEND_MODEL: 40 × 25 + 120 × 400 + the 1,000 fee
MAX_TOKENS = 120  # what the fake upstream reports: the reservation is exactly COST
CREDIT = 5_000_000  # $5
KEYS = 20
STREAMS = 500
BUDGET = 10 * COST + 1_000  # room for ten requests
BUDGET_REQUESTS = 200
CHUNK_DELAY = 0.4  # the upstream's wait before each of a stream's 5 chunks after the first
STREAM_SECONDS = 5 * CHUNK_DELAY
# 130 characters: the messages are 160 characters of JSON, estimated at exactly 40 tokens.
MESSAGES = [{"role": "user", "content": "Six times seven? " * 7 + "Answer now."}]


@dataclass
class Answer:
    status: int
    request_id: str | None
    body: bytes
    sent: float
    headers_at: float
    ended: float

    @property
    def code(self) -> str | None:
        try:
            return orjson.loads(self.body)["error"]["code"]
        except Exception:
            return None


@dataclass
class Seeded:
    model: str
    group_id: int
    secrets: list[str]
    budget_group_id: int
    budget_key_id: int
    budget_secret: str
    budget_id: int
    ready_s: float = 0.0  # seconds to start the upstream, seed and see the model listed


@pytest.fixture(scope="module")
def seeded(stack: Stack) -> Iterator[Seeded]:
    began = time.monotonic()
    upstream, url = stack.start_upstream(chunk_delay=CHUNK_DELAY)
    try:
        started = time.monotonic()
        seeded = Seeded(**stack.seed_spend(url, credit=CREDIT, keys=KEYS, budget=BUDGET))
        # A worker re-reads the model catalogue when its copy is older than CATALOGUE_TTL (5 s),
        # in the one request that finds it old (the others meanwhile use the old copy: a model
        # added a moment ago is a 404 for them). Each copy read before the model existed is out
        # of date after 5 s: one request at a time, on a new connection each (either worker),
        # until 20 in a row list the model (charged nothing).
        time.sleep(max(0.0, started + 5.5 - time.monotonic()))
        wait_for(lambda: listed(stack, seeded, 20), 30, "the model in every worker's catalogue")
        seeded.ready_s = time.monotonic() - began
        yield seeded
    finally:
        stop_groups([upstream], grace=5)


def listed(stack: Stack, seeded: Seeded, times: int) -> bool:
    for _ in range(times):
        req = urllib.request.Request(
            f"{stack.url}/v1/models", headers={"Authorization": f"Bearer {seeded.secrets[0]}"}
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            if seeded.model not in {m["id"] for m in orjson.loads(resp.read())["data"]}:
                return False
    return True


def run(coro):  # type: ignore[no-untyped-def]
    """asyncio.run in a thread of its own (as test_load's: a browser test's loop may be running)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def all_at_once(url: str, model: str, secrets: list[str], count: int, stream: bool) -> list[Answer]:  # fmt: skip
    """`count` chat completions over `secrets` in turn, all sent at once (one connection each)."""
    body = orjson.dumps(
        {"model": model, "stream": stream, "max_tokens": MAX_TOKENS, "messages": MESSAGES}
    )
    start = asyncio.Event()

    async def one(s: aiohttp.ClientSession, key: str) -> Answer:
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        await start.wait()
        sent = time.monotonic()
        async with s.post(f"{url}/v1/chat/completions", data=body, headers=headers) as r:
            headers_at = time.monotonic()
            raw = await r.read()
            return Answer(r.status, r.headers.get("x-request-id"), raw, sent, headers_at,
                          time.monotonic())  # fmt: skip

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=60)
    ) as s:
        tasks = [asyncio.create_task(one(s, secrets[i % len(secrets)])) for i in range(count)]
        await asyncio.sleep(0.05)  # every task is waiting on the event
        start.set()
        return await asyncio.gather(*tasks)


def most_at_once(answers: list[Answer]) -> int:
    """The most of these requests in flight at the same moment (sent to last byte)."""
    edges = sorted([(a.sent, 1) for a in answers] + [(a.ended, -1) for a in answers])
    top = now = 0
    for _, step in edges:
        now += step
        top = max(top, now)
    return top


def waits_ms(answers: list[Answer]) -> dict[str, float]:
    """p50 / p99 / max milliseconds from sending a request to its answer's headers."""
    waits = sorted((a.headers_at - a.sent) * 1000 for a in answers)
    pick = lambda q: round(waits[min(len(waits) - 1, int(len(waits) * q))])  # noqa: E731
    return {"p50": pick(0.5), "p99": pick(0.99), "max": pick(1.0)}


def bound(stack: Stack) -> int:
    return int(stack.env.get("GATEWAY_OVERDRAFT_BOUND_MICROS", "0"))  # settings' default: 0


def wait_unreserved(
    stack: Stack, fields: list[str], request_ids: list[str], timeout: float = 5.0
) -> dict[str, int]:
    """Wait for this test's reservations to be given back; what is still held after `timeout`:
    the reserved totals of the group and budget `fields` in `portal:res`, and how many of these
    requests are still listed. (Only ours: a
    request cut by an earlier test's SIGKILL keeps its reservation until it expires.)"""
    client = redis.Redis.from_url(stack.redis.url)
    rids = [r for r in request_ids if r]
    deadline = time.monotonic() + timeout
    while True:
        held = {
            "reserved_micros": sum(int(client.hget(RESERVED, f) or 0) for f in fields),
            "requests": sum(client.zscore(RESERVATIONS, r) is not None for r in rids),
            "data": sum(client.hexists(RESERVATION_DATA, r) for r in rids),
        }
        if not any(held.values()) or time.monotonic() > deadline:
            return held
        time.sleep(0.05)


def charged_once(stack: Stack, ok_ids: list[str]) -> tuple[int, int, int]:
    """(distinct 200s with a usage event, usage events, usage debits) for these request ids."""
    ((found, events),) = stack.sql(
        "SELECT count(DISTINCT request_id), count(*) FROM usage_usageevent"
        " WHERE request_id = ANY(%s)",
        [ok_ids],
    )
    ((debits,),) = stack.sql(
        "SELECT count(*) FROM billing_ledgerentry WHERE kind = 'usage' AND reference = ANY(%s)",
        [[f"usage:{rid}" for rid in ok_ids]],
    )
    return found, events, debits


def test_500_long_streams_over_20_keys_and_2_workers_against_5_dollars(stack, seeded):  # type: ignore[no-untyped-def]
    assert text_tokens(MESSAGES) == 40  # the estimate of the 40 prompt tokens reported
    began = time.monotonic()
    answers = run(all_at_once(stack.url, seeded.model, seeded.secrets, STREAMS, stream=True))
    took = time.monotonic() - began
    settled_in = stack.wait_settled()
    held = wait_unreserved(stack, [owed_by_group(seeded.group_id)], [a.request_id for a in answers])

    statuses = Counter(a.status for a in answers)
    ok = [a for a in answers if a.status == 200]
    refused = [a for a in answers if a.status == 402]
    busy = [a for a in answers if a.status == 503]
    ok_ids = [a.request_id for a in ok if a.request_id]
    other_ids = {a.request_id: a.status for a in answers if a.status != 200 and a.request_id}
    found, events, debits = charged_once(stack, ok_ids)
    ((spent, group_events),) = stack.sql(
        "SELECT COALESCE(sum(cost_micros), 0), count(*) FROM usage_usageevent WHERE group_id = %s",
        [seeded.group_id],
    )
    ((balance,),) = stack.sql(
        "SELECT balance_micros FROM billing_creditaccount WHERE group_id = %s", [seeded.group_id]
    )
    charged_402 = charged_without_200(stack, other_ids)
    record("spend_bound_streams", {
        "streams": STREAMS, "keys": KEYS, "credit_micros": CREDIT, "cost_micros": COST,
        "bound_micros": bound(stack), "statuses": dict(statuses),
        "error_codes": dict(Counter(a.code for a in answers if a.status != 200)),
        "200s_in_flight_at_once": most_at_once(ok), "stream_seconds": STREAM_SECONDS,
        "headers_after_ms": waits_ms(answers),
        "seconds": round(took, 1), "spent_micros": int(spent), "final_balance_micros": balance,
        "charged_without_200": charged_402, "settled_in_s": round(settled_in, 2),
        "ready_s": round(seeded.ready_s, 1),
    })  # fmt: skip

    # Every answer is a 200 or a 402 insufficient_credits (a 503 only if a worker's connection
    # pool ran dry, never charged: it is in charged_without_200 below).
    assert len(ok) + len(refused) + len(busy) == STREAMS and len(busy) <= 5, statuses
    assert {a.code for a in refused} == {"insufficient_credits"}, statuses
    # The $5 ran out part-way: it pays for exactly 100 requests (a 503 may have held one slot).
    assert CREDIT // COST - len(busy) <= len(ok) <= CREDIT // COST, statuses
    assert len(refused) >= STREAMS - CREDIT // COST - len(busy)
    # The streams really were concurrent: most of the 200s were streaming at the same moment.
    assert most_at_once(ok) >= len(ok) // 2, most_at_once(ok)
    # Every 200 is a whole stream, charged exactly once; nothing else is charged.
    assert all(a.body.rstrip().endswith(b"data: [DONE]") for a in ok)
    assert len(set(ok_ids)) == len(ok)
    assert found == events == debits == len(ok) == group_events, (found, events, debits)
    assert charged_402 == {}, charged_402
    # The balance: exactly $5 less what the events cost, never below −bound.
    assert spent == len(ok) * COST
    assert balance == CREDIT - spent
    assert balance >= -bound(stack)
    # Every reservation was given back.
    assert not any(held.values()), held


def test_a_key_budget_under_200_concurrent_requests_holds_to_the_bound(stack, seeded):  # type: ignore[no-untyped-def]
    secrets = [seeded.budget_secret]
    began = time.monotonic()
    answers = run(all_at_once(stack.url, seeded.model, secrets, BUDGET_REQUESTS, stream=False))
    took = time.monotonic() - began
    stack.wait_settled()
    fields = [owed_by_group(seeded.budget_group_id), f"b:{seeded.budget_id}"]
    held = wait_unreserved(stack, fields, [a.request_id for a in answers])

    statuses = Counter(a.status for a in answers)
    ok = [a for a in answers if a.status == 200]
    refused = [a for a in answers if a.status == 402]
    ok_ids = [a.request_id for a in ok if a.request_id]
    other_ids = {a.request_id: a.status for a in answers if a.status != 200 and a.request_id}
    found, events, debits = charged_once(stack, ok_ids)
    ((spent, key_events),) = stack.sql(
        "SELECT COALESCE(sum(cost_micros), 0), count(*) FROM usage_usageevent"
        " WHERE api_key_id = %s",
        [seeded.budget_key_id],
    )
    charged_402 = charged_without_200(stack, other_ids)
    record("spend_bound_key_budget", {
        "requests": BUDGET_REQUESTS, "budget_micros": BUDGET, "cost_micros": COST,
        "bound_micros": bound(stack), "statuses": dict(statuses),
        "error_codes": dict(Counter(a.code for a in answers if a.status != 200)),
        "200s_in_flight_at_once": most_at_once(ok), "seconds": round(took, 1),
        "headers_after_ms": waits_ms(answers),
        "spent_micros": int(spent), "charged_without_200": charged_402,
    })  # fmt: skip

    assert len(ok) + len(refused) == BUDGET_REQUESTS, statuses
    assert {a.code for a in refused} == {"budget_exceeded"}, statuses
    assert 1 <= len(ok) <= BUDGET // COST, statuses
    assert found == events == debits == len(ok) == key_events, (found, events, debits)
    assert charged_402 == {}, charged_402
    assert spent == len(ok) * COST
    assert spent <= BUDGET + bound(stack)
    assert not any(held.values()), held

"""The Search API (`POST /search`, `/v1/search`) through the gateway, with the official SDK.

Each priced call checks what a customer would: the group's balance moved by exactly the search
type's request fee (web $5/1K = 5,000 micros, fast $1/1K = 1,000 micros), equal to the
`usage.cost.total_cost` the answer reported; each refused call that nothing was written or charged.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import perplexity
import pytest
from aiohttp import web

from billing.models import CreditAccount, LedgerEntry
from gateway import catalogue
from keys.services import api_key_create
from portal.launcher import free_port
from tests.factories import GroupFactory
from tests.gateway.conftest import both_modes
from usage.models import AIModel, RateLimit, UsageEvent

pytestmark = pytest.mark.django_db(transaction=True)

QUERY = "What is the tallest building in the world today?"
WEB, FAST = 5_000, 1_000  # micros per request (usage/catalogue.toml)


def balance(group) -> int:  # type: ignore[no-untyped-def]
    return CreditAccount.objects.get(group=group).balance_micros


def client(gateway, key: str) -> perplexity.Perplexity:  # type: ignore[no-untyped-def]
    return perplexity.Perplexity(base_url=gateway.url, api_key=key, max_retries=0)


def reported(answer) -> int:  # type: ignore[no-untyped-def]
    """`usage.cost.total_cost` of a search answer (an extra field the SDK keeps), in micros."""
    return round(answer.model_extra["usage"]["cost"]["total_cost"] * 1_000_000)


# --- the official SDK ---------------------------------------------------------------------------


@both_modes
def test_sdk_web_fast_and_list_queries_move_the_balance_by_the_request_fee(
    gateway, funded_group, api_key
):  # type: ignore[no-untyped-def]
    ppx = client(gateway, api_key)

    before = balance(funded_group)
    answer = ppx.search.create(query=QUERY, max_results=3)
    assert len(answer.results) == 3
    first = answer.results[0]
    assert first.title and first.url.startswith("https://") and first.snippet and first.date
    assert answer.id.startswith("srch_") and answer.server_time is None
    assert reported(answer) == WEB
    gateway.settled()
    assert balance(funded_group) == before - WEB

    before = balance(funded_group)
    fast = ppx.search.create(query=QUERY, search_type="fast", display_server_time=True)
    assert len(fast.results) == 10 and fast.server_time  # the default max_results
    assert reported(fast) == FAST
    gateway.settled()
    assert balance(funded_group) == before - FAST

    # A list query: one list of results per query, one request's fee whatever the count.
    before = balance(funded_group)
    many = ppx.search.create(query=["tallest building", "longest bridge"], max_results=2)
    assert [len(r) for r in many.results] == [2, 2]
    assert "bridge" in many.results[1][0].url and "building" in many.results[0][0].url
    assert reported(many) == WEB
    gateway.settled()
    assert balance(funded_group) == before - WEB

    # The same answer for the same query (the simulator is deterministic), and via /v1/search.
    with gateway.client(api_key) as c:
        again = c.post("/v1/search", json={"query": QUERY, "max_results": 3})
    assert again.status_code == 200 and again.headers["x-request-id"]
    assert again.json()["results"] == answer.model_dump()["results"]
    gateway.settled()

    events = list(UsageEvent.objects.order_by("id").select_related("model"))
    assert [(e.api, e.model.name, e.cost_micros) for e in events] == [
        ("search", "search-web", WEB),
        ("search", "search-fast", FAST),
        ("search", "search-web", WEB),
        ("search", "search-web", WEB),
    ]
    for e in events:
        assert e.prompt_tokens == e.completion_tokens == e.search_queries == 0
        assert e.request_cost_micros == e.cost_micros and not e.streamed
    assert LedgerEntry.objects.filter(kind="usage").count() == 4


def test_people_search_and_the_filters_reach_the_simulator(gateway, funded_group, api_key):
    ppx = client(gateway, api_key)
    before = balance(funded_group)
    people = ppx.search.create(query="robotics researchers in Zurich", search_type="people",
                               max_results=30)  # fmt: skip
    assert len(people.results) == 30  # above 20: people search only
    assert all("linkedin.com/in/" in r.url for r in people.results)
    assert reported(people) == WEB  # people: $5/1K, our choice (docs/gateway.md)
    only = ppx.search.create(
        query=QUERY, search_domain_filter=["nature.com", "arxiv.org", "-arxiv.org"],
        search_recency_filter="week", search_language_filter=["en"], country="US",
        search_after_date_filter="03/01/2025", search_mode="academic",
        search_context_size="high", max_tokens=2000, max_tokens_per_page=512,
    )  # fmt: skip
    assert {r.url.split("/")[2] for r in only.results} == {"nature.com"}
    assert balance(funded_group) == before - 2 * WEB
    assert UsageEvent.objects.get(model__name="search-web").search_context_size == "high"


def test_search_types_are_not_models_to_call(gateway, api_key):
    with gateway.client(api_key) as c:
        names = {m["id"] for m in c.get("/v1/models").json()["data"]}
        assert "sonar" in names and not {"search-web", "search-fast"} & names
        chat = c.post(
            "/chat/completions",
            json={"model": "search-web", "messages": [{"role": "user", "content": "x"}]},
        )
    assert chat.status_code == 404 and chat.json()["error"]["code"] == "model_not_found"


# --- refusals: never written, never charged -----------------------------------------------------


BAD = [
    ({"query": ["q"] * 6}, "query"),  # over-long list: at most 5 queries
    ({"query": ""}, "query"),
    ({"query": "   "}, "query"),
    ({"query": []}, "query"),
    ({"query": ["fine", ""]}, "query[1]"),
    ({"query": ["fine", 7]}, "query[1]"),
    ({"query": 42}, "query"),
    ({"max_results": 21}, "max_results"),
    ({"max_results": 0}, "max_results"),
    ({"max_results": "10"}, "max_results"),
    ({"max_results": True}, "max_results"),
    ({"max_results": 51, "search_type": "people"}, "max_results"),
    ({"search_type": "images"}, "search_type"),
    ({"search_type": 1}, "search_type"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens_per_page": 1_000_001}, "max_tokens_per_page"),
    ({"country": "USA"}, "country"),
    ({"search_mode": "news"}, "search_mode"),
    ({"search_recency_filter": "decade"}, "search_recency_filter"),
    ({"search_context_size": "huge"}, "search_context_size"),
    ({"search_domain_filter": [f"d{i}.com" for i in range(21)]}, "search_domain_filter"),
    ({"search_domain_filter": "nature.com"}, "search_domain_filter"),
    ({"search_domain_filter": ["x" * 254]}, "search_domain_filter[0]"),
    ({"search_language_filter": ["eng"]}, "search_language_filter[0]"),
    ({"search_after_date_filter": "2025-03-01"}, "search_after_date_filter"),
    ({"last_updated_before_filter": "02/30/2025"}, "last_updated_before_filter"),
    ({"search_before_date_filter": "3/1/2025"}, "search_before_date_filter"),
    ({"display_server_time": "yes"}, "display_server_time"),
]


@pytest.mark.parametrize(("extra", "param"), BAD, ids=[p for _, p in BAD])
def test_bad_input_is_a_400_naming_the_field_and_charges_nothing(
    gateway, funded_group, api_key, extra, param
):  # type: ignore[no-untyped-def]
    before = balance(funded_group)
    with pytest.raises(perplexity.BadRequestError) as exc:
        # extra_body goes past the SDK's own validation (it overrides the validated body).
        client(gateway, api_key).search.create(query=QUERY, extra_body=extra)
    error = exc.value.response.json()["error"]
    assert error["param"] == param and error["code"] == "invalid_request_error"
    gateway.settled()
    assert balance(funded_group) == before
    assert not UsageEvent.objects.exists()


def test_a_missing_query_wrong_method_and_unknown_paths(gateway, api_key):
    with gateway.client(api_key) as c:
        missing = c.post("/search", json={"max_results": 3})
        assert missing.status_code == 400 and missing.json()["error"]["param"] == "query"
        for path in ("/search", "/v1/search"):
            wrong = c.get(path)
            assert (
                wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"
            )
        assert c.post("/search/more", json={"query": "x"}).status_code == 404
        not_json = c.post("/search", content=b"[1, 2]")
        assert not_json.status_code == 400
    with httpx.Client(base_url=gateway.url) as anonymous:
        assert anonymous.post("/search", json={"query": "x"}).status_code == 401
    assert not UsageEvent.objects.exists()


def test_a_group_without_credits_gets_a_402_and_is_not_billed(gateway):
    group = GroupFactory()
    broke = api_key_create(group=group, name="Broke").secret
    with pytest.raises(perplexity.APIStatusError) as exc:
        client(gateway, broke).search.create(query=QUERY)
    assert exc.value.status_code == 402
    assert exc.value.response.json()["error"]["code"] == "insufficient_credits"
    assert not UsageEvent.objects.exists()
    assert not LedgerEntry.objects.filter(kind="usage").exists()


def test_a_rate_limited_search_is_a_429_and_not_billed(gateway, funded_group, api_key, monkeypatch):
    monkeypatch.setattr(catalogue, "CATALOGUE_TTL", 0)  # re-read on every request
    # The group's `search` family: 3 a minute at every tier (Perplexity's is 50 a second).
    RateLimit.objects.filter(name="search").update(per_minute=[3] * 6, per_second=None)
    before = balance(funded_group)
    statuses = []
    with gateway.client(api_key) as c:
        for _ in range(7):  # 3 + 1, twice: a minute's window may turn between two of them
            answer = c.post("/search", json={"query": QUERY})
            statuses.append(answer.status_code)
            if answer.status_code == 429:
                assert answer.headers["retry-after"]
                assert answer.json()["error"]["code"] == "rate_limit_exceeded"
    assert 429 in statuses and set(statuses) <= {200, 429}
    assert UsageEvent.objects.count() == statuses.count(200)
    assert balance(funded_group) == before - WEB * statuses.count(200)


def test_a_disabled_search_type_is_a_400(gateway, api_key, monkeypatch):
    monkeypatch.setattr(catalogue, "CATALOGUE_TTL", 0)  # re-read on every request
    AIModel.objects.filter(name="search-fast").update(enabled=False)
    with gateway.client(api_key) as c:
        refused = c.post("/search", json={"query": "x", "search_type": "fast"})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "search_type"
    assert not UsageEvent.objects.exists()


# --- a real upstream (Perplexity's shape) -------------------------------------------------------


@dataclass
class FakeSearch:
    url: str
    hits: list[dict] = field(default_factory=list)
    auth: list[str] = field(default_factory=list)
    mode: str = "ok"  # ok | fail | invalid | empty


@pytest.fixture
def search_upstream() -> Iterator[FakeSearch]:
    """A Perplexity-shaped Search API on loopback (`POST /search`)."""
    port = free_port()
    fake = FakeSearch(url=f"http://127.0.0.1:{port}")

    async def search(request: web.Request) -> web.Response:
        body = await request.json()
        fake.hits.append(body)
        fake.auth.append(request.headers.get("Authorization", ""))
        if fake.mode == "fail":
            return web.json_response({"error": "boom"}, status=500)
        if fake.mode == "invalid":  # FastAPI's validation answer
            return web.json_response(
                {"detail": [{"loc": ["body", "query"], "msg": "bad", "type": "value_error"}]},
                status=422,
            )
        if fake.mode == "empty":
            return web.json_response({"id": "x"})
        page = {"title": "T", "url": "https://example.com/a", "snippet": "S",
                "date": "2025-03-20", "last_updated": "2025-09-19"}  # fmt: skip
        return web.json_response({"id": "srch_up", "results": [page], "server_time": None,
                                  "usage": {"cost": {"total_cost": 99}}})  # fmt: skip

    app = web.Application()
    app.router.add_post("/search", search)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None)

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        loop.run_forever()

    threading.Thread(target=run, daemon=True).start()
    time.sleep(0.1)
    yield fake
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(5)
    loop.call_soon_threadsafe(loop.stop)


def test_an_upstream_gets_the_known_parameters_and_its_cost_is_replaced(
    gateway, funded_group, api_key, search_upstream, monkeypatch
):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("PPLX_TEST_KEY", "pplx-upstream-secret")
    monkeypatch.setattr(catalogue, "CATALOGUE_TTL", 0)  # re-read on every request
    AIModel.objects.filter(name="search-fast").update(
        upstream_base_url=search_upstream.url, upstream_api_key_env="PPLX_TEST_KEY"
    )
    ppx = client(gateway, api_key)
    before = balance(funded_group)
    answer = ppx.search.create(query=QUERY, search_type="fast", max_results=4,
                               extra_body={"not_a_parameter": 1})  # fmt: skip
    assert answer.id == "srch_up" and answer.results[0].title == "T"
    assert reported(answer) == FAST  # ours, not the upstream's
    assert balance(funded_group) == before - FAST
    assert search_upstream.hits == [{"query": QUERY, "search_type": "fast", "max_results": 4}]
    assert search_upstream.auth == ["Bearer pplx-upstream-secret"]

    for mode, status in (("fail", 502), ("invalid", 422), ("empty", 502)):
        search_upstream.mode = mode
        with pytest.raises(perplexity.APIStatusError) as exc:
            ppx.search.create(query=QUERY, search_type="fast")
        assert exc.value.status_code == status, mode
    assert balance(funded_group) == before - FAST
    assert UsageEvent.objects.count() == 1

"""Rate limits as Perplexity counts them: per API group (all its keys, all gateway workers) and
per API family, at the group's usage tier, from the catalogue's [limits] tables."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from django.core.asgi import get_asgi_application

from billing.models import CreditAccount
from billing.services import ledger_post
from core.api_errors import GatewayError
from gateway.app import GatewayApp
from gateway.asgi import wrap
from gateway.store import KeyInfo, Store
from keys.services import api_key_create
from tests.factories import GroupFactory
from tests.gateway.conftest import _serve
from usage.catalogue import catalogue_sync
from usage.models import RateLimit, UsageEvent

pytestmark = pytest.mark.django_db(transaction=True)


def balance(group) -> int:  # type: ignore[no-untyped-def]
    return CreditAccount.objects.get(group=group).balance_micros


def fresh_window(seconds: int = 60, margin: float = 15.0) -> None:
    """Wait for the next window when this one ends within `margin` seconds (no test straddles
    a window's boundary by accident)."""
    left = seconds - time.time() % seconds
    if left < margin:
        time.sleep(left + 0.05)


def limit(name: str, per_minute=None, per_second=None) -> None:  # type: ignore[no-untyped-def]
    """Set a family's limits before the gateway's first request reads the catalogue."""
    RateLimit.objects.filter(name=name).update(per_minute=per_minute, per_second=per_second)


def ask(url: str, key: str, model: str = "sonar") -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "What is up?"}]}
    return httpx.post(
        f"{url}/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30
    )


def micros(response: httpx.Response) -> int:
    return round(response.json()["usage"]["cost"]["total_cost"] * 1_000_000)


def test_two_gateway_workers_hold_a_group_to_its_limit_and_429s_are_not_billed(
    gateway, funded_group, api_key
):
    limit("sonar", per_minute=[5, 12, 20, 30, 40, 50])  # $100 purchased: tier 1, 12 a minute
    other = api_key_create(group=funded_group, name="Second").secret
    server, thread, port = _serve(wrap(get_asgi_application()))  # a second worker
    urls = [gateway.url, f"http://127.0.0.1:{port}"]
    try:
        ask(urls[1], api_key, model="gpt-9")  # both workers warm (catalogue read), not counted
        fresh_window()
        before = balance(funded_group)
        started = int(time.time() // 60)
        with ThreadPoolExecutor(8) as pool:
            answers = list(
                pool.map(lambda i: ask(urls[i % 2], (api_key, other)[i // 2 % 2]), range(30))
            )
        same_window = int(time.time() // 60) == started
    finally:
        server.should_exit = True
        thread.join(10)
    admitted = [r for r in answers if r.status_code == 200]
    refused = [r for r in answers if r.status_code == 429]
    assert len(admitted) + len(refused) == 30
    # Exactly the limit within one window; at most one window's more across a boundary.
    assert len(admitted) == 12 if same_window else 12 <= len(admitted) <= 24
    for response in refused:
        error = response.json()["error"]
        assert error["code"] == "rate_limit_exceeded" and error["type"] == "rate_limit_error"
        assert "“sonar”" in error["message"] and "12 requests per minute" in error["message"]
        assert 1 <= int(response.headers["retry-after"]) <= 60
        assert 0 < int(response.headers["retry-after-ms"]) <= 60_000
        assert response.headers["x-ratelimit-limit-requests"] == "12"
        assert response.headers["x-ratelimit-remaining-requests"] == "0"
        assert response.headers["x-ratelimit-reset-requests"].endswith("s")
    for response in admitted:
        assert response.headers["x-ratelimit-limit-requests"] == "12"
    # The 429s were never billed: one usage event per admitted request, and the balance moved
    # by exactly what the admitted answers reported.
    gateway.settled()
    assert UsageEvent.objects.count() == len(admitted)
    assert balance(funded_group) == before - sum(micros(r) for r in admitted)


def test_two_keys_of_a_group_share_its_limit_and_other_groups_do_not(gateway, funded_group):
    limit("sonar-pro", per_minute=[1, 2, 3, 4, 5, 6])  # tier 1: 2 a minute
    first = api_key_create(group=funded_group, name="A").secret
    second = api_key_create(group=funded_group, name="B").secret
    stranger = GroupFactory()
    ledger_post(group=stranger, amount_micros=60_000_000, kind="purchase", reference="pi_s")
    theirs = api_key_create(group=stranger, name="C").secret
    fresh_window()
    assert ask(gateway.url, first, "sonar-pro").status_code == 200
    response = ask(gateway.url, second, "sonar-pro")
    assert response.status_code == 200
    assert response.headers["x-ratelimit-remaining-requests"] == "0"
    assert ask(gateway.url, first, "sonar-pro").status_code == 429
    assert ask(gateway.url, second, "sonar-pro").status_code == 429
    assert ask(gateway.url, theirs, "sonar-pro").status_code == 200  # its own count
    assert ask(gateway.url, first, "sonar").status_code == 200  # another family


def test_a_tier_upgrade_raises_the_limit(gateway, funded_group, api_key):
    limit("sonar-reasoning-pro", per_minute=[1, 2, 3, 4, 5, 6])
    fresh_window()
    statuses = [ask(gateway.url, api_key, "sonar-reasoning-pro").status_code for _ in range(3)]
    assert statuses == [200, 200, 429]  # tier 1 ($100 purchased): 2
    ledger_post(group=funded_group, amount_micros=200_000_000, kind="purchase", reference="pi_2")
    response = ask(gateway.url, api_key, "sonar-reasoning-pro")  # $300: tier 2, 3 a minute
    assert response.status_code == 200
    assert response.headers["x-ratelimit-limit-requests"] == "3"
    response = ask(gateway.url, api_key, "sonar-reasoning-pro")
    assert response.status_code == 429 and "at usage tier 2" in response.json()["error"]["message"]


def test_the_agent_api_has_a_per_second_limit_shared_across_models(gateway, funded_group, api_key):
    limit("agent", per_minute=[50, 150, 500, 1000, 2000, 2000], per_second=[1] * 6)
    body = {"model": "perplexity/sonar", "input": "What is up?"}
    other = {"model": "openai/gpt-5.4-mini", "input": "What is up?"}
    headers = {"Authorization": f"Bearer {api_key}"}
    with httpx.Client(base_url=gateway.url, headers=headers, timeout=30) as client:
        client.post("/v1/responses", json={"model": "nope"})  # the catalogue read
        fresh_window()
        for _attempt in range(3):  # both requests within one second
            time.sleep(1 - time.time() % 1)
            began = int(time.time())
            first = client.post("/v1/responses", json=body)
            second = client.post("/v1/responses", json=other)
            if int(time.time()) == began:
                break
        assert first.status_code == 200, first.text
        assert second.status_code == 429
        assert "“agent”" in second.json()["error"]["message"]
        assert second.headers["x-ratelimit-limit-requests"] == "1"  # the window that refused
        assert second.headers["retry-after"] == "1"
        assert 0 < int(second.headers["retry-after-ms"]) <= 1000
        time.sleep(1 - time.time() % 1 + 0.02)
        third = client.post("/v1/responses", json=other)
    assert third.status_code == 200
    # Its minute: 150 at tier 1, and the refused request used none of it.
    assert third.headers["x-ratelimit-limit-requests"] == "150"
    used = int(first.headers["x-ratelimit-limit-requests"]) - int(
        first.headers["x-ratelimit-remaining-requests"]
    )
    assert int(third.headers["x-ratelimit-remaining-requests"]) == 150 - used - 1


def run_admission(body):  # type: ignore[no-untyped-def]
    async def main():  # type: ignore[no-untyped-def]
        store = Store()
        await store.open(settler=False)
        try:
            return await body(GatewayApp(), store)
        finally:
            await store.close()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, main()).result(timeout=60)


def test_admit_rate_counts_without_a_credit_check_and_admit_takes_a_family(db):
    catalogue_sync()
    limit("async_list", per_minute=[2] * 6)
    group = GroupFactory()  # no credits at all: tier 0
    key = api_key_create(group=group, name="K").key
    info = KeyInfo(key.pk, group.pk, key.name, key.last_four, None, None)
    fresh_window()

    async def body(app: GatewayApp, store: Store) -> dict:
        seen: dict = {"headers": []}
        for _ in range(2):
            headers: list = []
            await app.admit_rate(store, info, "async_list", headers)
            seen["headers"].append(dict(headers))
        with pytest.raises(GatewayError) as refused:
            await app.admit_rate(store, info, "async_list", [])
        seen["refused"] = refused.value
        headers = []
        await app.admit_rate(store, info, "no-such-family", headers)  # not limited
        seen["unlimited"] = headers
        models = await store.models()
        headers = []
        with pytest.raises(GatewayError) as broke:  # the credit check still applies to admit
            await app.admit(store, info, models["sonar"], headers, family="search")
        seen["search"] = (broke.value.status, dict(headers))
        return seen

    seen = run_admission(body)
    assert [h[b"x-ratelimit-remaining-requests"] for h in seen["headers"]] == [b"1", b"0"]
    assert seen["refused"].status == 429 and seen["refused"].code == "rate_limit_exceeded"
    assert seen["unlimited"] == []
    status, headers = seen["search"]
    assert status == 402  # no credits, and the rate headers are on the refusal too
    assert headers[b"x-ratelimit-limit-requests"] == b"50"  # POST /search: 50 a second
    assert (
        headers[b"x-ratelimit-reset-requests"].endswith(b"ms")
        or headers[b"x-ratelimit-reset-requests"] == b"1s"
    )


def test_each_api_counts_in_its_own_family_and_refusals_are_not_billed(
    gateway, funded_group, api_key
):
    """Search, embeddings and async create/get/list each count in their family (per group):
    reaching one family's limit leaves the others open, and a 429 writes and charges nothing."""
    limit("search", per_minute=[2] * 6)
    limit("embeddings", per_minute=[1] * 6)
    limit("async_create", per_minute=[1] * 6)
    limit("async_get", per_minute=[1] * 6)
    limit("async_list", per_minute=[1] * 6)
    auth = {"Authorization": f"Bearer {api_key}"}
    fresh_window()

    def post(path: str, body: dict) -> httpx.Response:
        return httpx.post(f"{gateway.url}{path}", json=body, headers=auth, timeout=30)

    search = [post("/search", {"query": f"q{i}", "search_type": t})
              for i, t in enumerate(("web", "fast", "web"))]  # fmt: skip
    assert [r.status_code for r in search] == [200, 200, 429]
    assert search[2].json()["error"]["code"] == "rate_limit_exceeded"
    assert search[2].headers["x-ratelimit-limit-requests"] == "2"
    embed = [post("/v1/embeddings", {"model": "pplx-embed-v1-0.6b", "input": "x" * 4000}),
             post("/v1/contextualizedembeddings",
                  {"model": "pplx-embed-context-v1-0.6b", "input": [["x" * 4000]]})]  # fmt: skip
    assert [r.status_code for r in embed] == [200, 429]  # one family for both endpoints
    job = {"request": {"model": "sonar", "messages": [{"role": "user", "content": "Hi"}]}}
    created = [post("/async/chat/completions", job), post("/async/chat/completions", job)]
    assert [r.status_code for r in created] == [200, 429]
    job_id = created[0].json()["id"]
    got = [httpx.get(f"{gateway.url}/async/chat/completions/{job_id}", headers=auth)
           for _ in range(2)]  # fmt: skip
    assert [r.status_code for r in got] == [200, 429]
    listed = [httpx.get(f"{gateway.url}/async/chat/completions", headers=auth) for _ in range(2)]
    assert [r.status_code for r in listed] == [200, 429]
    assert listed[1].headers["retry-after"]
    # Billed: the two searches, the one embeddings request and the one job; no 429.
    gateway.settled()
    apis = sorted(UsageEvent.objects.values_list("api", flat=True))
    assert apis == ["async", "embeddings", "search", "search"]

"""Async chat completions (/async/chat/completions): the official SDK, money, ownership, bad input.

Tests run Celery eagerly (CELERY_TASK_ALWAYS_EAGER, the test default): the create queues the job
from a thread of the gateway, which runs it there before the create answers.
"""

from __future__ import annotations

import time

import perplexity
import pytest

from billing.models import CreditAccount, LedgerEntry
from billing.services import ledger_post
from gateway.models import AsyncJob
from keys.services import api_key_create
from tests.factories import GroupFactory
from usage.models import UsageEvent

pytestmark = pytest.mark.django_db(transaction=True)

MESSAGES = [{"role": "user", "content": "Write a short report on rivers."}]


def balance(group) -> int:  # type: ignore[no-untyped-def]
    return CreditAccount.objects.get(group=group).balance_micros


def client(gateway, key: str) -> perplexity.Perplexity:  # type: ignore[no-untyped-def]
    return perplexity.Perplexity(base_url=gateway.url, api_key=key, max_retries=0)


def wait_done(sdk: perplexity.Perplexity, job_id: str, timeout: float = 20):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        job = sdk.async_.chat.completions.get(job_id)
        if job.status in ("COMPLETED", "FAILED") or time.monotonic() > deadline:
            return job
        time.sleep(0.05)


def test_official_sdk_create_get_list_and_exact_money(gateway, funded_group, api_key):
    sdk = client(gateway, api_key)
    before = balance(funded_group)
    created = sdk.async_.chat.completions.create(
        request={"model": "sonar-deep-research", "messages": MESSAGES}
    )
    assert created.model == "sonar-deep-research"
    assert created.status in ("CREATED", "IN_PROGRESS", "COMPLETED")
    assert isinstance(created.created_at, int)

    job = wait_done(sdk, created.id)
    assert job.status == "COMPLETED"
    assert job.started_at is not None and job.completed_at is not None and job.failed_at is None
    assert job.response.id == created.id and job.response.model == "sonar-deep-research"
    assert "simulator" in job.response.choices[0].message.content
    usage = job.response.usage
    assert (usage.citation_tokens, usage.reasoning_tokens, usage.num_search_queries) == (
        120,
        240,
        3,
    )
    charged = round(usage.cost.total_cost * 1_000_000)
    assert charged > 0
    assert before - balance(funded_group) == charged  # the exact balance movement, in micros

    event = UsageEvent.objects.get(request_id=created.id)
    assert (event.api, event.cost_micros, event.model.name) == (
        "async",
        charged,
        "sonar-deep-research",
    )
    assert LedgerEntry.objects.get(reference=f"usage:{created.id}").amount_micros == -charged

    # The x-* headers the SDK's get can send are ignored (a client never sets its own tier).
    again = sdk.async_.chat.completions.get(created.id, x_usage_tier="5", x_user_id="someone")
    assert again.status == "COMPLETED"

    listed = sdk.async_.chat.completions.list()
    assert [r.id for r in listed.requests] == [created.id]
    assert listed.requests[0].status == "COMPLETED" and listed.next_token is None
    # Polling and listing are free.
    assert before - balance(funded_group) == charged
    assert UsageEvent.objects.count() == 1


def test_another_groups_key_gets_404_and_an_empty_list(gateway, funded_group, api_key):
    sdk = client(gateway, api_key)
    job = sdk.async_.chat.completions.create(
        request={"model": "sonar-deep-research", "messages": MESSAGES}
    )
    other = client(gateway, api_key_create(group=GroupFactory(), name="Other").secret)
    with pytest.raises(perplexity.NotFoundError) as raised:
        other.async_.chat.completions.get(job.id)
    assert raised.value.status_code == 404
    with pytest.raises(perplexity.NotFoundError):
        other.async_.chat.completions.get("no-such-job")
    assert other.async_.chat.completions.list().requests == []
    # Any key of the owning group sees it.
    colleague = client(gateway, api_key_create(group=funded_group, name="Second").secret)
    assert colleague.async_.chat.completions.get(job.id).id == job.id
    assert [r.id for r in colleague.async_.chat.completions.list().requests] == [job.id]


def test_a_failed_job_moves_nothing(gateway, upstream, upstream_model, funded_group, api_key):
    upstream_model.api = "chat"
    upstream_model.save()
    upstream.mode = "fail"
    sdk = client(gateway, api_key)
    before = balance(funded_group)
    created = sdk.async_.chat.completions.create(
        request={"model": "fake-pro", "messages": MESSAGES}
    )
    job = wait_done(sdk, created.id)
    assert job.status == "FAILED"
    assert job.failed_at is not None and job.completed_at is None and job.response is None
    assert "500" in job.error_message and "Nothing was charged" in job.error_message
    assert balance(funded_group) == before
    assert not UsageEvent.objects.exists() and not LedgerEntry.objects.filter(kind="usage").exists()
    assert len(upstream.hits) == 1 and "stream" not in upstream.hits[0]


# --- bad input, refusals: 400/402/404/405/429 and nothing written ----------------------------


def post(gateway, key: str, body) -> object:  # type: ignore[no-untyped-def]
    with gateway.client(key) as c:
        return c.post("/async/chat/completions", json=body)


def error(response) -> dict:  # type: ignore[no-untyped-def]
    body = response.json()
    assert set(body["error"]) == {"message", "type", "code", "param"}
    return body["error"]


GOOD = {"model": "sonar-deep-research", "messages": MESSAGES}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "request"),
        ({"request": "hi"}, "request"),
        ({"request": {"messages": MESSAGES}}, "request.model"),
        ({"request": {"model": 5, "messages": MESSAGES}}, "request.model"),
        ({"request": {"model": "sonar-deep-research"}}, "request.messages"),
        ({"request": {"model": "sonar-deep-research", "messages": []}}, "request.messages"),
        ({"request": {"model": "sonar-deep-research", "messages": ["hi"]}}, "request.messages"),
        ({"request": GOOD | {"stream": True}}, "request.stream"),
        ({"request": GOOD | {"stream": "yes"}}, "request.stream"),
        ({"request": GOOD, "idempotency_key": 7}, "idempotency_key"),
        ({"request": GOOD, "idempotency_key": ""}, "idempotency_key"),
        ({"request": GOOD, "idempotency_key": "k" * 256}, "idempotency_key"),
    ],
)
def test_bad_input_is_400_naming_the_field_and_writes_nothing(
    gateway, funded_group, api_key, body, param
):
    before = balance(funded_group)
    response = post(gateway, api_key, body)
    assert response.status_code == 400
    assert error(response)["param"] == param
    assert not AsyncJob.objects.exists() and not UsageEvent.objects.exists()
    assert balance(funded_group) == before


def test_bad_input_through_the_sdk(gateway, api_key):
    sdk = client(gateway, api_key)
    with pytest.raises(perplexity.BadRequestError):
        sdk.async_.chat.completions.create(request={"model": "sonar-deep-research", "messages": []})
    with pytest.raises(perplexity.NotFoundError) as raised:  # like chat: 404 model_not_found
        sdk.async_.chat.completions.create(request={"model": "nope", "messages": MESSAGES})
    assert raised.value.body["error"]["code"] == "model_not_found"
    assert raised.value.body["error"]["param"] == "request.model"
    with pytest.raises(perplexity.NotFoundError):  # an Agent API model is not a chat model
        sdk.async_.chat.completions.create(
            request={"model": "openai/gpt-5.6-luna", "messages": MESSAGES}
        )
    assert not AsyncJob.objects.exists()


def test_wrong_methods_are_405_and_other_paths_404(gateway, api_key):
    with gateway.client(api_key) as c:
        assert c.put("/async/chat/completions", json={}).status_code == 405
        assert c.delete("/async/chat/completions/abc").status_code == 405
        assert c.post("/async/chat/completions/abc", json={}).status_code == 405
        assert c.get("/async/chat/completions/abc/more").status_code == 404
        assert c.get("/async/chat/completions?limit=0").status_code == 400
        assert error(c.get("/async/chat/completions?limit=101"))["param"] == "limit"
        assert error(c.get("/async/chat/completions?next_token=%%%"))["param"] == "next_token"
    with gateway.client(None) as c:
        assert c.get("/async/chat/completions").status_code == 401


def test_no_credits_is_402_and_writes_nothing(gateway):
    broke = api_key_create(group=GroupFactory(), name="Broke").secret
    response = post(gateway, broke, {"request": GOOD})
    assert response.status_code == 402
    assert error(response)["code"] == "insufficient_credits"
    assert not AsyncJob.objects.exists()


def test_rate_limited_create_is_429_and_writes_nothing(gateway, funded_group, api_key):
    # The group's `async_create` family (Perplexity's 5, 10, 20, … a minute by tier).
    left = 60 - time.time() % 60
    if left < 15:  # no window may turn during the test
        time.sleep(left + 0.05)
    first = post(gateway, api_key, {"request": GOOD})
    limit = int(first.headers["x-ratelimit-limit-requests"])
    codes = [post(gateway, api_key, {"request": GOOD}).status_code for _ in range(limit)]
    assert codes.count(429) == 1 and codes[-1] == 429
    assert AsyncJob.objects.count() == limit
    assert UsageEvent.objects.filter(api="async").count() == limit


def test_same_idempotency_key_is_the_same_job(gateway, funded_group, api_key):
    body = {"request": GOOD, "idempotency_key": "report-42"}
    first = post(gateway, api_key, body).json()
    second = post(gateway, api_key, body).json()
    assert first["id"] == second["id"] and second["status"] == "COMPLETED"
    assert AsyncJob.objects.count() == 1 and UsageEvent.objects.count() == 1
    # Another group's key with the same idempotency key makes its own job.
    other = GroupFactory()
    ledger_post(group=other, amount_micros=10_000_000, kind="purchase", reference="g-other")
    theirs = post(gateway, api_key_create(group=other, name="K").secret, body).json()
    assert theirs["id"] != first["id"] and AsyncJob.objects.count() == 2


def test_list_pages_with_next_token(gateway, funded_group, api_key):
    ids = [post(gateway, api_key, {"request": GOOD}).json()["id"] for _ in range(3)]
    sdk = client(gateway, api_key)
    page = sdk.async_.chat.completions.list(extra_query={"limit": 2})
    assert [r.id for r in page.requests] == ids[::-1][:2] and page.next_token
    rest = sdk.async_.chat.completions.list(extra_query={"limit": 2, "next_token": page.next_token})
    assert [r.id for r in rest.requests] == ids[:1] and rest.next_token is None

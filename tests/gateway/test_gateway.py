from __future__ import annotations

import time
from datetime import timedelta

import orjson
import pytest
from django.db.models import Sum
from django.utils import timezone

from billing.models import CreditAccount, LedgerEntry
from billing.services import ledger_post
from keys.services import api_key_create, api_key_regenerate, api_key_revoke
from tests.factories import GroupFactory, MembershipFactory
from tests.gateway.conftest import both_modes
from usage.models import AIModel, UsageEvent

pytestmark = pytest.mark.django_db(transaction=True)


def balance(group) -> int:  # type: ignore[no-untyped-def]
    return CreditAccount.objects.get(group=group).balance_micros


def error(response) -> dict:  # type: ignore[no-untyped-def]
    body = response.json()
    assert set(body["error"]) == {"message", "type", "code", "param"}
    return body["error"]


@both_modes
def test_metered_request_is_priced_by_our_catalogue(
    gateway, upstream, upstream_model, funded_group, api_key
):
    before = balance(funded_group)
    response = gateway.chat(api_key, model="fake-pro")
    assert response.status_code == 200, response.text
    body = response.json()
    # 1234 input × $3/M + 567 output × $15/M + 2 searches × $5/K + request fee (low) $6/K
    assert body["usage"]["cost"] == {
        "input_tokens_cost": 0.003702,
        "output_tokens_cost": 0.008505,
        "search_queries_cost": 0.01,
        "request_cost": 0.006,
        "total_cost": 0.028207,
    }
    assert body["choices"][0]["message"]["content"] == "Hi"
    assert upstream.hits[0]["model"] == "real-name"  # the catalogue's upstream model name
    request_id = response.headers["x-request-id"]
    event = UsageEvent.objects.get(request_id=request_id)
    assert (event.prompt_tokens, event.completion_tokens, event.search_queries) == (1234, 567, 2)
    assert event.cost_micros == 28_207
    entry = LedgerEntry.objects.get(reference=f"usage:{request_id}")
    assert entry.amount_micros == -28_207 and entry.kind == "usage"
    assert balance(funded_group) == before - 28_207
    # $100 purchased puts the group in tier 1. fake-pro has no [limits] row (an operator's own
    # model): its group limit is its rate_limit_rpm × the tier's multiplier, 3 × 1,000.
    assert int(response.headers["x-ratelimit-limit-requests"]) == 3000


def test_search_context_size_sets_the_request_fee(gateway, upstream, upstream_model, api_key):
    response = gateway.chat(
        api_key, model="fake-pro", web_search_options={"search_context_size": "high"}
    )
    assert response.json()["usage"]["cost"]["request_cost"] == 0.014


@both_modes
def test_simulator_answers_and_is_metered(gateway, api_key, funded_group):
    response = gateway.chat(api_key, model="sonar")
    assert response.status_code == 200
    body = response.json()
    assert "simulator" in body["choices"][0]["message"]["content"]
    usage = body["usage"]
    expected = usage["prompt_tokens"] * 1 + usage["completion_tokens"] * 1 + 5_000
    assert UsageEvent.objects.get().cost_micros == expected


def test_models_list(gateway, api_key):
    with gateway.client(api_key) as c:
        response = c.get("/v1/models")
    names = [m["id"] for m in response.json()["data"]]
    # Every enabled model, of both APIs (Sonar chat completions and the Agent API), by name.
    assert names == sorted(names)
    assert {"sonar", "sonar-deep-research", "sonar-pro", "sonar-reasoning-pro"} <= set(names)
    assert {"perplexity/sonar", "openai/gpt-5.6-luna"} <= set(names)


@pytest.mark.parametrize(
    "auth",
    [
        None,
        "Basic abc",
        "Bearer",
        "Bearer pplx-short",
        "Bearer sk-1234567890abcdefghijklmnopqrstuvwxyz0123",
    ],
)
def test_missing_or_malformed_keys_are_401(gateway, auth):
    with gateway.client() as c:
        headers = {"Authorization": auth} if auth else {}
        response = c.post(
            "/chat/completions",
            json={"model": "sonar", "messages": [{"role": "user", "content": "x"}]},
            headers=headers,
        )
    assert response.status_code == 401
    assert error(response)["code"] == "invalid_api_key"
    assert response.headers["x-request-id"]


def test_mistyped_key_fails_its_checksum(gateway, api_key):
    typo = api_key[:-7] + ("A" if api_key[-7] != "A" else "B") + api_key[-6:]
    response = gateway.chat(typo)
    assert response.status_code == 401
    assert "checksum" in error(response)["message"]


def test_unknown_revoked_and_expired_keys_are_401(gateway, funded_group, api_key):
    from keys import secrets

    assert gateway.chat(secrets.generate()).status_code == 401
    key = funded_group.api_keys.get()
    assert gateway.chat(api_key).status_code == 200
    api_key_revoke(key=key)
    time.sleep(0.6)  # the gateway's in-memory copy lives ≤ 0.5 s
    assert gateway.chat(api_key).status_code == 401
    expiring = api_key_create(
        group=funded_group, name="Short", expires_at=timezone.now() + timedelta(seconds=2)
    )
    assert gateway.chat(expiring.secret).status_code == 200
    time.sleep(2.1)
    assert gateway.chat(expiring.secret).status_code == 401


def test_revocation_and_regeneration_take_effect_within_a_second(gateway, funded_group):
    issued = api_key_create(group=funded_group, name="Rotating")
    assert gateway.chat(issued.secret).status_code == 200
    new = api_key_regenerate(key=issued.key)
    started = time.monotonic()
    while gateway.chat(issued.secret).status_code == 200:
        assert time.monotonic() - started < 1.0, "old secret still accepted after 1 s"
        time.sleep(0.05)
    assert gateway.chat(new.secret).status_code == 200
    api_key_revoke(key=new.key)
    started = time.monotonic()
    while gateway.chat(new.secret).status_code == 200:
        assert time.monotonic() - started < 1.0, "revoked key still accepted after 1 s"
        time.sleep(0.05)


def test_a_revocation_is_announced_to_the_workers_at_once(gateway, funded_group, settings):
    # Unsubscribed, a worker would trust its copy of the key for this long.
    settings.GATEWAY_KEY_CACHE_SECONDS = 60
    issued = api_key_create(group=funded_group, name="Announced")
    assert gateway.chat(issued.secret).status_code == 200
    time.sleep(0.2)  # the worker subscribes to key changes when it starts
    assert gateway.chat(issued.secret).status_code == 200  # served from its memory
    api_key_revoke(key=issued.key)
    started = time.monotonic()
    while gateway.chat(issued.secret).status_code == 200:
        assert time.monotonic() - started < 2.0, "revoked key still served: change not announced"
        time.sleep(0.01)


def test_no_credits_is_402_without_calling_the_upstream(gateway, upstream, upstream_model):
    group = GroupFactory()
    key = api_key_create(group=group, name="Broke").secret
    response = gateway.chat(key, model="fake-pro")
    assert response.status_code == 402
    assert error(response)["code"] == "insufficient_credits"
    assert upstream.hits == []
    assert UsageEvent.objects.count() == 0


def test_credits_arriving_unblock_the_keys(gateway, upstream, upstream_model):
    group = GroupFactory()
    key = api_key_create(group=group, name="Broke").secret
    assert gateway.chat(key, model="fake-pro").status_code == 402
    ledger_post(group=group, amount_micros=1_000_000, kind="purchase", reference="pi_unblock")
    assert gateway.chat(key, model="fake-pro").status_code == 200


@both_modes
def test_key_monthly_limit_is_402(gateway, upstream, upstream_model, funded_group):
    key = api_key_create(group=funded_group, name="Capped", monthly_limit_micros=50_000).secret
    assert gateway.chat(key, model="fake-pro").status_code == 200  # 28,207 spent
    assert gateway.chat(key, model="fake-pro").status_code == 200  # 56,414 spent ≥ 50,000
    response = gateway.chat(key, model="fake-pro")
    assert response.status_code == 402
    assert error(response)["code"] == "key_limit_exceeded"
    assert len(upstream.hits) == 2


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        (b"{not json", None, "not valid JSON"),
        (b"[1, 2]", None, "JSON object"),
        (b'{"messages": [{"role": "user", "content": "x"}]}', "model", "model"),
        (b'{"model": 5, "messages": []}', "model", "model"),
        (b'{"model": "sonar", "messages": "hi"}', "messages", "messages"),
        (b'{"model": "sonar", "messages": [1]}', "messages", "Each message"),
        (
            b'{"model": "sonar", "messages": [{"role": "user"}], "stream": "yes"}',
            "stream",
            "stream",
        ),
        (
            b'{"model": "sonar", "messages": [{"role": "user"}], "stream": true, '
            b'"stream_options": 5}',
            "stream_options",
            "stream_options",
        ),
        (
            b'{"model": "sonar", "messages": [{"role": "user"}], "stream": true, '
            b'"stream_options": ["include_usage"]}',
            "stream_options",
            "stream_options",
        ),
        (
            b'{"model": "sonar", "messages": [{"role": "user"}], "stream_options": "x"}',
            "stream_options",
            "stream_options",
        ),
    ],
)
def test_bad_requests_are_400_and_free(gateway, api_key, body, param, message):
    with gateway.client(api_key) as c:
        response = c.post(
            "/v1/chat/completions", content=body, headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 400
    err = error(response)
    assert err["code"] == "invalid_request_error" and err["param"] == param
    assert message in err["message"]
    assert UsageEvent.objects.count() == 0


def test_huge_bodies_are_413(gateway, api_key, settings):
    big = (
        b'{"model": "sonar", "messages": [{"role": "user", "content": "'
        + b"x" * 1_100_000
        + b'"}]}'
    )
    with gateway.client(api_key) as c:
        response = c.post("/chat/completions", content=big)
    assert response.status_code == 413
    assert error(response)["code"] == "request_too_large"


def test_unknown_and_disabled_models_are_404(gateway, api_key):
    assert error(gateway.chat(api_key, model="gpt-9"))["code"] == "model_not_found"
    AIModel.objects.filter(name="sonar").update(enabled=False)
    time.sleep(5.1)  # the catalogue is re-read every 5 s
    response = gateway.chat(api_key, model="sonar")
    assert response.status_code == 404 and error(response)["param"] == "model"


def test_rate_limit_is_429_with_retry_after(gateway, upstream, upstream_model, api_key):
    # No [limits] row for fake-pro: rate_limit_rpm × tier 1's multiplier (3) per group.
    AIModel.objects.filter(pk=upstream_model.pk).update(rate_limit_rpm=1)
    time.sleep(5.1)
    statuses = [gateway.chat(api_key, model="fake-pro").status_code for _ in range(5)]
    assert statuses.count(200) == 3 and statuses.count(429) == 2
    response = gateway.chat(api_key, model="fake-pro")
    assert error(response)["code"] == "rate_limit_exceeded"
    assert 1 <= int(response.headers["retry-after"]) <= 60
    assert response.headers["x-ratelimit-remaining-requests"] == "0"


@pytest.mark.parametrize(
    ("mode", "status", "code"),
    [
        ("fail", 502, "upstream_error"),
        ("bad", 502, "upstream_error"),
        ("refuse", 400, "invalid_request_error"),
    ],
)
def test_upstream_failures_charge_nothing(
    gateway, upstream, upstream_model, funded_group, api_key, mode, status, code
):
    upstream.mode = mode
    before = balance(funded_group)
    response = gateway.chat(api_key, model="fake-pro")
    assert response.status_code == status
    assert error(response)["code"] == code
    assert balance(funded_group) == before
    assert UsageEvent.objects.count() == 0


@both_modes
def test_upstream_refusing_our_credentials_is_502_without_its_text(
    gateway, upstream, upstream_model, funded_group, api_key, monkeypatch, caplog
):
    secret = "sk-upstream-0perator-S3CRET-value"
    monkeypatch.setenv("FAKE_UPSTREAM_KEY", secret)
    AIModel.objects.filter(pk=upstream_model.pk).update(upstream_api_key_env="FAKE_UPSTREAM_KEY")
    upstream.mode = "deny"
    before = balance(funded_group)
    with caplog.at_level("ERROR", logger="portal.gateway"):
        plain = gateway.chat(api_key, model="fake-pro")
        with gateway.client(api_key) as c:
            streamed = c.post(
                "/chat/completions",
                json={"model": "fake-pro", "stream": True, "messages": [{"role": "user", "content": "x"}]},
            )  # fmt: skip
    assert upstream.hits, "the upstream was asked"
    for response in (plain, streamed):
        assert response.status_code == 502
        assert error(response)["code"] == "upstream_error"
        assert secret not in response.text and "Incorrect API key" not in response.text
    assert secret in caplog.text  # the operator can see what the model server said
    gateway.settled()
    assert balance(funded_group) == before
    assert UsageEvent.objects.count() == 0


def test_upstream_timeout_is_504_and_unreachable_is_502(
    gateway, upstream, upstream_model, api_key, settings
):
    gateway.app.gateway.timeout = __import__("aiohttp").ClientTimeout(
        total=None, connect=1, sock_read=0.3
    )
    gateway.app.gateway._session = None
    upstream.delay = 1.0
    response = gateway.chat(api_key, model="fake-pro")
    assert response.status_code == 504 and error(response)["code"] == "upstream_timeout"
    from tests.conftest import free_port

    AIModel.objects.filter(pk=upstream_model.pk).update(
        upstream_base_url=f"http://127.0.0.1:{free_port()}/v1"
    )
    time.sleep(5.1)
    response = gateway.chat(api_key, model="fake-pro")
    assert response.status_code == 502 and error(response)["code"] == "upstream_error"
    assert UsageEvent.objects.count() == 0


@both_modes
def test_streaming_passes_chunks_and_meters_from_the_final_usage(
    gateway, upstream, upstream_model, funded_group, api_key
):
    before = balance(funded_group)
    with gateway.client(api_key) as c, c.stream(
        "POST", "/chat/completions",
        json={"model": "fake-pro", "stream": True, "messages": [{"role": "user", "content": "x"}]},
    ) as response:  # fmt: skip
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "Hello world"
    assert chunks[-1]["usage"]["cost"]["total_cost"] == 0.028207
    assert upstream.hits[0]["stream_options"] == {"include_usage": True}
    gateway.settled()
    event = UsageEvent.objects.get()
    assert event.streamed and event.cost_micros == 28_207
    assert balance(funded_group) == before - 28_207


@both_modes
def test_two_hundred_concurrent_requests_on_credit_for_one_hundred(
    gateway, upstream, upstream_model
):
    from concurrent.futures import ThreadPoolExecutor

    group = GroupFactory()
    ledger_post(group=group, amount_micros=100 * 28_207, kind="purchase", reference="pi_hundred")
    key = api_key_create(group=group, name="Busy").secret

    def call(_: int) -> int:
        return gateway.chat(key, model="fake-pro").status_code

    with ThreadPoolExecutor(max_workers=50) as pool:
        statuses = list(pool.map(call, range(200)))
    ok, refused = statuses.count(200), statuses.count(402)
    assert ok + refused == 200, statuses  # every request was either charged or refused
    # Each request reserves its estimate (82,473 µ$: 4,096 output tokens by default, 3 searches,
    # the fee) while it runs, so near the end requests are refused while others hold the credit
    # (and the last two requests' worth of credit, 56,414 µ$, admits none at all).
    assert 60 <= ok <= 98
    events = UsageEvent.objects.filter(group=group)
    assert events.count() == ok == len(upstream.hits)  # none lost, none charged twice
    debits = LedgerEntry.objects.filter(account__group=group, kind="usage")
    assert debits.count() == ok
    assert (
        -debits.aggregate(s=Sum("amount_micros"))["s"]
        == events.aggregate(s=Sum("cost_micros"))["s"]
    )
    final = balance(group)
    assert final == 100 * 28_207 - ok * 28_207
    # No overdraft: every request cost less than its reservation, and the bound is 0.
    assert final >= 0
    # Nothing in flight: a request is admitted exactly when what is left covers its estimate.
    expected = 200 if final >= 82_473 else 402
    assert gateway.chat(key, model="fake-pro", max_tokens=4096).status_code == expected


@both_modes
@pytest.mark.parametrize(
    ("mode", "text", "charged"),
    [
        # "Hel": 3 characters → 1 token × $15/M = 15 µ$, plus the $6/1000 request fee.
        ("break", "Hel", 6_000 + 15),
        # "Hello world": 11 characters → 3 tokens × 15 µ$ + 6,000 µ$.
        ("cut", "Hello world", 6_000 + 45),
    ],
)
def test_a_stream_that_breaks_midway_ends_with_an_error_and_charges_what_was_delivered(
    gateway, upstream, upstream_model, funded_group, api_key, mode, text, charged
):
    upstream.mode = mode
    before = balance(funded_group)
    with gateway.client(api_key) as c, c.stream(
        "POST", "/chat/completions",
        json={"model": "fake-pro", "stream": True, "messages": [{"role": "user", "content": "x"}]},
    ) as response:  # fmt: skip
        assert response.status_code == 200
        lines = list(response.iter_lines())
    events = [line[6:] for line in lines if line.startswith("data: ")]
    assert "[DONE]" not in events
    assert "event: error" in lines  # the SDKs raise on it (tests/gateway/test_sdks.py)
    err = orjson.loads(events[-1])["error"]
    assert err["code"] == "upstream_error"
    assert f"${charged / 1_000_000:.6f}" in err["message"]
    chunks = [orjson.loads(e) for e in events[:-1]]
    assert "".join(ch["choices"][0]["delta"]["content"] for ch in chunks) == text
    gateway.settled()
    event = UsageEvent.objects.get()  # exactly once
    assert event.streamed and event.prompt_tokens == 0
    assert (event.output_cost_micros, event.request_cost_micros) == (charged - 6_000, 6_000)
    assert event.cost_micros == charged
    debit = LedgerEntry.objects.get(kind="usage")
    assert debit.amount_micros == -charged and debit.reference == f"usage:{event.request_id}"
    assert balance(funded_group) == before - charged


@both_modes
def test_last_used_is_written_at_most_once_a_minute(gateway, funded_group, api_key):
    from keys.models import APIKey

    assert gateway.chat(api_key).status_code == 200
    time.sleep(0.3)  # written in the background after the response
    first = APIKey.objects.get().last_used_at
    assert first is not None
    assert gateway.chat(api_key).status_code == 200
    time.sleep(0.3)
    assert APIKey.objects.get().last_used_at == first


@both_modes
def test_crossing_the_threshold_starts_one_auto_top_up(
    gateway, upstream, upstream_model, localstripe, save_card
):
    from billing import payments
    from billing.models import Payment

    group = GroupFactory()
    admin = MembershipFactory(group=group, role="admin").user
    save_card(group)
    ledger_post(group=group, amount_micros=100_000, kind="promotional", reference="pi_small")
    # Threshold just under the balance: the third request (3 × 28,207) crosses it.
    payments.auto_top_up_configure(
        group=group, enabled=True, threshold_micros=30_000, amount_micros=5_000_000, actor=admin
    )
    key = api_key_create(group=group, name="Topped").secret
    # max_tokens keeps each request's reservation (≈ 30,000 µ$) within the small balance.
    for _ in range(3):
        assert gateway.chat(key, model="fake-pro", max_tokens=600).status_code == 200
    deadline = time.monotonic() + 5
    while (
        not Payment.objects.filter(group=group, status="succeeded").exists()
        and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    for _ in range(2):  # topped up: requests keep succeeding
        assert gateway.chat(key, model="fake-pro").status_code == 200
    top_ups = Payment.objects.filter(group=group, kind="auto_top_up")
    assert top_ups.count() == 1 and top_ups.get().status == "succeeded"
    assert balance(group) == 100_000 - 5 * 28_207 + 5_000_000

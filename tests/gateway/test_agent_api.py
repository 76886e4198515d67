"""The Agent API (`/v1/responses`, `/v1/agent`) through the gateway, with the official SDKs.

Each call checks what a customer would: the group's balance moved by exactly the
`usage.cost.total_cost` the response reported (in micro-dollars), in both metering modes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import httpx
import openai
import orjson
import perplexity
import pytest

from billing.models import CreditAccount, LedgerEntry
from gateway import agent as agent_module
from keys.services import api_key_create
from tests.factories import GroupFactory
from tests.gateway.conftest import both_modes
from usage.models import AIModel, RateLimit, UsageEvent

pytestmark = pytest.mark.django_db(transaction=True)

AGENT_MODEL = "perplexity/sonar"  # the catalogue's: simulator://, a Responses upstream
QUESTION = "What is the tallest building in the world today?"


def balance(group) -> int:  # type: ignore[no-untyped-def]
    return CreditAccount.objects.get(group=group).balance_micros


def micros(dollars: float) -> int:
    return round(dollars * 1_000_000)


def cost_of(usage) -> dict:  # type: ignore[no-untyped-def]
    """`usage.cost` as a dict, whichever SDK parsed it."""
    cost = usage.cost if hasattr(usage, "cost") and usage.cost is not None else None
    if cost is None:
        cost = usage.model_extra["cost"]
    return cost if isinstance(cost, dict) else cost.model_dump()


def openai_client(gateway, key: str) -> openai.OpenAI:  # type: ignore[no-untyped-def]
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0)


def ppx_client(gateway, key: str) -> perplexity.Perplexity:  # type: ignore[no-untyped-def]
    return perplexity.Perplexity(base_url=gateway.url, api_key=key, max_retries=0)


@pytest.fixture
def agent_model(transactional_db, upstream):  # type: ignore[no-untyped-def]
    """A model whose upstream is the fake Responses server: $2 / $10 / $0.20 cache read per 1M."""
    return AIModel.objects.create(
        name="fake-agent",
        api="agent",
        upstream_api="responses",
        upstream_base_url=f"{upstream.url}/v1",
        upstream_model="up-model",
        input_per_m=2_000_000,
        output_per_m=10_000_000,
        cache_read_per_m=200_000,
        rate_limit_rpm=1000,
    )


@pytest.fixture
def chat_only_model(transactional_db, upstream):  # type: ignore[no-untyped-def]
    """An Agent API model whose upstream speaks only chat completions (translated both ways)."""
    return AIModel.objects.create(
        name="fake-chat-agent",
        api="agent",
        upstream_api="chat_completions",
        upstream_base_url=f"{upstream.url}/v1",
        upstream_model="real-name",
        input_per_m=2_000_000,
        output_per_m=10_000_000,
        rate_limit_rpm=1000,
    )


# --- the official SDKs ------------------------------------------------------------------------


@both_modes
def test_openai_sdk_responses_create_streamed_and_not(gateway, funded_group, api_key):
    client = openai_client(gateway, api_key)
    before = balance(funded_group)
    response = client.responses.create(model=AGENT_MODEL, input=QUESTION)
    assert response.status == "completed"
    assert "simulator" in response.output_text
    charged = micros(cost_of(response.usage)["total_cost"])
    assert charged > 0
    gateway.settled()
    assert balance(funded_group) == before - charged

    before = balance(funded_group)
    events = list(client.responses.create(model=AGENT_MODEL, input=QUESTION, stream=True))
    assert events[0].type == "response.created"
    assert events[-1].type == "response.completed"
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == events[-1].response.output_text
    charged = micros(cost_of(events[-1].response.usage)["total_cost"])
    gateway.settled()
    assert balance(funded_group) == before - charged
    assert UsageEvent.objects.count() == 2
    # Every lifecycle event names our response id, never the upstream's.
    ids = {e.response.id for e in events if e.type.startswith("response.") and
           getattr(e, "response", None) is not None}  # fmt: skip
    assert len(ids) == 1 and ids.pop().startswith("resp_")


@both_modes
def test_perplexity_sdk_with_web_search_streamed_and_not_and_retrieve(
    gateway, funded_group, api_key
):
    client = ppx_client(gateway, api_key)
    search = [{"type": "web_search"}]
    before = balance(funded_group)
    response = client.responses.create(model=AGENT_MODEL, input=QUESTION, tools=search)
    assert response.status == "completed"
    usage = response.usage
    assert usage.tool_calls_details["web_search"].invocation == 1
    assert usage.cost.tool_calls_cost > 0
    gateway.settled()
    assert balance(funded_group) == before - micros(usage.cost.total_cost)
    event = UsageEvent.objects.get()
    assert event.cost_micros == micros(usage.cost.total_cost)
    assert event.api == "agent"

    # Stored (the default): retrieve gives the same response, usage and cost.
    again = client.responses.retrieve(response.id)
    assert again.id == response.id and again.output_text == response.output_text
    assert again.usage.cost.total_cost == usage.cost.total_cost

    before = balance(funded_group)
    events = list(client.responses.create(model=AGENT_MODEL, input=QUESTION, tools=search,
                                          stream=True))  # fmt: skip
    done = events[-1]
    assert done.type == "response.completed"
    assert done.response.usage.tool_calls_details["web_search"].invocation == 1
    gateway.settled()
    assert balance(funded_group) == before - micros(done.response.usage.cost.total_cost)
    # A follow-up turn on the stored conversation.
    follow = client.responses.create(
        model=AGENT_MODEL, input="And the second?", previous_response_id=response.id
    )
    assert follow.status == "completed"
    assert follow.usage.input_tokens > response.usage.input_tokens - 200  # carries the history


@both_modes
def test_perplexity_sdk_background_cancel_charges_what_was_produced(
    gateway, upstream, agent_model, funded_group, api_key
):
    upstream.mode = "slow"  # "Hello world", then nothing for 30 s
    client = ppx_client(gateway, api_key)
    before = balance(funded_group)
    started = client.responses.create(model="fake-agent", input=QUESTION, background=True)
    assert started.status == "queued"
    assert client.responses.retrieve(started.id).status in ("queued", "in_progress")
    time.sleep(0.5)  # the upstream has sent "Hello world" and waits
    cancelling = client.responses.cancel(started.id)
    assert cancelling.response_id == started.id and cancelling.status == "cancelling"
    deadline = time.monotonic() + 10
    while (final := client.responses.retrieve(started.id)).status != "cancelled":
        assert time.monotonic() < deadline, final.status
        time.sleep(0.1)
    # The rule: the delivered text, ⌈11 characters ÷ 4⌉ = 3 output tokens × $10/M = 30 µ$.
    assert final.usage.output_tokens == 3
    assert final.usage.cost.total_cost == 0.00003
    gateway.settled()
    assert balance(funded_group) == before - 30
    # Cancelling again: it is no longer running.
    with pytest.raises(perplexity.BadRequestError):
        client.responses.cancel(started.id)


@both_modes
def test_background_response_runs_after_the_reply_and_is_retrievable(
    gateway, funded_group, api_key
):
    client = openai_client(gateway, api_key)
    before = balance(funded_group)
    started = client.responses.create(model=AGENT_MODEL, input=QUESTION, background=True)
    assert started.status == "queued"
    deadline = time.monotonic() + 10
    while (final := client.responses.retrieve(started.id)).status != "completed":
        assert time.monotonic() < deadline, final.status
        time.sleep(0.05)
    assert "simulator" in final.output_text
    gateway.settled()
    assert balance(funded_group) == before - micros(cost_of(final.usage)["total_cost"])
    assert UsageEvent.objects.count() == 1


# --- our prices, never the upstream's ---------------------------------------------------------


def numbers(value: object) -> Iterator[float]:
    """Every number in a JSON-like value."""
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        for item in value:
            yield from numbers(item)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield value


@both_modes
def test_a_responses_upstream_is_proxied_and_priced_by_our_catalogue(
    gateway, upstream, agent_model, funded_group, api_key, monkeypatch
):
    # Upstream: 1000 input (400 cached), 50 output, and its own claim of $99.
    # Ours: 600 × $2/M + 400 × $0.20/M + 50 × $10/M = 1200 + 80 + 500 = 1780 µ$.
    # A clock at …99 s: the SDK's float `created_at` is then …99.0, which made a byte search
    # for "99.0" fail one run in a hundred (the upstream's cost is looked for as a number now).
    pinned = int(time.time()) // 100 * 100 - 1
    clock = SimpleNamespace(time=lambda: pinned + 0.25, perf_counter=time.perf_counter)
    monkeypatch.setattr(agent_module, "time", clock)
    client = openai_client(gateway, api_key)
    before = balance(funded_group)
    response = client.responses.create(model="fake-agent", input=QUESTION)
    cost = cost_of(response.usage)
    assert cost["total_cost"] == 0.00178
    assert (cost["input_cost"], cost["cache_read_cost"], cost["output_cost"]) == (
        0.0012, 0.00008, 0.0005,
    )  # fmt: skip
    assert response.usage.input_tokens_details.cached_tokens == 400
    assert response.model == "fake-agent" and response.id != "resp_upstream"
    assert upstream.hits[-1]["model"] == "up-model"
    events = list(client.responses.create(model="fake-agent", input=QUESTION, stream=True))
    assert cost_of(events[-1].response.usage)["total_cost"] == 0.00178
    assert response.created_at == events[-1].response.created_at == pinned
    # The upstream's cost ($99) never reaches the client, in any event.
    assert 99 not in [n for e in events for n in numbers(e.model_dump())]
    assert 99 not in list(numbers(response.model_dump()))
    gateway.settled()
    assert balance(funded_group) == before - 2 * 1780


# --- translation to a chat-completions-only upstream -------------------------------------------


@both_modes
def test_a_chat_only_upstream_is_translated_streamed_and_not(
    gateway, upstream, chat_only_model, funded_group, api_key
):
    # The fake chat server reports 1234 prompt and 567 completion tokens: 2468 + 5670 = 8138 µ$.
    client = openai_client(gateway, api_key)
    before = balance(funded_group)
    response = client.responses.create(model="fake-chat-agent", input=QUESTION,
                                       instructions="Be brief.")  # fmt: skip
    assert response.output_text == "Hi"
    assert cost_of(response.usage)["total_cost"] == 0.008138
    sent = upstream.hits[-1]
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": QUESTION},
    ]
    events = list(client.responses.create(model="fake-chat-agent", input=QUESTION, stream=True))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == (
        "Hello world"
    )
    assert events[-1].type == "response.completed"
    assert cost_of(events[-1].response.usage)["total_cost"] == 0.008138
    gateway.settled()
    assert balance(funded_group) == before - 2 * 8138


def test_the_simulators_chat_endpoint_is_translated_for_the_perplexity_sdk(
    gateway, funded_group, api_key
):
    AIModel.objects.create(name="sim-chat-agent", api="agent", upstream_api="chat_completions",
                           input_per_m=1_000_000, output_per_m=1_000_000)  # fmt: skip
    client = ppx_client(gateway, api_key)
    before = balance(funded_group)
    response = client.responses.create(model="sim-chat-agent", input=QUESTION)
    assert "simulator" in response.output_text
    chunks = list(client.responses.create(model="sim-chat-agent", input=QUESTION, stream=True))
    assert chunks[-1].type == "response.completed"
    total = micros(response.usage.cost.total_cost) + micros(
        chunks[-1].response.usage.cost.total_cost
    )
    assert balance(funded_group) == before - total


def test_a_broken_stream_makes_both_sdks_raise_and_charges_the_delivered_part(
    gateway, upstream, agent_model, funded_group, api_key
):
    upstream.mode = "break"  # "Hello world", then the connection drops
    for client, error in (
        (openai_client(gateway, api_key), openai.APIError),
        (ppx_client(gateway, api_key), perplexity.APIError),
    ):
        text = ""
        with pytest.raises(error):
            for event in client.responses.create(model="fake-agent", input=QUESTION, stream=True):
                if event.type == "response.output_text.delta":
                    text += event.delta
        assert text == "Hello world"
    # ⌈11 ÷ 4⌉ = 3 output tokens × $10/M = 30 µ$ each.
    assert sorted(UsageEvent.objects.values_list("cost_micros", flat=True)) == [30, 30]


# --- refusals write nothing and charge nothing --------------------------------------------------


def post(gateway, key, body, path="/v1/responses", **kw) -> httpx.Response:  # type: ignore[no-untyped-def]
    with gateway.client(key) as c:
        return c.post(path, content=body if isinstance(body, bytes) else orjson.dumps(body), **kw)


def test_refusals_write_nothing(gateway, funded_group, api_key, settings):
    before = balance(funded_group)
    unknown = post(gateway, api_key, {"model": "nope/nope", "input": "hi"})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
    tool = post(gateway, api_key, {"model": AGENT_MODEL, "input": "hi",
                                   "tools": [{"type": "teleport"}]})  # fmt: skip
    assert tool.status_code == 400 and "teleport" in tool.json()["error"]["message"]
    assert tool.json()["error"]["param"] == "tools[0].type"
    bad = post(gateway, api_key, b'{"model": "perplexity/sonar", "input": ')
    assert bad.status_code == 400
    no_input = post(gateway, api_key, {"model": AGENT_MODEL})
    assert no_input.status_code == 400 and no_input.json()["error"]["param"] == "input"
    settings.GATEWAY_MAX_BODY_BYTES = 1000
    gateway.app.gateway.max_body = 1000  # type: ignore[attr-defined]
    huge = post(gateway, api_key, {"model": AGENT_MODEL, "input": "x" * 5000})
    assert huge.status_code == 413
    gateway.app.gateway.max_body = 1_048_576  # type: ignore[attr-defined]
    chat_model = post(gateway, api_key, {"model": "sonar-pro", "input": "hi"})
    assert chat_model.status_code == 404  # a chat completions model is not on the Agent API
    missing = post(gateway, api_key, {"model": AGENT_MODEL, "input": "hi",
                                      "previous_response_id": "resp_nope"})  # fmt: skip
    assert missing.status_code == 404
    broke = api_key_create(group=GroupFactory(), name="Broke").secret
    poor = post(gateway, broke, {"model": AGENT_MODEL, "input": "hi"})
    assert poor.status_code == 402 and poor.json()["error"]["code"] == "insufficient_credits"
    for response in (unknown, tool, bad, no_input, huge, chat_model, missing, poor):
        assert set(response.json()["error"]) == {"message", "type", "code", "param"}
    assert UsageEvent.objects.count() == 0
    assert LedgerEntry.objects.filter(kind="usage").count() == 0
    assert balance(funded_group) == before


@pytest.mark.parametrize("path", ["/v1/responses", "/v1/agent"])
def test_background_with_stream_is_refused_saying_how_to_get_the_result(
    gateway, funded_group, api_key, path
):
    before = balance(funded_group)
    body = {"model": AGENT_MODEL, "input": "hi", "background": True, "stream": True}
    response = post(gateway, api_key, body, path=path)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "background" and error["code"] == "invalid_request_error"
    # Why, and the way that works: background without stream, then poll the response.
    assert "not streamed" in error["message"]
    assert "GET /v1/responses/{id}" in error["message"]
    assert UsageEvent.objects.count() == 0 and balance(funded_group) == before


def test_a_built_in_tool_on_a_chat_only_upstream_is_refused_naming_it(
    gateway, upstream, chat_only_model, api_key
):
    response = post(gateway, api_key, {"model": "fake-chat-agent", "input": "hi",
                                       "tools": [{"type": "web_search"}]})  # fmt: skip
    assert response.status_code == 400
    assert "web_search" in response.json()["error"]["message"]
    assert upstream.hits == [] and UsageEvent.objects.count() == 0


def test_models_fallback_takes_the_first_enabled_agent_model(gateway, funded_group, api_key):
    response = post(gateway, api_key, {"models": ["nope/nope", "sonar", AGENT_MODEL],
                                       "input": "hi"})  # fmt: skip
    assert response.status_code == 200, response.text
    assert response.json()["model"] == AGENT_MODEL
    none = post(gateway, api_key, {"models": ["nope/nope", "sonar"], "input": "hi"})
    assert none.status_code == 404 and none.json()["error"]["code"] == "model_not_found"


def test_agent_paths_and_unknown_paths_answer_json(gateway, funded_group, api_key):
    agent = post(gateway, api_key, {"model": AGENT_MODEL, "input": "hi"}, path="/v1/agent")
    assert agent.status_code == 200 and agent.json()["object"] == "response"
    with gateway.client(api_key) as c:
        got = c.get(f"/v1/agent/{agent.json()['id']}")
        assert got.status_code == 200 and got.json()["id"] == agent.json()["id"]
        for path in ("/v1/nope", "/chat/nope", "/async/chat/nope", "/search/nope",
                     "/v1/responses/x/y/z"):  # fmt: skip
            response = c.get(path)
            assert response.status_code == 404, path
            assert response.headers["content-type"] == "application/json", path
            assert response.json()["error"]["code"] == "not_found", path
        assert c.get("/v1/responses").status_code == 405
        # The Management API is still Django's (it wants its own key).
        assert c.get("/v1/management/usage").status_code in (401, 403)


def test_another_groups_stored_response_is_404(gateway, funded_group, api_key):
    mine = post(gateway, api_key, {"model": AGENT_MODEL, "input": "hi"}).json()
    other = GroupFactory()
    from billing.services import ledger_post

    ledger_post(group=other, amount_micros=10_000_000, kind="purchase", reference="pi_other")
    theirs = api_key_create(group=other, name="Theirs").secret
    with gateway.client(theirs) as c:
        assert c.get(f"/v1/responses/{mine['id']}").status_code == 404
        assert c.post(f"/v1/responses/{mine['id']}/cancel").status_code == 404
    follow = post(gateway, theirs, {"model": AGENT_MODEL, "input": "hi",
                                    "previous_response_id": mine["id"]})  # fmt: skip
    assert follow.status_code == 404
    with gateway.client(None) as c:
        assert c.get(f"/v1/responses/{mine['id']}").status_code == 401


def test_effort_picks_the_presets_model_and_tools(gateway, funded_group, api_key):
    before = balance(funded_group)
    client = ppx_client(gateway, api_key)
    response = client.responses.create(input=QUESTION, effort="low")  # web_search + fetch_url
    assert response.model == "openai/gpt-5.6-luna"
    details = response.usage.tool_calls_details
    assert (details["web_search"].invocation, details["fetch_url"].invocation) == (1, 1)
    # $0.0025 + $0.0005 per invocation (the catalogue's tool fees)
    assert response.usage.cost.tool_calls_cost == 0.003
    assert balance(funded_group) == before - micros(response.usage.cost.total_cost)
    old = client.responses.create(input=QUESTION, preset="pro-search")  # the deprecated alias
    assert old.model == "openai/gpt-5.6-luna"
    unknown = post(gateway, api_key, {"input": "hi", "effort": "ludicrous"})
    assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "effort"


def test_a_tool_without_a_price_is_refused_naming_it(gateway, funded_group, api_key):
    response = post(gateway, api_key, {"model": AGENT_MODEL, "input": "hi",
                                       "tools": [{"type": "image_search"}]})  # fmt: skip
    assert response.status_code == 400
    assert "image_search" in response.json()["error"]["message"]
    assert UsageEvent.objects.count() == 0


def test_chat_completions_refuse_an_agent_api_model(gateway, funded_group, api_key):
    response = gateway.chat(api_key, model=AGENT_MODEL)
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"
    assert UsageEvent.objects.count() == 0


def test_concurrent_responses_are_all_stored_and_charged(gateway, funded_group, api_key):
    """Stored copies are written in batches (one pipeline for the responses finishing together):
    each of 24 concurrent responses, streamed or not, is retrievable with its own answer and was
    charged exactly what it reported."""

    async def one(client: openai.AsyncOpenAI, i: int) -> tuple[str, str, int]:
        question = f"Question number {i}: {QUESTION}"
        if i % 2:
            stream = await client.responses.create(model=AGENT_MODEL, input=question, stream=True)
            events = [e async for e in stream]
            response = events[-1].response
        else:
            response = await client.responses.create(model=AGENT_MODEL, input=question)
        return response.id, response.output_text, micros(cost_of(response.usage)["total_cost"])

    async def run() -> list[tuple[str, str, int]]:
        client = openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=api_key, max_retries=0)
        async with client:
            return await asyncio.gather(*(one(client, i) for i in range(24)))

    # 24 at once: above the Agent API's per-second limit at tier 1 (3/s), lifted for the test.
    RateLimit.objects.filter(name="agent").update(per_minute=[1000] * 6, per_second=None)
    before = balance(funded_group)
    with ThreadPoolExecutor(1) as pool:  # its own event loop (the suite may be running one)
        results = pool.submit(asyncio.run, run()).result()
    client = openai_client(gateway, api_key)
    for rid, text, _ in results:
        stored = client.responses.retrieve(rid)
        assert stored.output_text == text
    assert len({rid for rid, _, _ in results}) == 24
    gateway.settled()
    assert balance(funded_group) == before - sum(c for _, _, c in results)
    assert UsageEvent.objects.count() == 24

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from billing.models import CreditAccount, LedgerEntry
from gateway.store import KeyInfo, Store
from keys.services import api_key_create
from tests.factories import GroupFactory
from usage.catalogue import catalogue_sync
from usage.models import AIModel, UsageEvent

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_same_request_id_settled_fifty_times_is_one_entry():
    catalogue_sync()
    group = GroupFactory()
    key = api_key_create(group=group, name="K").key
    model = AIModel.objects.get(name="sonar")
    info = KeyInfo(key.pk, group.pk, key.name, key.last_four, None, None)
    params = {
        "request_id": "req-replayed", "group_id": group.pk, "key_id": key.pk, "model_id": model.pk,
        "prompt_tokens": 10, "completion_tokens": 20, "citation_tokens": 0, "reasoning_tokens": 0,
        "search_queries": 0, "context_size": "low", "input": 10, "output": 20, "citation": 0,
        "reasoning": 0, "search": 0, "request": 5000, "total": 5030, "streamed": False, "latency_ms": 3,
        "created": time.time(),
    }  # fmt: skip

    async def replay() -> None:
        store = Store()
        await store.open()
        try:
            await asyncio.gather(*(store.meter(info, params) for _ in range(50)))
        finally:
            await store.close()

    # In its own thread: the browser tests leave an event loop running on this one.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, replay()).result()
    assert UsageEvent.objects.filter(request_id="req-replayed").count() == 1
    assert LedgerEntry.objects.filter(reference="usage:req-replayed").count() == 1
    assert CreditAccount.objects.get(group=group).balance_micros == -5030


AGENT_TOOLS = {
    "web_search": {"invocations": 2, "cost_micros": 5_000},
    "fetch_url": {"invocations": 1, "cost_micros": 500},
}


def agent_params(group, key, model, request_id: str) -> dict:  # type: ignore[no-untyped-def]
    """A metered Agent API request, as the gateway builds it from usage.pricing.AgentCost."""
    return {
        "request_id": request_id, "group_id": group.pk, "key_id": key.pk, "model_id": model.pk,
        "api": "agent", "prompt_tokens": 1_000, "completion_tokens": 200, "citation_tokens": 0,
        "reasoning_tokens": 0, "search_queries": 0, "cache_read_tokens": 400,
        "cache_write_tokens": 100, "context_size": "low", "input": 125, "output": 500,
        "citation": 0, "reasoning": 0, "search": 0, "request": 0, "cache_read": 25,
        "cache_write": 25, "tools": 5_500, "tool_calls": AGENT_TOOLS, "total": 6_175,
        "streamed": True, "latency_ms": 3, "created": time.time(),
    }  # fmt: skip


def assert_agent_event(request_id: str, group) -> None:  # type: ignore[no-untyped-def]
    event = UsageEvent.objects.get(request_id=request_id)
    assert event.api == "agent"
    assert (event.prompt_tokens, event.cache_read_tokens, event.cache_write_tokens) == (
        1_000, 400, 100,
    )  # fmt: skip
    assert (event.input_cost_micros, event.cache_read_cost_micros) == (125, 25)
    assert (event.cache_write_cost_micros, event.tools_cost_micros) == (25, 5_500)
    assert event.tool_calls == AGENT_TOOLS
    assert event.cost_micros == 6_175
    assert LedgerEntry.objects.get(reference=f"usage:{request_id}").amount_micros == -6_175
    assert CreditAccount.objects.get(group=group).balance_micros == -6_175


def test_an_agent_api_request_is_written_with_its_cache_counts_and_tool_fees_once():
    catalogue_sync()
    group = GroupFactory()
    key = api_key_create(group=group, name="K").key
    model = AIModel.objects.get(name="perplexity/sonar")
    info = KeyInfo(key.pk, group.pk, key.name, key.last_four, None, None)
    params = agent_params(group, key, model, "req-agent")

    async def meter_twice() -> None:
        store = Store()
        await store.open()
        try:
            await asyncio.gather(store.meter(info, params), store.meter(info, params))
        finally:
            await store.close()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, meter_twice()).result()
    assert_agent_event("req-agent", group)
    assert UsageEvent.objects.filter(request_id="req-agent").count() == 1


def test_a_chat_request_without_the_agent_fields_is_metered_as_chat():
    """The metering of chat completions (and usage a gateway of the previous release left in the
    stream) does not name the new fields: they take their defaults."""
    catalogue_sync()
    group = GroupFactory()
    key = api_key_create(group=group, name="K").key
    model = AIModel.objects.get(name="sonar")
    info = KeyInfo(key.pk, group.pk, key.name, key.last_four, None, None)
    params = {
        "request_id": "req-chat", "group_id": group.pk, "key_id": key.pk, "model_id": model.pk,
        "prompt_tokens": 10, "completion_tokens": 20, "citation_tokens": 0, "reasoning_tokens": 0,
        "search_queries": 0, "context_size": "low", "input": 10, "output": 20, "citation": 0,
        "reasoning": 0, "search": 0, "request": 5000, "total": 5030, "streamed": False,
        "latency_ms": 3, "created": time.time(),
    }  # fmt: skip

    async def meter() -> None:
        store = Store()
        await store.open()
        try:
            await store.meter(info, params)
        finally:
            await store.close()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, meter()).result()
    event = UsageEvent.objects.get(request_id="req-chat")
    assert (event.api, event.cache_read_tokens, event.tools_cost_micros) == ("chat", 0, 0)
    assert event.tool_calls == {}
    assert event.cost_micros == 5030

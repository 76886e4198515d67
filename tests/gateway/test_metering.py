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

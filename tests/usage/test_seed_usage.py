"""The demo seed (seed_usage) writes chat, Agent API, Search API and embeddings usage priced by
usage.pricing."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.db.models import Sum

from billing.models import LedgerEntry
from tests.factories import GroupFactory
from usage.catalogue import catalogue_sync
from usage.models import UsageEvent


@pytest.mark.django_db
def test_seeded_usage_mixes_the_apis_with_tools_and_matches_the_ledger():
    catalogue_sync()
    group = GroupFactory()
    call_command("seed_usage", group=group.public_id, events=300, days=2, stdout=StringIO())
    events = UsageEvent.objects.filter(group=group)
    assert set(events.values_list("api", flat=True)) == {"chat", "agent", "search", "embeddings"}
    for e in events.filter(api="search").select_related("model")[:20]:  # the request fee only
        fee = {"search-fast": 1_000}.get(e.model.name, 5_000)
        assert (e.cost_micros, e.request_cost_micros, e.prompt_tokens) == (fee, fee, 0)
    for e in events.filter(api="embeddings")[:20]:
        assert (e.completion_tokens, e.tool_calls) == (0, {})
        assert e.cost_micros == e.input_cost_micros
    agent = events.filter(api="agent").exclude(tool_calls={})
    assert agent.exists()
    for e in agent[:20]:
        assert e.tools_cost_micros == sum(c["cost_micros"] for c in e.tool_calls.values())
    total = events.aggregate(s=Sum("cost_micros"))["s"]
    debits = LedgerEntry.objects.filter(account__group=group, kind="usage")
    assert -debits.aggregate(s=Sum("amount_micros"))["s"] == total

"""Search API usage in Usage Metrics, its CSV exports and the Management API: filtered by API
"search" and grouped by API, with the same numbers everywhere, to the micro-dollar."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from django.utils import timezone

from keys.services import api_key_create
from tests.billing.search_usage import search_usage
from usage.catalogue import catalogue_sync
from usage.models import AIModel, RollupState, UsageEvent
from usage.rollups import rollup_range

pytestmark = pytest.mark.django_db


def test_search_usage_is_its_own_api_everywhere(api, admin_client, group):
    catalogue_sync()
    web, fast = AIModel.objects.get(name="search-web"), AIModel.objects.get(name="search-fast")
    key = api_key_create(group=group, name="Server").key
    now = timezone.now()
    at = now.replace(minute=10, second=0, microsecond=0) - timedelta(hours=3)
    total = sum(search_usage(group, key, web, at + timedelta(minutes=i)) for i in range(3))
    total += search_usage(group, key, fast, at + timedelta(minutes=5))
    assert total == 16_000
    chat = UsageEvent.objects.create(
        request_id="chat-1", group=group, api_key=key, model=AIModel.objects.get(name="sonar"),
        prompt_tokens=10, completion_tokens=20, cost_micros=7_777, created_at=at,
    )  # fmt: skip
    rollup_range(at - timedelta(hours=1), now)
    RollupState.objects.update_or_create(pk=1, defaults={"rolled_through": now})

    page = admin_client.get(f"/g/{group.public_id}/usage/", {"range": "24h", "api": "search"})
    dash = page.context["usage"]
    assert (dash.totals.requests, dash.totals.cost_micros, dash.totals.tokens) == (4, 16_000, 0)
    assert [(b.label, b.totals.cost_micros) for b in dash.by_model] == [
        ("search-web", 15_000), ("search-fast", 1_000),
    ]  # fmt: skip

    body = api.get("usage", range="24h", api="search").json()
    assert (body["totals"]["requests"], body["totals"]["cost_micros"]) == (4, 16_000)
    by_api = api.get("usage/grouped", by="api", range="24h").json()["data"]
    assert {(r["api"], r["totals"]["requests"], r["totals"]["cost_micros"]) for r in by_api} == {
        ("search", 4, 16_000), ("chat", 1, chat.cost_micros),
    }  # fmt: skip

    rows = list(csv.DictReader(io.StringIO(b"".join(admin_client.get(
        f"/g/{group.public_id}/usage/export.csv?range=24h&api=search").streaming_content
    ).decode())))  # fmt: skip
    assert {(r["model"], r["api"], r["requests"], r["cost_usd"]) for r in rows} == {
        ("search-web", "search", "3", "0.015000"), ("search-fast", "search", "1", "0.001000"),
    }  # fmt: skip
    raw = list(csv.reader(io.StringIO(b"".join(admin_client.get(
        f"/g/{group.public_id}/usage/events.csv?range=24h").streaming_content
    ).decode())))  # fmt: skip
    header = raw[0]
    apis = sorted(row[header.index("api")] for row in raw[1:])
    assert apis == ["chat", "search", "search", "search", "search"]

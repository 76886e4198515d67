"""Async chat completions in billing: usage events with api="async", metered by the job runner
exactly as it meters them, show in Usage Metrics (the API filter), both CSV exports, the invoice
(a line per model and key, e.g. `sonar-deep-research (743S)`) and the Management API (`api=async`),
agreeing to the micro-dollar."""

from __future__ import annotations

import csv
import io
import time
import uuid
from datetime import timedelta
from decimal import Decimal
from types import SimpleNamespace

import pytest

from billing.invoicing.generation import invoice_generate
from billing.invoicing.periods import period_from_key
from gateway import async_runner
from gateway.models import AsyncJob
from keys.services import api_key_create
from management.services import management_key_create
from tests.billing.invoice_world import OCT, credit, usage
from tests.management.conftest import Api
from usage.catalogue import catalogue_sync
from usage.models import AIModel, UsageEvent

pytestmark = pytest.mark.django_db

RANGE = {"start": "2025-10-01", "end": "2025-10-31"}
MESSAGES = [{"role": "user", "content": "Write a long report on the Danube, with sources."}]


def micros(usd: str) -> int:
    return int(Decimal(usd) * 1_000_000)


def csv_rows(client, url: str, **query: str) -> list[dict[str, str]]:  # type: ignore[no-untyped-def]
    response = client.get(url, {**RANGE, **query})
    assert response.status_code == 200
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))


@pytest.fixture
def october(group, user, monkeypatch):  # type: ignore[no-untyped-def]
    """Three async jobs run in October 2025 by the runner, plus one chat request on the same model
    and key (the API filter must tell them apart)."""
    catalogue_sync()
    model = AIModel.objects.get(name="sonar-deep-research")
    key = api_key_create(group=group, name="Research").key
    credit(group, 50_000_000, OCT)
    for day in (3, 9, 17):
        at = OCT + timedelta(days=day, hours=5)
        job = AsyncJob.objects.create(
            id=uuid.uuid4().hex, group=group, api_key=key, model=model, model_name=model.name,
            request={"model": model.name, "messages": MESSAGES * day}, created_at=at,
        )  # fmt: skip
        # The runner meters at "now": make now October for it.
        clock = SimpleNamespace(time=lambda at=at: at.timestamp(), perf_counter=time.perf_counter)
        monkeypatch.setattr(async_runner, "time", clock)
        assert async_runner.run_job(job.id) == "COMPLETED"
    usage(group, key, model, OCT + timedelta(days=20), cost=12_345)
    mgmt = management_key_create(group=group, name="Ops", role="admin", actor=user)
    return {"group": group, "key": key, "mgmt": mgmt}


def test_async_usage_agrees_everywhere(october, admin_client):
    g, key = october["group"], october["key"]
    events = list(UsageEvent.objects.filter(group=g, api="async"))
    assert len(events) == 3 and all(e.created_at.month == 10 for e in events)
    async_total = sum(e.cost_micros for e in events)
    for e in events:  # each job's reported cost is what its event charged
        job = AsyncJob.objects.get(pk=e.request_id)
        assert round(job.response["usage"]["cost"]["total_cost"] * 1_000_000) == e.cost_micros
    total = async_total + 12_345

    # Usage Metrics: by API, and filtered to async.
    dash = admin_client.get(f"/g/{g.public_id}/usage/", RANGE).context["usage"]
    assert {b.obj: (b.totals.requests, b.totals.cost_micros) for b in dash.by_api} == {
        "async": (3, async_total),
        "chat": (1, 12_345),
    }
    only = admin_client.get(f"/g/{g.public_id}/usage/", {**RANGE, "api": "async"})
    assert only.context["usage"].totals.cost_micros == async_total
    assert only.context["usage"].totals.requests == 3

    # CSV exports
    view = csv_rows(admin_client, f"/g/{g.public_id}/usage/export.csv")
    assert sum(micros(r["cost_usd"]) for r in view if r["api"] == "async") == async_total
    assert sum(micros(r["cost_usd"]) for r in view) == total
    rows = csv_rows(admin_client, f"/g/{g.public_id}/usage/events.csv", api="async")
    assert len(rows) == 3 and sum(micros(r["cost_usd"]) for r in rows) == async_total

    # The invoice: one line for the model and key (async and chat requests of a model are the
    # same product at the same prices).
    inv = invoice_generate(group=g, period=period_from_key("2025-10")).invoice
    assert inv is not None and inv.usage_micros == total
    lines = {ln.label: ln.amount_micros for ln in inv.lines.filter(section="usage")}
    assert lines == {f"sonar-deep-research ({key.last_four})": total}

    # The Management API
    api = Api(admin_client, october["mgmt"].secret)
    assert api.get("usage", api="async", **RANGE).json()["totals"]["cost_micros"] == async_total
    by_api = api.get("usage/grouped", by="api", **RANGE).json()["data"]
    assert {r["api"]: r["totals"]["cost_micros"] for r in by_api} == {
        "async": async_total,
        "chat": 12_345,
    }

"""Embeddings usage everywhere in billing: the Usage Metrics page (filtered by the API), both CSV
exports, the invoice (a line per model and key, `pplx-embed-v1-4b (743S)`) and the Management
API, all agreeing with the raw usage events to the micro-dollar."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import timedelta

import pytest

from billing.invoicing.generation import invoice_generate
from billing.invoicing.periods import period_from_key
from billing.services import ledger_post
from keys.services import api_key_create
from management.services import management_key_create
from tests.billing.invoice_world import OCT, credit, usage
from tests.management.conftest import Api
from usage.catalogue import catalogue_sync
from usage.models import AIModel, UsageEvent
from usage.pricing import Prices, embeddings_cost

pytestmark = pytest.mark.django_db

RANGE = {"start": "2025-10-01", "end": "2025-10-31"}


def embedding(group, key, model, at, tokens: int) -> UsageEvent:  # type: ignore[no-untyped-def]
    """One embeddings request as the gateway meters it (api "embeddings", input tokens only)."""
    cost = embeddings_cost(Prices.of(model), tokens)
    request_id = uuid.uuid4().hex
    event = UsageEvent.objects.create(
        request_id=request_id, group=group, api_key=key, model=model, api="embeddings",
        prompt_tokens=tokens, input_cost_micros=cost.input, cost_micros=cost.total, created_at=at,
    )  # fmt: skip
    if cost.total:
        ledger_post(group=group, amount_micros=-cost.total, kind="usage",
                    reference=f"usage:{request_id}", created_at=at)  # fmt: skip
    return event


def csv_rows(client, url: str, **query: str) -> list[dict[str, str]]:  # type: ignore[no-untyped-def]
    response = client.get(url, {**RANGE, **query})
    assert response.status_code == 200
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))


def usd(text: str) -> int:
    return round(float(text) * 1_000_000)


def test_embeddings_show_in_metrics_csv_invoice_and_management_api(group, user, admin_client):
    catalogue_sync()
    big = AIModel.objects.get(name="pplx-embed-v1-4b")
    small = AIModel.objects.get(name="pplx-embed-v1-0.6b")
    ctx = AIModel.objects.get(name="pplx-embed-context-v1-4b")
    sonar = AIModel.objects.get(name="sonar")
    key = api_key_create(group=group, name="Indexer").key
    credit(group, 10_000_000, OCT)
    # 4b: 100,000 + 50,001 tokens (3,000 + 1,500.03 → 1,500 µ$); 0.6b: 120,000 (480) and 100
    # (0.4 → 0: a free request); context 4b: 20,000 (1,000); and one chat request beside them.
    for i, (model, tokens) in enumerate(
        [(big, 100_000), (big, 50_001), (small, 120_000), (small, 100), (ctx, 20_000)]
    ):
        embedding(group, key, model, OCT + timedelta(days=i + 1), tokens)
    usage(group, key, sonar, OCT + timedelta(days=9), cost=7_000)
    embeddings_total = 3_000 + 1_500 + 480 + 0 + 1_000
    assert (
        sum(UsageEvent.objects.filter(api="embeddings").values_list("cost_micros", flat=True))
        == embeddings_total
    )

    # Usage Metrics: filtered by the API, and in the breakdown by API.
    page = admin_client.get(f"/g/{group.public_id}/usage/", {**RANGE, "api": "embeddings"})
    assert page.status_code == 200
    dash = page.context["usage"]
    assert (dash.totals.requests, dash.totals.cost_micros) == (5, embeddings_total)
    assert dash.totals.prompt_tokens == 290_101
    assert '<option value="embeddings" selected>' in page.content.decode()
    everything = admin_client.get(f"/g/{group.public_id}/usage/", RANGE).context["usage"]
    assert {b.obj: (b.totals.requests, b.totals.cost_micros) for b in everything.by_api} == {
        "embeddings": (5, embeddings_total),
        "chat": (1, 7_000),
    }

    # The CSV exports
    view = csv_rows(admin_client, f"/g/{group.public_id}/usage/export.csv", api="embeddings")
    assert {r["api"] for r in view} == {"embeddings"}
    assert sum(usd(r["cost_usd"]) for r in view) == embeddings_total
    all_rows = csv_rows(admin_client, f"/g/{group.public_id}/usage/export.csv")
    assert sum(usd(r["cost_usd"]) for r in all_rows if r["api"] == "embeddings") == (
        embeddings_total
    )
    events = csv_rows(admin_client, f"/g/{group.public_id}/usage/events.csv", api="embeddings")
    assert len(events) == 5 and {r["model"] for r in events} == {big.name, small.name, ctx.name}
    assert sum(usd(r["cost_usd"]) for r in events) == embeddings_total

    # The invoice: a line per model and key, labelled with the key's last four.
    inv = invoice_generate(group=group, period=period_from_key("2025-10")).invoice
    assert inv is not None and inv.usage_micros == embeddings_total + 7_000
    lines = {ln.label: ln.amount_micros for ln in inv.lines.filter(section="usage")}
    assert lines[f"pplx-embed-v1-4b ({key.last_four})"] == 4_500
    assert lines[f"pplx-embed-v1-0.6b ({key.last_four})"] == 480
    assert lines[f"pplx-embed-context-v1-4b ({key.last_four})"] == 1_000

    # The Management API
    api = Api(admin_client, management_key_create(group=group, name="Ops", role="admin",
                                                   actor=user).secret)  # fmt: skip
    body = api.get("usage", api="embeddings", **RANGE).json()
    assert (body["totals"]["requests"], body["totals"]["cost_micros"]) == (5, embeddings_total)
    by_api = api.get("usage/grouped", by="api", **RANGE).json()["data"]
    assert {r["api"]: r["totals"]["cost_micros"] for r in by_api} == {
        "embeddings": embeddings_total,
        "chat": 7_000,
    }
    by_model = api.get("usage/grouped", by="model", api="embeddings", **RANGE).json()["data"]
    assert sum(r["totals"]["cost_micros"] for r in by_model) == embeddings_total
    assert len(by_model) == 3

"""The usage-metric list is defined once (usage/metrics.py): every typed restatement of it (model
fields, dataclasses, API schemas) and every column list built from it match it, so adding or
renaming a metric in one place and not another fails here."""

from __future__ import annotations

import csv
import io
from dataclasses import fields

import pytest

from billing.invoicing.documents import DraftLine
from billing.models import InvoiceLine
from gateway.metering import METER_COLUMNS
from management import schemas
from usage import metrics
from usage.models import AIModel, UsageEvent, UsageGroupHour, UsageRollup
from usage.pricing import Cost, Prices, Usage, compute_cost
from usage.selectors import Totals


def names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


def model_fields(model: type) -> tuple[str, ...]:
    return tuple(f.attname for f in model._meta.concrete_fields)


def test_the_lists_are_built_from_one_another():
    assert metrics.COUNTS[: len(metrics.TOKEN_COUNTS)] == metrics.TOKEN_COUNTS
    assert ("requests", *metrics.COUNTS, "cost_micros") == metrics.SUMS
    # Every part is priced per unit counted but the request fee (by context size) and the tool
    # fees (per tool).
    assert [part for part, *_ in metrics.PRICED] == [
        p for p in metrics.COST_PARTS if p not in ("request", "tools")
    ]
    assert set(metrics.CACHE_COUNTS) <= set(metrics.COUNTS)
    assert not set(metrics.CACHE_COUNTS) & set(metrics.TOKEN_COUNTS)  # part of prompt_tokens
    assert {count for _, count, _, _ in metrics.PRICED} == set(metrics.COUNTS)


def test_the_typed_declarations_match_the_definition():
    assert names(Prices) == metrics.PRICES
    assert names(Usage) == (*metrics.COUNTS, "search_context_size")
    assert names(Cost) == metrics.COST_PARTS
    assert names(Totals) == metrics.SUMS
    assert set(metrics.COUNTS) <= set(names(DraftLine))
    for model in (UsageRollup, UsageGroupHour):
        assert tuple(f for f in model_fields(model) if f in metrics.SUMS) == metrics.SUMS
    line = model_fields(InvoiceLine)
    assert tuple(f for f in line if f in {"requests", *metrics.COUNTS}) == (
        "requests",
        *metrics.COUNTS,
    )
    assert set(metrics.PRICES) <= set(model_fields(AIModel))
    for schema in (schemas.Totals, schemas.InvoiceLine):
        assert set(metrics.COUNTS) <= set(schema.model_fields)


def test_the_gateway_writes_every_column_of_a_usage_event():
    written = {column for _, column, _ in METER_COLUMNS}
    assert written == set(model_fields(UsageEvent)) - {"id"}
    assert {*metrics.COUNTS, *metrics.COST_COLUMNS} <= written


def test_the_cost_is_the_sum_of_its_parts_to_the_micro_dollar():
    prices = Prices(
        input_per_m=1_000_000, output_per_m=3_000_000, citation_per_m=2_000_000,
        reasoning_per_m=5_000_000, search_per_k=8_000_000, request_low_per_k=6_000_000,
        request_medium_per_k=10_000_000, request_high_per_k=14_000_000,
    )  # fmt: skip
    usage = Usage(
        prompt_tokens=1_234, completion_tokens=567, citation_tokens=89, reasoning_tokens=10,
        search_queries=2, search_context_size="medium",
    )  # fmt: skip
    cost = compute_cost(prices, usage)
    assert cost.parts() == {
        "input": 1_234, "output": 1_701, "citation": 178, "reasoning": 50, "search": 16_000,
        "request": 10_000, "cache_read": 0, "cache_write": 0, "tools": 0,
    }  # fmt: skip
    assert cost.total == 29_163


@pytest.mark.django_db
def test_the_raw_csv_export_keeps_its_columns(admin_client, group):  # type: ignore[no-untyped-def]
    response = admin_client.get(f"/g/{group.public_id}/usage/events.csv?range=24h")
    assert response.status_code == 200
    header = next(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert header == [
        "request_id", "time", "key", "api_key", "model", "api", "prompt_tokens",
        "completion_tokens", "citation_tokens", "reasoning_tokens", "search_queries",
        "cache_read_tokens", "cache_write_tokens", "search_context_size", "cost_usd", "streamed",
        "latency_ms", "end_user", "tags", "tool_calls", "tool_invocations", "tool_fees_usd",
    ]  # fmt: skip


def test_an_invoice_line_shows_every_token_but_the_prompt_as_output():
    line = InvoiceLine(
        prompt_tokens=1_000, completion_tokens=200, citation_tokens=30, reasoning_tokens=4
    )
    assert line.output_tokens == 234

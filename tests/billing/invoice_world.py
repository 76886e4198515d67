"""Helpers for invoice tests: usage booked the way the gateway books it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from billing.services import ledger_post
from usage.metrics import COST_PARTS
from usage.models import ToolPrice, UsageEvent
from usage.pricing import AgentPrices, AgentUsage, Prices, agent_cost

OCT = datetime(2025, 10, 1, tzinfo=UTC)
NOV = datetime(2025, 11, 1, tzinfo=UTC)


def usage(
    group: Any,
    key: Any,
    model: Any,
    at: datetime,
    *,
    cost: int,
    prompt: int = 100,
    completion: int = 200,
    searches: int = 0,
) -> UsageEvent:
    """One metered request: a usage event and its ledger debit with the same timestamp (as the
    gateway's one-statement METER_SQL writes them; zero-cost requests have no debit)."""
    request_id = uuid.uuid4().hex
    event = UsageEvent.objects.create(
        request_id=request_id, group=group, api_key=key, model=model, prompt_tokens=prompt,
        completion_tokens=completion, search_queries=searches, cost_micros=cost, created_at=at,
    )  # fmt: skip
    if cost:
        ledger_post(
            group=group,
            amount_micros=-cost,
            kind="usage",
            reference=f"usage:{request_id}",
            created_at=at,
        )
    return event


def agent_usage(
    group: Any,
    key: Any,
    model: Any,
    at: datetime,
    *,
    prompt: int = 1_000,
    completion: int = 300,
    cached: int = 0,
    tools: dict[str, int] | None = None,
) -> UsageEvent:
    """One metered Agent API response, priced by usage.pricing.agent_cost from the catalogue's
    prices and tool fees (as the gateway prices it), with its ledger debit."""
    fees = dict(ToolPrice.objects.filter(enabled=True).values_list("name", "fee_per_k"))
    cost = agent_cost(
        AgentPrices(Prices.of(model), fees),
        AgentUsage(prompt, completion, cached, 0, tools or {}),
    )
    request_id = uuid.uuid4().hex
    parts = cost.parts()
    event = UsageEvent.objects.create(
        request_id=request_id, group=group, api_key=key, model=model, api="agent",
        prompt_tokens=prompt, completion_tokens=completion, cache_read_tokens=cached,
        **{f"{part}_cost_micros": parts[part] for part in COST_PARTS},
        tool_calls=cost.tool_calls_json(), cost_micros=cost.total, created_at=at,
    )  # fmt: skip
    if cost.total:
        ledger_post(
            group=group,
            amount_micros=-cost.total,
            kind="usage",
            reference=f"usage:{request_id}",
            created_at=at,
        )
    return event


def credit(group: Any, amount: int, at: datetime, kind: str = "purchase") -> None:
    ledger_post(
        group=group,
        amount_micros=amount,
        kind=kind,
        reference=f"{kind}:{uuid.uuid4().hex}",
        description=f"{kind.replace('_', ' ').title()}",
        created_at=at,
    )

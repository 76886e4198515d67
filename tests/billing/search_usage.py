"""Search API usage booked the way the gateway books it (gateway/search.py meter_params)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from billing.services import ledger_post
from usage.models import UsageEvent
from usage.pricing import Prices, Usage, compute_cost


def search_usage(group: Any, key: Any, model: Any, at: datetime, context: str = "low") -> int:
    """One metered search: api "search", one request, no tokens, the model's request fee; with
    its ledger debit. Returns the cost in micros."""
    cost = compute_cost(Prices.of(model), Usage(search_context_size=context))
    request_id = uuid.uuid4().hex
    UsageEvent.objects.create(
        request_id=request_id, group=group, api_key=key, model=model, api="search",
        search_context_size=context, request_cost_micros=cost.request, cost_micros=cost.total,
        created_at=at,
    )  # fmt: skip
    ledger_post(
        group=group, amount_micros=-cost.total, kind="usage", reference=f"usage:{request_id}",
        created_at=at,
    )  # fmt: skip
    return cost.total

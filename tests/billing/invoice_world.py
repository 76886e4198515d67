"""Helpers for invoice tests: usage booked the way the gateway books it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from billing.services import ledger_post
from usage.models import UsageEvent

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


def credit(group: Any, amount: int, at: datetime, kind: str = "purchase") -> None:
    ledger_post(
        group=group,
        amount_micros=amount,
        kind=kind,
        reference=f"{kind}:{uuid.uuid4().hex}",
        description=f"{kind.replace('_', ' ').title()}",
        created_at=at,
    )

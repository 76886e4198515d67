from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from django.db.models import Count, QuerySet, Sum
from django.db.models.functions import TruncDate
from django.shortcuts import get_object_or_404

from billing.models import CreditAccount, EntryKind, Invoice, LedgerEntry
from usage.models import AIModel
from usage.tiers import Tier, next_tier, tier_for


@dataclass(frozen=True)
class ModelLimit:
    model: str
    rpm: int


@dataclass(frozen=True)
class TierInfo:
    tier: Tier
    next: Tier | None
    limits: list[ModelLimit]


def credit_account_get(*, group: Any) -> CreditAccount:
    account, _ = CreditAccount.objects.get_or_create(group=group)
    return account


def tier_info(*, account: CreditAccount) -> TierInfo:
    tier = tier_for(account.purchased_micros)
    limits = [
        ModelLimit(m.name, m.rate_limit_rpm * tier.multiplier)
        for m in AIModel.objects.filter(enabled=True).only("name", "rate_limit_rpm")
    ]
    return TierInfo(tier=tier, next=next_tier(account.purchased_micros), limits=limits)


def ledger_transactions(*, account: CreditAccount) -> QuerySet[LedgerEntry]:
    """Money in and out other than per-request usage (which is shown per day)."""
    return account.entries.exclude(kind=EntryKind.USAGE).select_related("created_by")


@dataclass(frozen=True)
class UsageDay:
    day: date
    requests: int
    amount_micros: int


def usage_by_day(*, account: CreditAccount, limit: int = 30) -> list[UsageDay]:
    rows = (
        account.entries.filter(kind=EntryKind.USAGE)
        .annotate(day=TruncDate("created_at"))
        .values("day")
        .annotate(requests=Count("id"), amount=Sum("amount_micros"))
        .order_by("-day")[:limit]
    )
    return [UsageDay(r["day"], r["requests"], r["amount"]) for r in rows]


def invoices_for_group(*, group: Any) -> QuerySet[Invoice]:
    """The group's invoices and credit notes, newest period first, with what each note corrects."""
    return Invoice.objects.filter(group=group).select_related("corrects")


def invoice_get_for_group(*, group: Any, public_id: str) -> Invoice:
    """The group's invoice or credit note with this id; 404 for any other group's."""
    return get_object_or_404(invoices_for_group(group=group), public_id=public_id)

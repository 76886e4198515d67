from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from django.db.models import Count, QuerySet, Sum
from django.db.models.functions import TruncDate
from django.shortcuts import get_object_or_404
from django.utils import timezone

from billing import windows
from billing.credits import lots_projected
from billing.models import (
    BillingProfile,
    Budget,
    CreditAccount,
    CreditLot,
    EntryKind,
    Invoice,
    LedgerEntry,
    LotKind,
    Payment,
    PaymentKind,
    PaymentMethod,
    PaymentStatus,
)
from usage.models import AIModel, RateLimit, UsageEvent
from usage.tiers import Tier, default_family, family_label, next_tier, own_limits, tier_for


@dataclass(frozen=True)
class FamilyLimit:
    """An API family's limit at one tier, per API group: requests per minute and/or second."""

    family: str
    label: str
    rpm: int | None
    rps: int | None
    # "published": Perplexity's number; "ours": Perplexity publishes none (the operator's
    # choice); "model": a model limited by its own rate_limit_rpm (no [limits] row).
    source: str = "published"


@dataclass(frozen=True)
class TierInfo:
    tier: Tier
    next: Tier | None
    limits: list[FamilyLimit]


def credit_account_get(*, group: Any) -> CreditAccount:
    """Return the group's credit account (every group has one from `api_group_create`)."""
    return CreditAccount.objects.get(group=group)


def billing_profile_get(*, group: Any) -> BillingProfile:
    """Return the group's billing profile, or an unsaved default one (nothing set up yet)."""
    return BillingProfile.objects.filter(group=group).first() or BillingProfile(group=group)


def payment_methods_for_group(*, group: Any) -> QuerySet[PaymentMethod]:
    return PaymentMethod.objects.filter(group=group)


def payment_method_get_for_group(*, group: Any, stripe_id: str) -> PaymentMethod:
    """The group's saved card with this Stripe id; 404 for any other group's."""
    return get_object_or_404(payment_methods_for_group(group=group), stripe_id=stripe_id)


def payment_get_for_group(*, group: Any, public_id: str, status: str | None = None) -> Payment:
    """The group's payment with this id (in this status, if given); 404 for any other group's."""
    payments = Payment.objects.filter(group=group).select_related("group")
    if status is not None:
        payments = payments.filter(status=status)
    return get_object_or_404(payments, public_id=public_id)


def payment_awaiting_action(*, group: Any) -> Payment | None:
    """A payment of the group that waits for an Admin to authenticate it with the bank."""
    return Payment.objects.filter(group=group, status=PaymentStatus.REQUIRES_ACTION).first()


def purchases_processing(*, group: Any) -> QuerySet[Payment]:
    """The group's credit purchases that are queued or being charged right now."""
    return Payment.objects.filter(
        group=group, kind=PaymentKind.PURCHASE, status=PaymentStatus.CREATING
    )


def receipts_for_group(*, group: Any) -> QuerySet[Payment]:
    """The group's paid card payments (each has a receipt), newest first."""
    return Payment.objects.filter(group=group, status=PaymentStatus.SUCCEEDED)


def tier_info(*, account: CreditAccount) -> TierInfo:
    """The group's tier and each API family's limit at it (as the gateway applies them)."""
    tier = tier_for(account.purchased_micros)
    rows = {r.name: r for r in RateLimit.objects.filter(enabled=True)}
    limits = [
        FamilyLimit(
            name,
            family_label(name),
            r.per_minute[tier.number] if r.per_minute else None,
            r.per_second[tier.number] if r.per_second else None,
            "published" if r.published else "ours",
        )
        for name, r in rows.items()
    ]
    for m in AIModel.objects.filter(enabled=True).only("name", "api", "rate_limit_rpm"):
        if default_family(m.name, m.apis) not in rows:
            limits.append(
                FamilyLimit(
                    m.name,
                    family_label(m.name),
                    own_limits(m.rate_limit_rpm)[tier.number],
                    None,
                    "model",
                )
            )
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


@dataclass(frozen=True)
class CreditLots:
    """What a balance is made of: promotional grants (each with its remaining amount and
    expiry) and paid credit, with the usage not yet attributed attributed as the next
    settlement will (billing/credits.py)."""

    grants: list[CreditLot]
    promotional_remaining_micros: int
    paid_remaining_micros: int


GRANTS_SHOWN_AFTER_END = timedelta(days=90)


def credit_lots_for_account(*, account: CreditAccount) -> CreditLots:
    """Open lots as projected now, plus promotional grants ended (used up or expired) in the
    last 90 days; grants newest first."""
    now = timezone.now()
    lots = lots_projected(account=account, now=now)
    open_ids = {lot.pk for lot in lots}
    ended = (
        CreditLot.objects.filter(account=account, kind=LotKind.PROMOTIONAL)
        .exclude(pk__in=open_ids)
        .filter(created_at__gte=now - GRANTS_SHOWN_AFTER_END)
        .select_related("entry", "expiry_entry")
    )
    by_pk = {
        lot.pk: lot
        for lot in CreditLot.objects.filter(pk__in=open_ids).select_related("entry", "expiry_entry")
    }
    for lot in lots:  # keep the projected remaining, with the related rows loaded
        by_pk[lot.pk].remaining_micros = lot.remaining_micros
    grants = [lot for lot in by_pk.values() if lot.kind == LotKind.PROMOTIONAL] + list(ended)
    grants.sort(key=lambda lot: (lot.created_at, lot.pk), reverse=True)
    return CreditLots(
        grants=grants,
        promotional_remaining_micros=sum(
            lot.remaining_micros for lot in lots if lot.kind == LotKind.PROMOTIONAL
        ),
        paid_remaining_micros=sum(lot.remaining_micros for lot in lots if lot.kind == LotKind.PAID),
    )


# --- budgets --------------------------------------------------------------------------------


def budget_window(budget: Budget, now: datetime | None = None) -> tuple[datetime, datetime | None]:
    """[start, end) of the budget's current window in its group's time zone (billing/windows.py);
    end is None for a lifetime budget."""
    return windows.bounds(budget.window, budget.group.time_zone, now)


def budget_spend(
    budget: Budget, now: datetime | None = None
) -> tuple[int, datetime, datetime | None]:
    """(spent_micros, window_start, window_end) of the budget's current window: the usage
    committed to PostgreSQL by its group (or its key) since the window started. In stream
    metering mode the last GATEWAY_SETTLE_INTERVAL of usage may not be in yet."""
    start, end = budget_window(budget, now)
    events = UsageEvent.objects.filter(group_id=budget.group_id, created_at__gte=start)
    if budget.api_key_id is not None:
        events = events.filter(api_key_id=budget.api_key_id)
    if end is not None:
        events = events.filter(created_at__lt=end)
    spent = events.aggregate(total=Sum("cost_micros"))["total"] or 0
    return int(spent), start, end


@dataclass(frozen=True)
class BudgetStatus:
    """A budget with what its current window has spent (for the API Keys and Billing pages)."""

    budget: Budget
    spent_micros: int
    window_start: datetime
    window_end: datetime | None

    @property
    def remaining_micros(self) -> int:
        return max(0, self.budget.amount_micros - self.spent_micros)

    @property
    def percent(self) -> int:
        return min(100, self.spent_micros * 100 // self.budget.amount_micros)

    @property
    def exceeded(self) -> bool:
        return self.spent_micros >= self.budget.amount_micros


def budgets_for_group(
    *, group: Any, keys: bool | None = None, now: datetime | None = None
) -> list[BudgetStatus]:
    """The group's budgets with their spend: keys=False its own, True its keys', None both."""
    budgets = Budget.objects.filter(group=group).select_related("group", "api_key")
    if keys is False:
        budgets = budgets.filter(api_key__isnull=True)
    elif keys is True:
        budgets = budgets.filter(api_key__isnull=False)
    out = []
    for budget in budgets.order_by("api_key_id", "window", "pk"):
        spent, start, end = budget_spend(budget, now)
        out.append(BudgetStatus(budget, spent, start, end))
    return out


def budget_get_for_group(*, group: Any, budget_id: int) -> Budget:
    """One of the group's budgets (another group's, or none: 404)."""
    return get_object_or_404(
        Budget.objects.select_related("group", "api_key"), group=group, pk=budget_id
    )

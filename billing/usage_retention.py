"""Retention of raw usage events (USAGE_RAW_RETENTION_MONTHS): a month's partition is dropped
only when nothing can still need its raw events. Lives in billing because the rule is billing's.

A month M (UTC) may go when all of these hold, checked in this order:
1. M ended more than USAGE_RAW_RETENTION_MONTHS months ago (with 3: in December, August and
   earlier), and every earlier month still kept may go too (oldest first; the raw events that are
   left are always one unbroken range from RollupState.raw_from on);
2. the rollups are complete through M's end (RollupState.rolled_through);
3. every billing period overlapping M has ended, and so have the INVOICE_LATE_USAGE_PERIODS
   periods after it whose invoices look back at it for late usage;
4. every group's usage in those periods (hourly rollups) equals what its issued invoices bill for
   them (usage and late-usage lines; invoices are immutable once written, so issued = final);
5. M's raw events equal its rollups, per group (requests and cost; one scan of the partition).
Dropping is DETACH + DROP of one partition: O(1). What stays: the hourly and daily rollups (the
dashboards, exports and the Management API's usage), the invoices and their lines, and the ledger
(every usage debit, `usage:<request_id>`). RollupState.raw_from records where raw events begin;
invoices skip late-usage checks before it and refuse periods before it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.db import connection
from django.db.models import Sum
from django.utils import timezone

from billing.invoicing.periods import BillingPeriod, period_containing
from billing.models import InvoiceKind, InvoiceLine, LineSection
from usage import partitions
from usage.models import RollupState, UsageRollup

log = logging.getLogger(__name__)

MAX_REASONS = 5  # groups listed per reason


@dataclass
class RetentionRun:
    dropped: list[str] = field(default_factory=list)
    kept: dict[str, list[str]] = field(default_factory=dict)  # partition → why it stays


def periods_overlapping(start: datetime, end: datetime) -> list[BillingPeriod]:
    found = [period_containing(start)]
    while found[-1].end < end:
        found.append(period_containing(found[-1].end))
    return found


def _invoiced(period: BillingPeriod) -> dict[int, int]:
    rows = (
        InvoiceLine.objects.filter(
            invoice__kind=InvoiceKind.INVOICE,
            section__in=(LineSection.USAGE, LineSection.LATE_USAGE),
            service_period_key=period.key,
        )
        .values("invoice__group_id")
        .annotate(total=Sum("amount_micros"))
    )
    return {r["invoice__group_id"]: int(r["total"]) for r in rows}


def _rolled(period: BillingPeriod) -> dict[int, int]:
    rows = (
        UsageRollup.objects.filter(period="hour", start__gte=period.start, start__lt=period.end)
        .values("group_id")
        .annotate(total=Sum("cost_micros"))
    )
    return {r["group_id"]: int(r["total"]) for r in rows}


def _listed(items: list[str]) -> str:
    more = f" and {len(items) - MAX_REASONS} more" if len(items) > MAX_REASONS else ""
    return "; ".join(items[:MAX_REASONS]) + more


def blockers(month: datetime, now: datetime | None = None) -> list[str]:
    """Why `month`'s raw events must stay (conditions 2–5 above); empty when they may go."""
    now = now or timezone.now()
    start = partitions.month_of(month)
    end = partitions.add_months(start, 1)
    state = RollupState.objects.filter(pk=1).first()
    through = state.rolled_through if state else None
    if through is None or through < end:
        return [f"the rollups are complete only through {through or 'nothing yet'}"]
    periods = periods_overlapping(start, end)
    horizon = periods[-1]
    for _ in range(settings.INVOICE_LATE_USAGE_PERIODS):
        horizon = period_containing(horizon.end)
    if horizon.end > now:
        return [f"invoices up to {horizon.key} may still read this month's events"]
    reasons = []
    for period in periods:
        rolled, invoiced = _rolled(period), _invoiced(period)
        unbilled = [
            f"group {g}: {rolled.get(g, 0)} µ$ used, {invoiced.get(g, 0)} µ$ invoiced"
            for g in sorted(set(rolled) | set(invoiced))
            if rolled.get(g, 0) != invoiced.get(g, 0)
        ]
        if unbilled:
            reasons.append(f"{period.key} is not fully invoiced: {_listed(unbilled)}")
    if reasons:
        return reasons
    if differ := partitions.raw_vs_rollups(start):
        return [f"raw events differ from the rollups: {_listed(differ)}"]
    return []


def apply_retention(now: datetime | None = None, months: int | None = None) -> RetentionRun:
    """Drop the raw usage months that may go (oldest first, stopping at the first that may not).
    Does nothing when USAGE_RAW_RETENTION_MONTHS is unset (`months` overrides it)."""
    now = now or timezone.now()
    months = settings.USAGE_RAW_RETENTION_MONTHS if months is None else months
    run = RetentionRun()
    if months is None:
        return run
    cutoff = partitions.add_months(partitions.month_of(now), -months)
    with connection.cursor() as cursor:
        candidates = sorted(
            (m, name) for m, name in partitions.month_partitions(cursor).items() if m < cutoff
        )
    for month, name in candidates:
        reasons = blockers(month, now)
        if reasons:
            run.kept[name] = reasons
            log.warning("usage retention: keeping %s: %s", name, " | ".join(reasons))
            break
        partitions.drop_month(month)
        end = partitions.add_months(month, 1)
        state, _ = RollupState.objects.get_or_create(pk=1)
        if state.raw_from is None or state.raw_from < end:
            state.raw_from = end
            state.save(update_fields=["raw_from"])
        run.dropped.append(name)
        log.info("usage retention: dropped %s (raw events of %s)", name, f"{month:%Y-%m}")
    return run

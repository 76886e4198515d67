"""Issuing the invoices of a closed period: once per group, however often it is asked for."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from billing.invoicing import InvoiceError
from billing.invoicing.allocation import allocate_cents
from billing.invoicing.documents import (
    document_insert,
    document_number_next,
    group_address,
    issuer_details,
)
from billing.invoicing.drafts import Draft, draft_read
from billing.invoicing.periods import BillingPeriod
from billing.models import BILLED_SECTIONS, Invoice, InvoiceKind, InvoiceStatus
from billing.tasks import invoice_mirror_to_stripe
from core import faults
from core.money import micros_to_cents
from groups.models import APIGroup, new_public_id
from usage.rollups import raw_events_from

log = logging.getLogger(__name__)

LOCK_CLASS = 7_107  # pg_advisory_lock(classid, objid) namespace for invoice generation


@contextmanager
def _group_lock(group_id: int) -> Iterator[None]:
    """One generator per group at a time, across processes (session-level advisory lock)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_lock(%s, %s)", [LOCK_CLASS, group_id])
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s, %s)", [LOCK_CLASS, group_id])


def _invoice(
    *, group: APIGroup, period: BillingPeriod, draft: Draft, total_cents: int, now: datetime
) -> Invoice:
    """The unsaved invoice: the group's and operator's details as they are now, the draft's sums."""
    return Invoice(
        public_id=new_public_id(),
        number=document_number_next("INV", now.year),
        kind=InvoiceKind.INVOICE,
        status=InvoiceStatus.PAID,
        group=group,
        period_key=period.key,
        period_start=period.start,
        period_end=period.end,
        issued_at=now,
        bill_to_name=group.name,
        bill_to_address=group_address(group),
        bill_to_tax_id=group.tax_id,
        **issuer_details(),
        usage_micros=draft.usage,
        total_cents=total_cents,
        opening_balance_micros=draft.opening,
        purchases_micros=draft.purchases,
        refunds_micros=draft.refunds,
        other_credits_micros=draft.other,
        closing_balance_micros=draft.closing,
    )


@dataclass(frozen=True)
class GenerateResult:
    invoice: Invoice | None
    created: bool


def invoice_generate(*, group: APIGroup, period: BillingPeriod) -> GenerateResult:
    """Issue the group's invoice for a closed period, once. None when there was no activity."""
    if period.end > timezone.now():
        raise InvoiceError(f"The period {period.key} has not ended yet.")
    raw_from = raw_events_from()
    if raw_from is not None and period.start < raw_from:
        raise InvoiceError(
            f"The raw usage of {period.key} was dropped (USAGE_RAW_RETENTION_MONTHS); "
            "its invoices were issued before."
        )
    with _group_lock(group.pk):
        existing = Invoice.objects.filter(
            group=group, kind=InvoiceKind.INVOICE, period_key=period.key
        ).first()
        if existing is not None:
            return GenerateResult(existing, created=False)
        draft = draft_read(group, period)
        if draft is None:
            return GenerateResult(None, created=False)
        billed = [ln for ln in draft.lines if ln.section in BILLED_SECTIONS]
        cents = allocate_cents([ln.amount_micros for ln in billed])
        cents_of = {id(ln): c for ln, c in zip(billed, cents, strict=True)}
        group.refresh_from_db()
        with transaction.atomic():
            # The number is taken inside the inserting transaction, so a rollback leaves no gap.
            invoice = _invoice(
                group=group, period=period, draft=draft, total_cents=sum(cents), now=timezone.now()
            )
            # Listed credits (purchases, refunds…) are whole cents; shown rounded by the rule.
            document_insert(
                invoice,
                [
                    (ln, cents_of.get(id(ln), micros_to_cents(ln.amount_micros)))
                    for ln in draft.lines
                ],
            )
            faults.pause("invoice_saved")  # reliability tests kill the worker before commit
            if settings.INVOICE_STRIPE_MIRROR:
                invoice_mirror_to_stripe.delay_on_commit(invoice.pk)
        return GenerateResult(invoice, created=True)


@dataclass
class RunSummary:
    period: BillingPeriod
    groups: int = 0
    created: int = 0
    existing: int = 0
    idle: int = 0
    failed: list[str] = field(default_factory=list)
    seconds: float = 0.0


def invoices_generate(
    *,
    period: BillingPeriod,
    group_ids: Iterable[int] | None = None,
    progress: Callable[[RunSummary], None] | None = None,
    every: int = 100,
) -> RunSummary:
    """Generate the period's invoices for the given groups (all groups by default)."""
    summary = RunSummary(period=period)
    started = time.monotonic()
    ids = (
        list(group_ids)
        if group_ids is not None
        else list(APIGroup.objects.order_by("pk").values_list("pk", flat=True))
    )
    for n, group in enumerate(APIGroup.objects.filter(pk__in=ids).order_by("pk").iterator(), 1):
        summary.groups += 1
        try:
            result = invoice_generate(group=group, period=period)
        except InvoiceError as exc:
            log.error("invoice for group %s, %s not issued: %s", group.pk, period.key, exc)
            summary.failed.append(f"{group.public_id}: {exc}")
        else:
            if result.invoice is None:
                summary.idle += 1
            elif result.created:
                summary.created += 1
            else:
                summary.existing += 1
        summary.seconds = time.monotonic() - started
        if progress and (n % every == 0 or n == len(ids)):
            progress(summary)
    summary.seconds = time.monotonic() - started
    return summary

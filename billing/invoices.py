"""Invoices: one per group and closed period, built from usage events and the ledger.

What an invoice holds
- One usage line per (model, key) of the period — requests, tokens, searches and the amount —
  labelled `MODEL (LAST4)` with the key's last four characters as they were when it was issued.
- Late usage: events that reached the database after an earlier period's invoice was made (they
  carry their original timestamp) are billed on the next invoice as lines of their own,
  "sonar (743S) · usage from October 2026". Nothing is ever billed twice or lost: for each of the
  last `INVOICE_LATE_USAGE_PERIODS` periods the invoiced quantities are compared with the events.
- The period's credit purchases, auto top-ups, refunds, promotional credits and adjustments
  (listed, not part of the total: usage is prepaid and settled from credits).
- Opening balance + credits − usage = closing balance, to the micro-dollar.

Reconciliation: the usage lines of the period sum, in micros, to the ledger's usage debits of
the period (the gateway writes each usage event and its ledger debit in one statement with the
same timestamp). The generator checks this and refuses to issue an invoice that does not add up.

Rounding rule (the only place invoice amounts are rounded): the invoice total is the exact sum of
its billed lines in micros, rounded once to cents, half away from zero (`billing.money`). That
total is then shared out over the lines by the largest-remainder method: every line gets its
amount rounded down to a cent, and the cents still missing go one each to the lines with the
largest remainders (ties: the earlier line). So the displayed lines always add up to the
displayed total, and the total never drifts from the ledger by more than half a cent — even for
an invoice made of thousands of sub-cent lines.

Idempotency: a session-level advisory lock per group serializes generation; an existing invoice
for the group and period is returned as it is; a unique constraint backs this up. Numbers come
from `InvoiceSequence` inside the inserting transaction, so they are gap-free per prefix and year
(`INV-2026-000123`; credit notes `CN-2026-000007`). Finalized invoices are immutable (database
trigger); corrections are credit notes.
"""

from __future__ import annotations

import calendar
import logging
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from django_countries import countries

from audit.services import audit_record
from billing.models import (
    BILLED_SECTIONS,
    CreditAccount,
    EntryKind,
    Invoice,
    InvoiceKind,
    InvoiceLine,
    InvoiceStatus,
    LineSection,
)
from billing.money import MICROS_PER_CENT, micros_to_cents
from groups.models import APIGroup, new_public_id
from portal import faults

log = logging.getLogger(__name__)

LOCK_CLASS = 7_107  # pg_advisory_lock(classid, objid) namespace for invoice generation


class InvoiceError(ValueError):
    """An invoice that cannot be issued; the message says why."""


# --- Periods -------------------------------------------------------------------------------


@dataclass(frozen=True)
class BillingPeriod:
    key: str  # "2026-10" (month) or "2026-W43" (ISO week)
    start: datetime  # UTC, inclusive
    end: datetime  # UTC, exclusive

    @property
    def unit(self) -> str:
        return "week" if "W" in self.key else "month"

    @property
    def label(self) -> str:
        if self.unit == "week":
            last = self.end - timedelta(days=1)
            return f"Week {self.key[-2:]}, {self.start:%b} {self.start.day} – {last:%b} {last.day}, {last.year}"
        return f"{calendar.month_name[self.start.month]} {self.start.year}"

    def previous(self) -> BillingPeriod:
        return period_containing(self.start - timedelta(seconds=1), self.unit)


_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
_WEEK = re.compile(r"^(\d{4})-W(\d{2})$")


def period_from_key(key: str) -> BillingPeriod:
    """Parse "2026-10" (a calendar month) or "2026-W43" (an ISO week), in UTC."""
    key = key.strip()
    if m := _MONTH.match(key):
        year, month = int(m[1]), int(m[2])
        if not (2000 <= year <= 2999 and 1 <= month <= 12):
            raise InvoiceError(f"“{key}” is not a month; use YYYY-MM, e.g. 2026-10.")
        start = datetime(year, month, 1, tzinfo=UTC)
        end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
        return BillingPeriod(key, start, end)
    if m := _WEEK.match(key):
        try:
            day = date.fromisocalendar(int(m[1]), int(m[2]), 1)
        except ValueError:
            raise InvoiceError(
                f"“{key}” is not an ISO week; use YYYY-Www, e.g. 2026-W43."
            ) from None
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        return BillingPeriod(key, start, start + timedelta(days=7))
    raise InvoiceError(f"“{key}” is not a billing period; use YYYY-MM (or YYYY-Www for weeks).")


def period_containing(moment: datetime, unit: str | None = None) -> BillingPeriod:
    unit = unit or settings.INVOICE_PERIOD
    moment = moment.astimezone(UTC)
    if unit == "week":
        year, week, _ = moment.isocalendar()
        return period_from_key(f"{year}-W{week:02d}")
    return period_from_key(f"{moment.year}-{moment.month:02d}")


def period_just_closed(now: datetime | None = None, unit: str | None = None) -> BillingPeriod:
    """The last period that has ended by `now` (the one the scheduled run invoices)."""
    return period_containing(now or timezone.now(), unit).previous()


# --- Rounding ------------------------------------------------------------------------------


def allocate_cents(amounts_micros: list[int]) -> list[int]:
    """Share the rounded total of non-negative amounts out over them (largest remainder).

    Returns cents per amount, summing exactly to `micros_to_cents(sum(amounts_micros))`.
    """
    if any(a < 0 for a in amounts_micros):
        raise InvoiceError("Only non-negative amounts are shared out.")
    total = micros_to_cents(sum(amounts_micros))
    cents = [a // MICROS_PER_CENT for a in amounts_micros]
    missing = total - sum(cents)
    order = sorted(
        range(len(amounts_micros)), key=lambda i: (-(amounts_micros[i] % MICROS_PER_CENT), i)
    )
    for i in order[:missing]:
        cents[i] += 1
    return cents


# --- Generation ----------------------------------------------------------------------------


@dataclass
class _Line:
    section: str
    label: str
    amount_micros: int
    model_name: str = ""
    key_name: str = ""
    key_last_four: str = ""
    api_key_id: int | None = None
    service_period_key: str = ""
    occurred_at: datetime | None = None
    reference: str = ""
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    citation_tokens: int = 0
    reasoning_tokens: int = 0
    search_queries: int = 0


@dataclass
class _Draft:
    lines: list[_Line] = field(default_factory=list)
    opening: int = 0
    closing: int = 0
    purchases: int = 0
    refunds: int = 0
    other: int = 0
    usage: int = 0


_METRICS = (
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "citation_tokens",
    "reasoning_tokens",
    "search_queries",
    "amount_micros",
)

_USAGE_SQL = """
SELECT {bucket} e.model_id, e.api_key_id, count(*), sum(e.prompt_tokens),
       sum(e.completion_tokens), sum(e.citation_tokens), sum(e.reasoning_tokens),
       sum(e.search_queries), sum(e.cost_micros)
  FROM usage_usageevent e
 WHERE e.group_id = %s AND e.created_at >= %s AND e.created_at < %s
 GROUP BY {group_by}
"""


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


@contextmanager
def _snapshot() -> Iterator[None]:
    """A read-only transaction that sees one snapshot (REPEATABLE READ) for all its queries."""
    outermost = not connection.in_atomic_block
    with transaction.atomic():
        if outermost:
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        yield


def _names(model_ids: Iterable[int], key_ids: Iterable[int]) -> tuple[dict, dict]:
    from keys.models import APIKey  # noqa: PLC0415
    from usage.models import AIModel  # noqa: PLC0415

    models = dict(AIModel.objects.filter(pk__in=set(model_ids)).values_list("pk", "name"))
    keys = {
        k["pk"]: (k["name"], k["last_four"])
        for k in APIKey.objects.filter(pk__in=set(key_ids)).values("pk", "name", "last_four")
    }
    return models, keys


def _usage_line(
    section: str, row: tuple, models: dict, keys: dict, service_period: BillingPeriod
) -> _Line:
    model_id, key_id, *metrics = row
    model = models[model_id]
    key_name, last_four = keys[key_id]
    label = f"{model} ({last_four})"
    if section == LineSection.LATE_USAGE:
        label += f" · usage from {service_period.label}"
    return _Line(
        section=section,
        label=label,
        model_name=model,
        key_name=key_name,
        key_last_four=last_four,
        api_key_id=key_id,
        service_period_key=service_period.key,
        **dict(zip(_METRICS, (int(v) for v in metrics), strict=True)),  # type: ignore[arg-type]
    )


def _late_usage(
    group: APIGroup, period: BillingPeriod, cursor: Any
) -> list[tuple[BillingPeriod, tuple]]:
    """(earlier period, row) for usage of earlier invoiced periods that no invoice covers yet."""
    lookback = settings.INVOICE_LATE_USAGE_PERIODS
    first = (
        Invoice.objects.filter(group=group, kind=InvoiceKind.INVOICE)
        .order_by("period_start")
        .values_list("period_start", flat=True)
        .first()
    )
    if first is None or lookback < 1:
        return []
    periods: list[BillingPeriod] = []
    p = period
    for _ in range(lookback):
        p = p.previous()
        if p.start < first:
            break
        periods.append(p)
    if not periods:
        return []
    invoiced: dict[tuple[str, str, int], list[int]] = defaultdict(lambda: [0] * len(_METRICS))
    for line in InvoiceLine.objects.filter(
        invoice__group=group,
        section__in=(LineSection.USAGE, LineSection.LATE_USAGE),
        service_period_key__in=[p.key for p in periods],
    ).values("service_period_key", "model_name", "api_key_id", *_METRICS):
        acc = invoiced[(line["service_period_key"], line["model_name"], line["api_key_id"])]
        for i, metric in enumerate(_METRICS):
            acc[i] += line[metric]
    late: list[tuple[BillingPeriod, tuple]] = []
    for p in periods:
        cursor.execute(_USAGE_SQL.format(bucket="", group_by="1, 2"), [group.pk, p.start, p.end])
        rows = cursor.fetchall()
        if not rows:
            continue
        models, _ = _names((r[0] for r in rows), ())
        for row in rows:
            model_id, key_id, *now = (int(v) for v in row)
            before = invoiced.get((p.key, models[model_id], key_id), [0] * len(_METRICS))
            diff = [a - b for a, b in zip(now, before, strict=True)]
            if any(diff):
                late.append((p, (model_id, key_id, *diff)))
    return late


def _draft(group: APIGroup, period: BillingPeriod) -> _Draft | None:
    """Everything the invoice says, read from one snapshot; None when there was no activity."""
    draft = _Draft()
    with _snapshot(), connection.cursor() as cursor:
        account = CreditAccount.objects.filter(group=group).first()
        cursor.execute(
            _USAGE_SQL.format(bucket="", group_by="1, 2"), [group.pk, period.start, period.end]
        )
        usage_rows = cursor.fetchall()
        late_rows = _late_usage(group, period, cursor)
        moves: dict[str, int] = {}
        entries: list[tuple] = []
        balance_end = 0
        if account is not None:
            cursor.execute(
                """
                SELECT a.balance_micros - COALESCE(
                    (SELECT sum(amount_micros) FROM billing_ledgerentry
                      WHERE account_id = a.id AND created_at >= %s), 0)
                  FROM billing_creditaccount a WHERE a.id = %s
                """,
                [period.end, account.pk],
            )
            balance_end = int(cursor.fetchone()[0])
            cursor.execute(
                """
                SELECT kind, sum(amount_micros) FROM billing_ledgerentry
                 WHERE account_id = %s AND created_at >= %s AND created_at < %s GROUP BY kind
                """,
                [account.pk, period.start, period.end],
            )
            moves = {kind: int(total) for kind, total in cursor.fetchall()}
            cursor.execute(
                """
                SELECT kind, amount_micros, reference, description, created_at
                  FROM billing_ledgerentry
                 WHERE account_id = %s AND created_at >= %s AND created_at < %s AND kind <> 'usage'
                 ORDER BY created_at, id
                """,
                [account.pk, period.start, period.end],
            )
            entries = cursor.fetchall()
    if not usage_rows and not late_rows and not moves:
        return None

    models, keys = _names(
        [r[0] for r in usage_rows] + [r[0] for _, r in late_rows],
        [r[1] for r in usage_rows] + [r[1] for _, r in late_rows],
    )
    usage = sorted(
        (_usage_line(LineSection.USAGE, row, models, keys, period) for row in usage_rows),
        key=lambda ln: (ln.model_name, ln.key_name, ln.key_last_four, ln.api_key_id or 0),
    )
    late = sorted(
        (_usage_line(LineSection.LATE_USAGE, row, models, keys, p) for p, row in late_rows),
        key=lambda ln: (ln.service_period_key, ln.model_name, ln.key_name, ln.api_key_id or 0),
    )
    period_usage = sum(ln.amount_micros for ln in usage)
    if period_usage != -moves.get(EntryKind.USAGE, 0):
        raise InvoiceError(
            f"Usage of {group.name} in {period.key} does not reconcile: events "
            f"{period_usage} micros, ledger usage debits {-moves.get(EntryKind.USAGE, 0)} micros."
        )
    section_of = {
        EntryKind.PURCHASE: LineSection.PURCHASE,
        EntryKind.AUTO_TOP_UP: LineSection.PURCHASE,
        EntryKind.REFUND: LineSection.REFUND,
        EntryKind.PROMOTIONAL: LineSection.OTHER,
        EntryKind.ADJUSTMENT: LineSection.OTHER,
    }
    labels = dict(EntryKind.choices)
    credits = [
        _Line(
            section=section_of[kind],
            label=description or labels[kind],
            amount_micros=int(amount),
            occurred_at=created_at,
            reference=reference,
        )
        for kind, amount, reference, description, created_at in entries
    ]
    draft.lines = usage + late + credits
    late_micros = sum(ln.amount_micros for ln in late)
    draft.usage = period_usage + late_micros
    draft.purchases = moves.get(EntryKind.PURCHASE, 0) + moves.get(EntryKind.AUTO_TOP_UP, 0)
    draft.refunds = moves.get(EntryKind.REFUND, 0)
    draft.other = moves.get(EntryKind.PROMOTIONAL, 0) + moves.get(EntryKind.ADJUSTMENT, 0)
    draft.closing = balance_end
    # The balance the previous invoice closed with (before the late debits billed here).
    draft.opening = balance_end - sum(moves.values()) + late_micros
    assert draft.closing == (
        draft.opening + draft.purchases + draft.refunds + draft.other - draft.usage
    )
    return draft


def _next_number(prefix: str, year: int) -> str:
    """The next number of a gap-free sequence; call inside the transaction that uses it."""
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO billing_invoicesequence (prefix, year, last_number) VALUES (%s, %s, 1)
            ON CONFLICT (prefix, year)
            DO UPDATE SET last_number = billing_invoicesequence.last_number + 1
            RETURNING last_number
            """,
            [prefix, year],
        )
        (n,) = cursor.fetchone()
    return f"{prefix}-{year}-{n:06d}"


def group_address(group: APIGroup) -> str:
    city_line = " ".join(p for p in (group.postal_code, group.city) if p)
    if group.state:
        city_line = f"{city_line}, {group.state}" if city_line else group.state
    parts = [group.address_line1, group.address_line2, city_line]
    if group.country:
        parts.append(str(countries.name(group.country)))
    return "\n".join(p for p in parts if p)


def issuer_details() -> dict[str, str]:
    return {
        "issuer_name": settings.OPERATOR_NAME,
        "issuer_address": settings.OPERATOR_ADDRESS.replace("\\n", "\n").replace(" | ", "\n"),
        "issuer_tax_id": settings.OPERATOR_TAX_ID,
    }


def _save(invoice: Invoice, lines: list[tuple[_Line, int]]) -> None:
    """Insert the invoice and its lines (each with its displayed amount in cents)."""
    invoice.save(force_insert=True)
    InvoiceLine.objects.bulk_create(
        [
            InvoiceLine(invoice=invoice, position=i, amount_cents=cents, **vars(line))
            for i, (line, cents) in enumerate(lines, start=1)
        ]
    )


@dataclass(frozen=True)
class GenerateResult:
    invoice: Invoice | None
    created: bool


def invoice_generate(*, group: APIGroup, period: BillingPeriod) -> GenerateResult:
    """Issue the group's invoice for a closed period, once. None when there was no activity."""
    if period.end > timezone.now():
        raise InvoiceError(f"The period {period.key} has not ended yet.")
    with _group_lock(group.pk):
        existing = Invoice.objects.filter(
            group=group, kind=InvoiceKind.INVOICE, period_key=period.key
        ).first()
        if existing is not None:
            return GenerateResult(existing, created=False)
        draft = _draft(group, period)
        if draft is None:
            return GenerateResult(None, created=False)
        billed = [ln for ln in draft.lines if ln.section in BILLED_SECTIONS]
        cents = allocate_cents([ln.amount_micros for ln in billed])
        cents_of = {id(ln): c for ln, c in zip(billed, cents, strict=True)}
        group.refresh_from_db()
        now = timezone.now()
        with transaction.atomic():
            invoice = Invoice(
                public_id=new_public_id(),
                number=_next_number("INV", now.year),
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
                total_cents=sum(cents),
                opening_balance_micros=draft.opening,
                purchases_micros=draft.purchases,
                refunds_micros=draft.refunds,
                other_credits_micros=draft.other,
                closing_balance_micros=draft.closing,
            )
            # Listed credits (purchases, refunds…) are whole cents; shown rounded by the rule.
            _save(
                invoice,
                [
                    (ln, cents_of.get(id(ln), micros_to_cents(ln.amount_micros)))
                    for ln in draft.lines
                ],
            )
            faults.pause("invoice_saved")  # reliability tests kill the worker before commit
            if settings.INVOICE_STRIPE_MIRROR:
                from billing.tasks import invoice_mirror_to_stripe  # noqa: PLC0415

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


# --- Credit notes --------------------------------------------------------------------------


@transaction.atomic
def credit_note_issue(
    *, invoice: Invoice, amount_micros: int, reason: str, actor: Any = None
) -> Invoice:
    """Correct an issued invoice: a credit note for `amount_micros`, credited to the balance."""
    from billing.services import ledger_post  # noqa: PLC0415

    if invoice.kind != InvoiceKind.INVOICE:
        raise InvoiceError("Only invoices can be credited.")
    if not reason.strip():
        raise InvoiceError("A credit note needs a reason.")
    if amount_micros <= 0:
        raise InvoiceError("A credit note is for a positive amount.")
    # Lock the invoice row so two credit notes can't together exceed it.
    Invoice.objects.select_for_update().get(pk=invoice.pk)
    credited = -sum(
        InvoiceLine.objects.filter(
            invoice__corrects=invoice, section=LineSection.CREDIT
        ).values_list("amount_micros", flat=True)
    )
    if credited + amount_micros > invoice.usage_micros:
        raise InvoiceError(
            f"{invoice.number} billed {invoice.usage_micros} micros of usage and "
            f"{credited} micros are already credited; {amount_micros} more is too much."
        )
    group = invoice.group
    now = timezone.now()
    note = Invoice(
        public_id=new_public_id(),
        number=_next_number("CN", now.year),
        kind=InvoiceKind.CREDIT_NOTE,
        status=InvoiceStatus.ISSUED,
        group=group,
        period_key=invoice.period_key,
        period_start=invoice.period_start,
        period_end=invoice.period_end,
        issued_at=now,
        bill_to_name=invoice.bill_to_name,
        bill_to_address=invoice.bill_to_address,
        bill_to_tax_id=invoice.bill_to_tax_id,
        **issuer_details(),
        usage_micros=-amount_micros,
        total_cents=-micros_to_cents(amount_micros),
        corrects=invoice,
        reason=reason.strip()[:255],
    )
    line = _Line(
        section=LineSection.CREDIT,
        label=f"Credit for {invoice.number}: {reason.strip()}"[:200],
        amount_micros=-amount_micros,
        service_period_key=invoice.period_key,
    )
    _save(note, [(line, note.total_cents)])
    ledger_post(
        group=group,
        amount_micros=amount_micros,
        kind=EntryKind.ADJUSTMENT,
        reference=f"credit-note:{note.number}",
        description=f"Credit note {note.number} for {invoice.number}",
        actor=actor,
    )
    audit_record(
        group=group,
        actor=actor,
        action="invoice.credit_note",
        target=note,
        target_repr=note.number,
        data={"invoice": invoice.number, "amount_micros": amount_micros, "reason": reason},
    )
    return note

"""Credit notes: the only correction of an issued (immutable) invoice."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from audit.services import audit_record
from billing.invoicing import InvoiceError
from billing.invoicing.documents import (
    DraftLine,
    document_insert,
    document_number_next,
    issuer_details,
)
from billing.models import EntryKind, Invoice, InvoiceKind, InvoiceLine, InvoiceStatus, LineSection
from billing.services import ledger_post
from core.money import micros_to_cents
from groups.models import new_public_id


def _check_creditable(invoice: Invoice, amount_micros: int, reason: str) -> None:
    """Refuse a credit note that is not for an invoice, has no reason or credits too much."""
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


@transaction.atomic
def credit_note_issue(
    *, invoice: Invoice, amount_micros: int, reason: str, actor: Any = None
) -> Invoice:
    """Correct an issued invoice: a credit note for `amount_micros`, credited to the balance."""
    _check_creditable(invoice, amount_micros, reason)
    group = invoice.group
    now = timezone.now()
    note = Invoice(
        public_id=new_public_id(),
        number=document_number_next("CN", now.year),
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
    line = DraftLine(
        section=LineSection.CREDIT,
        label=f"Credit for {invoice.number}: {reason.strip()}"[:200],
        amount_micros=-amount_micros,
        service_period_key=invoice.period_key,
    )
    document_insert(note, [(line, note.total_cents)])
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

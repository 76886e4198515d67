from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from billing.invoicing import InvoiceError
from billing.invoicing.credit_notes import credit_note_issue
from billing.models import Invoice, InvoiceKind
from core.money import format_usd, parse_dollars


class Command(BaseCommand):
    help = "Correct an issued invoice with a credit note (the amount goes back to the balance)."

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument(
            "--invoice", required=True, help="the invoice number, e.g. INV-2026-000123"
        )
        parser.add_argument("--amount", required=True, help="dollars, e.g. 12.50")
        parser.add_argument("--reason", required=True)

    def handle(self, *args, **options):  # type: ignore[no-untyped-def]
        invoice = Invoice.objects.filter(
            number=options["invoice"], kind=InvoiceKind.INVOICE
        ).first()
        if invoice is None:
            raise CommandError(f"No invoice numbered {options['invoice']!r}.")
        try:
            amount = parse_dollars(options["amount"])
            note = credit_note_issue(
                invoice=invoice, amount_micros=amount, reason=options["reason"]
            )
        except (ValueError, InvoiceError) as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"Issued {note.number}: {format_usd(amount)} credited for {invoice.number}."
        )

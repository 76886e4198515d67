"""What every invoice document carries — lines, a gap-free number, bill-to and issuer — and how
one is inserted. Shared by invoices and credit notes (and by the pages and PDFs that show them).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import connection
from django_countries import countries

from billing.models import Invoice, InvoiceLine
from groups.models import APIGroup


@dataclass
class DraftLine:
    """One line of a document before it is saved (the fields of `InvoiceLine` but its cents)."""

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
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0


def document_number_next(prefix: str, year: int) -> str:
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


def document_insert(invoice: Invoice, lines: list[tuple[DraftLine, int]]) -> None:
    """Insert the invoice and its lines (each with its displayed amount in cents)."""
    invoice.save(force_insert=True)
    InvoiceLine.objects.bulk_create(
        [
            InvoiceLine(invoice=invoice, position=i, amount_cents=cents, **vars(line))
            for i, (line, cents) in enumerate(lines, start=1)
        ]
    )

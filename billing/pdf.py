"""PDF invoices, credit notes and receipts (fpdf2, DejaVu Sans so any name or address prints).

Rendered on request from the stored, immutable invoice, so the same invoice always gives the
same document content. Amounts come from the stored cent values (see
`billing.invoicing.allocation` for the rounding rule); nothing is re-computed here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.http import HttpResponse
from fpdf import FPDF
from fpdf.enums import TableCellFillMode
from fpdf.fonts import FontFace

from billing.invoicing.documents import group_address
from billing.invoicing.periods import period_from_key
from billing.models import (
    BILLED_SECTIONS,
    Invoice,
    InvoiceKind,
    InvoiceLine,
    LineSection,
    Payment,
)
from core.money import format_cents, format_usd, format_usd_precise

FONTS = Path(__file__).resolve().parent / "fonts"
INK = (17, 24, 39)
MUTED = (107, 114, 128)
ACCENT = (32, 128, 141)


class _Document(FPDF):
    footer_text = ""

    def footer(self) -> None:
        self.set_y(-14)
        self.set_font("DejaVu", size=7)
        self.set_text_color(*MUTED)
        self.multi_cell(0, 3.5, self.footer_text, align="L")
        self.set_y(-8)
        self.cell(0, 4, f"Page {self.page_no()} of {{nb}}", align="R")


def _new(title: str, footer: str) -> _Document:
    pdf = _Document(format="A4")
    pdf.add_font("DejaVu", "", str(FONTS / "DejaVuSans.ttf"))
    pdf.add_font("DejaVu", "B", str(FONTS / "DejaVuSans-Bold.ttf"))
    pdf.set_title(title)
    pdf.set_author("Portal")
    pdf.set_creator("Portal")
    pdf.footer_text = footer
    pdf.set_auto_page_break(True, margin=20)
    pdf.set_margins(16, 16, 16)
    pdf.add_page()
    pdf.set_text_color(*INK)
    return pdf


def _header(
    pdf: _Document,
    *,
    issuer: tuple[str, str, str],
    doc_title: str,
    facts: list[tuple[str, str]],
) -> None:
    name, address, tax_id = issuer
    top = pdf.get_y()
    pdf.set_font("DejaVu", "B", 14)
    pdf.multi_cell(95, 7, name, new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("DejaVu", size=9)
    pdf.set_text_color(*MUTED)
    for text in [*address.splitlines(), f"Tax ID: {tax_id}" if tax_id else ""]:
        if text:
            pdf.multi_cell(95, 4.5, text, new_x="LMARGIN", new_y="NEXT")
    left_bottom = pdf.get_y()
    pdf.set_xy(115, top)
    pdf.set_text_color(*ACCENT)
    pdf.set_font("DejaVu", "B", 18)
    pdf.cell(79, 9, doc_title, align="R", new_x="LEFT", new_y="NEXT")
    pdf.set_text_color(*INK)
    for label, value in facts:
        pdf.set_x(115)
        pdf.set_font("DejaVu", size=9)
        pdf.set_text_color(*MUTED)
        pdf.cell(30, 5, label)
        pdf.set_text_color(*INK)
        pdf.set_font("DejaVu", "B", 9)
        pdf.cell(49, 5, value, align="R", new_x="LMARGIN", new_y="NEXT")
    pdf.set_y(max(left_bottom, pdf.get_y()) + 6)


def _bill_to(pdf: _Document, name: str, address: str, tax_id: str) -> None:
    pdf.set_font("DejaVu", size=8)
    pdf.set_text_color(*MUTED)
    pdf.cell(0, 5, "BILL TO", new_x="LMARGIN", new_y="NEXT")
    pdf.set_text_color(*INK)
    pdf.set_font("DejaVu", "B", 10)
    pdf.multi_cell(0, 5, name, new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("DejaVu", size=9)
    for text in [*address.splitlines(), f"Tax ID: {tax_id}" if tax_id else ""]:
        if text:
            pdf.multi_cell(0, 4.5, text, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(6)


def _heading(pdf: _Document, text: str) -> None:
    pdf.set_font("DejaVu", "B", 11)
    pdf.set_text_color(*INK)
    pdf.cell(0, 7, text, new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("DejaVu", size=8)


def _table(pdf: _Document, widths: tuple[int, ...], align: tuple[str, ...], rows: list) -> None:
    pdf.set_font("DejaVu", size=8)
    with pdf.table(
        col_widths=widths,
        text_align=align,
        line_height=5,
        borders_layout="HORIZONTAL_LINES",
        cell_fill_color=(246, 247, 249),
        cell_fill_mode=TableCellFillMode.ROWS,
        headings_style=_headings_style(),
        first_row_as_headings=True,
    ) as table:
        for row in rows:
            r = table.row()
            for value in row:
                r.cell(value)
    pdf.ln(3)


def _headings_style() -> Any:
    return FontFace(emphasis="BOLD", color=MUTED, fill_color=(255, 255, 255))


def _totals(pdf: _Document, rows: list[tuple[str, str]], bold_last: bool = True) -> None:
    for i, (label, value) in enumerate(rows):
        last = bold_last and i == len(rows) - 1
        pdf.set_font("DejaVu", "B" if last else "", 10 if last else 9)
        pdf.set_x(100)
        pdf.cell(60, 6, label)
        pdf.cell(34, 6, value, align="R", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)


def invoice_pdf(invoice: Invoice) -> bytes:
    is_note = invoice.kind == InvoiceKind.CREDIT_NOTE
    title = "CREDIT NOTE" if is_note else "INVOICE"
    pdf = _new(
        f"{title.title()} {invoice.number}",
        "Amounts in US dollars. Usage is prepaid: this invoice is settled from the credit balance. "
        "Each line shows its amount rounded to the cent; the total is the exact usage rounded "
        "half up to the cent, shared over the lines by largest remainder, so lines add up to it.",
    )
    facts = [
        ("Number", invoice.number),
        ("Issued", f"{invoice.issued_at:%b %d, %Y}"),
        ("Period", _period_text(invoice)),
        ("Status", invoice.get_status_display()),
    ]
    if is_note and invoice.corrects_id:
        facts.append(("Corrects", invoice.corrects.number if invoice.corrects else ""))
    _header(
        pdf,
        issuer=(invoice.issuer_name, invoice.issuer_address, invoice.issuer_tax_id),
        doc_title=title,
        facts=facts,
    )
    _bill_to(pdf, invoice.bill_to_name, invoice.bill_to_address, invoice.bill_to_tax_id)
    lines = list(invoice.lines.all())
    billed = [ln for ln in lines if ln.section in BILLED_SECTIONS]
    if is_note:
        _credit_note_body(pdf, invoice, billed)
    else:
        _usage_section(pdf, invoice, billed)
        _credits_section(pdf, [ln for ln in lines if ln.section not in BILLED_SECTIONS])
        _balance_section(pdf, invoice)
    return bytes(pdf.output())


def _credit_note_body(pdf: _Document, invoice: Invoice, billed: list[InvoiceLine]) -> None:
    _heading(pdf, "Credit")
    note_rows: list[tuple[str, ...]] = [("Description", "Amount")]
    note_rows += [(ln.label, format_cents(ln.amount_cents)) for ln in billed]
    _table(pdf, (150, 28), ("LEFT", "RIGHT"), note_rows)
    if invoice.reason:
        pdf.multi_cell(0, 5, f"Reason: {invoice.reason}", new_x="LMARGIN", new_y="NEXT")
    _totals(pdf, [("Total credited", format_cents(invoice.total_cents))])


def _usage_section(pdf: _Document, invoice: Invoice, billed: list[InvoiceLine]) -> None:
    _heading(pdf, "Usage by model, tool and API key")
    rows: list[tuple[str, ...]] = [
        (
            "Model or tool (key)", "Requests", "Input tokens", "Output tokens", "Searches",
            "Tool calls", "Amount",
        )
    ]  # fmt: skip
    for ln in billed:
        if ln.tool:  # a tool-fee line of the Agent API: its invocations, no tokens
            counts: tuple[str, ...] = ("", "", "", "", f"{ln.invocations:,}")
        else:
            counts = (
                f"{ln.requests:,}", f"{ln.prompt_tokens:,}", f"{ln.output_tokens:,}",
                f"{ln.search_queries:,}", "",
            )  # fmt: skip
        rows.append((ln.label, *counts, format_cents(ln.amount_cents)))
    if len(rows) == 1:
        rows.append(("No API usage in this period", "", "", "", "", "", format_cents(0)))
    _table(
        pdf,
        (58, 18, 23, 23, 17, 18, 21),
        ("LEFT", "RIGHT", "RIGHT", "RIGHT", "RIGHT", "RIGHT", "RIGHT"),
        rows,
    )
    _totals(
        pdf,
        [
            ("Usage (exact)", format_usd_precise(invoice.usage_micros)),
            ("Total", format_cents(invoice.total_cents)),
            ("Paid from credits", format_cents(-invoice.total_cents)),
            ("Amount due", format_cents(0)),
        ],
    )


def _credits_section(pdf: _Document, credits: list[InvoiceLine]) -> None:
    if not credits:
        return
    _heading(pdf, "Credit purchases, refunds and adjustments")
    rows: list[tuple[str, ...]] = [("Date", "Description", "Type", "Amount")]
    for ln in credits:
        rows.append(
            (
                f"{ln.occurred_at:%b %d, %Y}" if ln.occurred_at else "",
                ln.label,
                LineSection(ln.section).label,
                format_cents(ln.amount_cents),
            )
        )
    _table(pdf, (28, 85, 40, 25), ("LEFT", "LEFT", "LEFT", "RIGHT"), rows)


def _balance_section(pdf: _Document, invoice: Invoice) -> None:
    _heading(pdf, "Credit balance")
    _totals(
        pdf,
        [
            ("Opening balance", format_usd_precise(invoice.opening_balance_micros)),
            ("Credits purchased", format_usd_precise(invoice.purchases_micros)),
            ("Refunds", format_usd_precise(invoice.refunds_micros)),
            (
                "Promotional credits and adjustments",
                format_usd_precise(invoice.other_credits_micros),
            ),
            ("Usage", format_usd_precise(-invoice.usage_micros)),
            ("Closing balance", format_usd_precise(invoice.closing_balance_micros)),
        ],
    )


def _period_text(invoice: Invoice) -> str:
    return period_from_key(invoice.period_key).label


def receipt_pdf(payment: Payment, *, issuer: tuple[str, str, str]) -> bytes:
    group = payment.group
    pdf = _new(
        f"Receipt {payment.public_id}",
        "Amounts in US dollars. Credits are added to the API group's balance and used by API calls.",
    )
    _header(
        pdf,
        issuer=issuer,
        doc_title="RECEIPT",
        facts=[
            ("Receipt", payment.public_id.upper()),
            ("Date paid", f"{payment.updated_at:%b %d, %Y}"),
            ("Payment", payment.stripe_payment_intent_id or ""),
        ],
    )
    _bill_to(pdf, group.name, group_address(group), group.tax_id)
    _heading(pdf, "Paid")
    _table(
        pdf,
        (140, 38),
        ("LEFT", "RIGHT"),
        [
            ("Description", "Amount"),
            (f"{payment.get_kind_display()} · API credits", format_usd(payment.amount_micros)),
        ],
    )
    _totals(pdf, [("Amount paid", format_usd(payment.amount_micros))])
    return bytes(pdf.output())


def pdf_response(data: bytes, filename: str) -> HttpResponse:
    """A PDF download; private to the signed-in user or key, never cached."""
    response = HttpResponse(data, content_type="application/pdf")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "private, no-store"
    return response

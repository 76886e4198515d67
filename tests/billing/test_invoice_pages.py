"""Invoice history, invoice detail, PDF and receipts as a Member sees them (read-only)."""

from __future__ import annotations

import io
import re

import pytest
from django.urls import reverse
from pypdf import PdfReader

from billing.invoicing.generation import invoice_generate
from billing.invoicing.periods import period_from_key
from billing.models import Payment
from groups.models import new_public_id
from keys.services import api_key_create
from tests.billing.invoice_world import OCT, credit, usage
from usage.catalogue import catalogue_sync
from usage.models import AIModel

pytestmark = pytest.mark.django_db


@pytest.fixture
def issued(group):  # type: ignore[no-untyped-def]
    catalogue_sync()
    sonar = AIModel.objects.get(name="sonar")
    key = api_key_create(group=group, name="Server").key
    credit(group, 20_000_000, OCT.replace(day=2))
    usage(group, key, sonar, OCT.replace(day=3), cost=1_234_567)
    usage(group, key, sonar, OCT.replace(day=4), cost=765_433)
    result = invoice_generate(group=group, period=period_from_key("2025-10"))
    assert result.invoice is not None
    return result.invoice, key


def url(name: str, group, **kw: str) -> str:  # type: ignore[no-untyped-def]
    return reverse(f"billing:{name}", kwargs={"group_id": group.public_id, **kw})


def test_member_finds_invoice_history_from_usage_metrics_and_billing(
    member_client, group, issued
) -> None:  # type: ignore[no-untyped-def]
    inv, _ = issued
    history = url("invoices", group)
    dashboard = member_client.get(reverse("usage:dashboard", kwargs={"group_id": group.public_id}))
    assert f'href="{history}"' in dashboard.content.decode()
    billing = member_client.get(reverse("billing:overview", kwargs={"group_id": group.public_id}))
    assert f'href="{history}"' in billing.content.decode()

    page = member_client.get(history).content.decode()
    row = re.search(r'data-testid="invoice-list".*?</table>', page, re.S)
    assert row is not None
    text = row.group(0)
    assert inv.number in text
    assert "Oct 2025" in text
    assert "$2.00" in text  # 1.234567 + 0.765433 = exactly $2.000000
    assert "Paid" in text
    assert url("invoice_pdf", group, invoice_id=inv.public_id) in text


def test_invoice_detail_shows_every_line_and_the_balance(member_client, group, issued) -> None:  # type: ignore[no-untyped-def]
    inv, key = issued
    page = member_client.get(url("invoice", group, invoice_id=inv.public_id)).content.decode()
    assert f"sonar ({key.last_four})" in page
    assert "$20.00" in page  # the credit purchase of the period
    assert 'data-testid="invoice-total">$2.00<' in page
    assert "$18.00" in page  # closing balance
    # Read-only: nothing on the page posts anything.
    assert "<form" not in page.split('data-testid="invoice"')[1]


def test_invoice_pdf_download(member_client, group, issued) -> None:  # type: ignore[no-untyped-def]
    inv, key = issued
    response = member_client.get(url("invoice_pdf", group, invoice_id=inv.public_id))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    assert f'filename="{inv.number}.pdf"' in response["Content-Disposition"]
    body = b"".join(response.streaming_content) if response.streaming else response.content
    text = "".join(p.extract_text() for p in PdfReader(io.BytesIO(body)).pages)
    assert f"sonar ({key.last_four})" in text
    assert inv.number in text


def test_receipts_list_only_succeeded_payments(member_client, group) -> None:  # type: ignore[no-untyped-def]
    ok = Payment.objects.create(
        public_id=new_public_id(), group=group, kind="purchase", amount_micros=25_000_000,
        status="succeeded", stripe_payment_intent_id=f"pi_{new_public_id()}",
    )  # fmt: skip
    failed = Payment.objects.create(
        public_id=new_public_id(), group=group, kind="auto_top_up", amount_micros=7_000_000,
        status="failed", error_message="Your card was declined.",
    )  # fmt: skip
    page = member_client.get(url("invoices", group) + "?tab=receipts").content.decode()
    assert ok.public_id.upper() in page
    assert "$25.00" in page
    assert failed.public_id.upper() not in page

    receipt = member_client.get(url("receipt", group, payment_id=ok.public_id))
    assert receipt.status_code == 200
    assert "$25.00" in receipt.content.decode()
    pdf = member_client.get(url("receipt_pdf", group, payment_id=ok.public_id))
    text = PdfReader(io.BytesIO(pdf.content)).pages[0].extract_text()
    assert "25.00" in text
    assert group.name in text
    # A declined charge has no receipt.
    assert member_client.get(url("receipt", group, payment_id=failed.public_id)).status_code == 404
    assert (
        member_client.get(url("receipt_pdf", group, payment_id=failed.public_id)).status_code == 404
    )


def test_empty_history_says_when_the_first_invoice_comes(member_client, group) -> None:  # type: ignore[no-untyped-def]
    page = member_client.get(url("invoices", group)).content.decode()
    assert "No invoices yet" in page

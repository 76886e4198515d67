"""The seed's "Tracking Spend Per API Key": Usage Metrics → Invoice history → open an invoice → each
line names the key that spent it, `sonar (XXXX)`; the PDF downloads."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from pypdf import PdfReader

from billing.models import Invoice
from keys.services import api_key_create
from tests.billing.invoice_world import OCT, credit, usage
from tests.factories import GroupFactory, MembershipFactory
from usage.catalogue import catalogue_sync
from usage.models import AIModel

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_member_opens_an_invoice_and_finds_each_keys_line(
    live_server, new_page, output_dir, password
):  # type: ignore[no-untyped-def]
    catalogue_sync()
    group = GroupFactory(name="Invoice Co")
    member = MembershipFactory(group=group, role="member").user
    sonar = AIModel.objects.get(name="sonar")
    pro = AIModel.objects.get(name="sonar-pro")
    server = api_key_create(group=group, name="Server").key
    laptop = api_key_create(group=group, name="Laptop").key
    credit(group, 50_000_000, OCT.replace(day=1, hour=9))
    usage(group, server, sonar, OCT.replace(day=2), cost=3_210_000)
    usage(group, laptop, pro, OCT.replace(day=3), cost=1_005_000)
    call_command("generate_invoices", period="2025-10", stdout=io.StringIO())
    invoice = Invoice.objects.get(group=group)

    page = new_page()
    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_label("Email").fill(member.email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign In").click()
    page.goto(f"{live_server.url}/g/{group.public_id}/usage/")
    page.get_by_test_id("invoice-history").click()
    page.get_by_role("link", name=invoice.number).click()

    lines = page.get_by_test_id("invoice-lines")
    lines.wait_for()
    text = lines.inner_text()
    assert f"sonar ({server.last_four})" in text
    assert f"sonar-pro ({laptop.last_four})" in text
    assert page.get_by_test_id("invoice-total").inner_text() == "$4.22"  # 4.215 rounds half up
    page.screenshot(path=output_dir / "invoice.png", full_page=True)

    with page.expect_download() as download:
        page.get_by_test_id("invoice-pdf").click()
    assert download.value.suggested_filename == f"{invoice.number}.pdf"
    pdf_text = "".join(p.extract_text() for p in PdfReader(download.value.path()).pages)
    assert f"sonar ({server.last_four})" in pdf_text
    assert "$4.22" in pdf_text

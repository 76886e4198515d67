"""Search API usage on invoices: one line per search type and key, named by the API."""

from __future__ import annotations

import io
import re
from datetime import timedelta

import pytest
from pypdf import PdfReader

from billing.invoicing.generation import invoice_generate
from billing.invoicing.periods import period_from_key
from billing.pdf import invoice_pdf
from keys.services import api_key_create
from tests.billing.invoice_world import NOV, OCT, credit, usage
from tests.billing.search_usage import search_usage
from tests.billing.test_invoices import check_invoice
from usage.catalogue import catalogue_sync
from usage.models import AIModel

pytestmark = pytest.mark.django_db


def test_search_lines_read_search_api_and_add_up_to_the_micro_dollar(group):
    catalogue_sync()
    web, fast = AIModel.objects.get(name="search-web"), AIModel.objects.get(name="search-fast")
    people = AIModel.objects.get(name="search-people")
    k1 = api_key_create(group=group, name="Server").key
    k2 = api_key_create(group=group, name="Laptop").key
    credit(group, 20_000_000, OCT + timedelta(days=1))
    usage(group, k1, AIModel.objects.get(name="sonar"), OCT + timedelta(days=2), cost=1_234_567)
    for day in range(3):
        search_usage(group, k1, web, OCT + timedelta(days=3 + day))
    search_usage(group, k1, fast, OCT + timedelta(days=4))
    search_usage(group, k1, fast, OCT + timedelta(days=5), context="high")
    search_usage(group, k2, web, OCT + timedelta(days=6))
    search_usage(group, k2, people, OCT + timedelta(days=7))
    search_usage(group, k2, web, NOV + timedelta(days=1))  # next period: not on this invoice

    inv = invoice_generate(group=group, period=period_from_key("2025-10")).invoice
    assert inv is not None
    lines = {ln.label: ln for ln in inv.lines.filter(section="usage")}
    a, b = k1.last_four, k2.last_four
    got = {label: (ln.model_name, ln.requests, ln.prompt_tokens, ln.amount_micros)
           for label, ln in lines.items()}  # fmt: skip
    assert got == {
        f"sonar ({a})": ("sonar", 1, 100, 1_234_567),
        f"Search API ({a})": ("search-web", 3, 0, 15_000),
        f"Search API · fast ({a})": ("search-fast", 2, 0, 2_000),
        f"Search API ({b})": ("search-web", 1, 0, 5_000),
        f"Search API · people ({b})": ("search-people", 1, 0, 5_000),
    }
    assert inv.usage_micros == 1_234_567 + 15_000 + 2_000 + 5_000 + 5_000
    check_invoice(inv)

    text = "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(invoice_pdf(inv))).pages)
    assert re.search(re.escape(f"Search API ({a})") + r"\s+3\s", text), text
    assert f"Search API · fast ({a})" in text

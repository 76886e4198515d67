"""`make run`'s demo data: a month of activity on every page, loaded once, quickly."""

from __future__ import annotations

import time
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db.models import Count, Min, Sum
from django.utils import timezone

from accounts.models import User
from audit.models import AuditEvent
from billing.invoicing.periods import period_just_closed
from billing.models import (
    CreditAccount,
    Invoice,
    InvoiceLine,
    LedgerEntry,
    Payment,
    PaymentMethod,
)
from gateway.models import AsyncJob
from groups.models import APIGroup
from keys.models import APIKey
from usage.catalogue import catalogue_sync
from usage.models import AIModel, UsageEvent, UsageRollup

pytestmark = pytest.mark.django_db

EMAIL, PASSWORD = "admin@demo.example", "demo-portal-2026"
TABLES = (User, APIGroup, APIKey, UsageEvent, UsageRollup, LedgerEntry, Payment, PaymentMethod,
          Invoice, InvoiceLine, AuditEvent, AsyncJob)  # fmt: skip


def seed() -> float:
    started = time.monotonic()
    call_command("seed_demo", email=EMAIL, password=PASSWORD, stdout=StringIO())
    return time.monotonic() - started


def counts() -> dict[str, int]:
    return {table.__name__: table.objects.count() for table in TABLES}


def test_demo_group_has_a_month_of_activity_on_every_page(client, localstripe):
    catalogue_sync()
    assert seed() < 10
    group = APIGroup.objects.get(name="Demo Group")
    events = UsageEvent.objects.filter(group=group)

    # 30 days of usage over the demo's keys and every model the gateway meters, every product.
    models = set(AIModel.objects.filter(enabled=True).values_list("name", flat=True))
    assert set(events.values_list("model__name", flat=True).distinct()) == models
    keys = set(events.values_list("api_key__name", flat=True).distinct())
    assert keys == {"Production", "Staging", "Research agent"}
    totals = events.aggregate(
        citation=Sum("citation_tokens"), reasoning=Sum("reasoning_tokens"),
        searches=Sum("search_queries"), requests=Sum("request_cost_micros"),
        cost=Sum("cost_micros"), first=Min("created_at"), n=Count("id"),
    )  # fmt: skip
    assert all(totals[k] > 0 for k in ("citation", "reasoning", "searches", "requests"))
    assert totals["first"] < timezone.now() - timedelta(days=29)
    # Two completed async requests, charged as the gateway's job runner charges them.
    assert events.filter(api="async", model__name="sonar-deep-research").count() == 2
    assert set(AsyncJob.objects.filter(group=group).values_list("status", flat=True)) == {
        "COMPLETED"
    }

    # Money to the micro-dollar: $25 welcome credit + $50 bought by card − the usage.
    payment = Payment.objects.get(group=group)
    assert (payment.status, payment.amount_micros) == ("succeeded", 50_000_000)
    balance = CreditAccount.objects.get(group=group).balance_micros
    assert balance == 25_000_000 + 50_000_000 - totals["cost"]
    assert balance > 0  # the demo's keys still work

    # Last period's invoice, issued, billing that period's usage.
    invoice = Invoice.objects.get(group=group, kind="invoice")
    period = period_just_closed()
    assert invoice.period_key == period.key and invoice.number
    in_period = events.filter(created_at__gte=period.start, created_at__lt=period.end)
    usage_lines = invoice.lines.filter(section="usage")
    assert (
        usage_lines.aggregate(s=Sum("amount_micros"))["s"]
        == in_period.aggregate(s=Sum("cost_micros"))["s"]
    )

    assert client.login(email=EMAIL, password=PASSWORD)
    base = f"/g/{group.public_id}"
    usage = client.get(f"{base}/usage/").content.decode()
    assert 'data-testid="usage-empty"' not in usage
    assert "Production" in usage and "sonar-deep-research" in usage
    billing = client.get(f"{base}/billing/").content.decode()
    assert "No API usage yet" not in billing and "No purchases or adjustments yet" not in billing
    assert "4242" in billing  # the card on file
    invoices = client.get(f"{base}/billing/invoices/").content.decode()
    assert "No invoices yet" not in invoices and invoice.number in invoices
    receipts = client.get(f"{base}/billing/invoices/?tab=receipts").content.decode()
    assert payment.public_id.upper() in receipts
    assert client.get(f"{base}/billing/receipts/{payment.public_id}/").status_code == 200

    # Idempotent: a second run adds nothing, and is quick too.
    before = counts()
    assert seed() < 10
    assert counts() == before
    assert CreditAccount.objects.get(group=group).balance_micros == balance

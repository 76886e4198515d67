"""The Stripe mirror of invoices, against recorded Stripe responses (localstripe has no invoices).

A loopback server replays the JSON in stripe_recordings/ (see its README for where the shapes come
from) and, like Stripe, honours idempotency keys and sums attached items into the invoice total.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from django.conf import settings as django_settings

from billing import stripe_api
from billing.invoice_stripe import invoice_mirror
from billing.invoicing.generation import invoice_generate
from billing.invoicing.periods import period_from_key
from billing.models import BillingProfile, Invoice
from keys.services import api_key_create
from tests.billing.invoice_world import OCT, usage
from usage.catalogue import catalogue_sync
from usage.models import AIModel

pytestmark = pytest.mark.django_db
RECORDINGS = Path(__file__).parent / "stripe_recordings"


def recording(name: str) -> dict[str, Any]:
    return json.loads((RECORDINGS / f"{name}.json").read_text())


class StripeReplay:
    """State of the replay: requests seen, invoices by id, responses by idempotency key."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str], str]] = []
        self.invoices: dict[str, dict[str, Any]] = {}
        self.idempotent: dict[str, tuple[int, dict[str, Any]]] = {}
        self.fail_next: set[str] = set()  # path suffixes that answer 500 once
        self.counter = 0
        self.lock = threading.Lock()

    def handle(self, method: str, path: str, form: dict[str, str], key: str) -> tuple[int, dict]:
        with self.lock:
            self.requests.append((method, path, form, key))
            if key and key in self.idempotent:
                return self.idempotent[key]
            for suffix in list(self.fail_next):
                if path.endswith(suffix):
                    self.fail_next.discard(suffix)
                    return 500, {"error": {"type": "api_error", "message": "Recorded outage."}}
            status, body = self._route(method, path, form)
            if key and method == "POST":
                self.idempotent[key] = (status, body)
            return status, body

    def _route(self, method: str, path: str, form: dict[str, str]) -> tuple[int, dict]:
        parts = path.strip("/").split("/")
        if method == "POST" and parts == ["v1", "invoices"]:
            self.counter += 1
            inv = recording("invoice_draft")
            inv["id"] = f"in_replay{self.counter:04d}"
            inv["customer"] = form["customer"]
            inv["description"] = form["description"]
            inv["metadata"] = _metadata(form)
            self.invoices[inv["id"]] = inv
            return 200, copy.deepcopy(inv)
        if method == "POST" and parts == ["v1", "invoiceitems"]:
            inv = self.invoices[form["invoice"]]
            if inv["status"] != "draft":
                return 400, {"error": {"type": "invalid_request_error", "message": "finalized"}}
            item = recording("invoiceitem")
            item.update(
                id=f"ii_replay{len(inv['lines']['data']) + 1:04d}",
                amount=int(form["amount"]),
                customer=form["customer"],
                description=form["description"],
                invoice=form["invoice"],
                metadata=_metadata(form),
            )
            inv["lines"]["data"].append(item)
            inv["lines"]["total_count"] += 1
            total = sum(i["amount"] for i in inv["lines"]["data"])
            inv.update(subtotal=total, total=total, amount_due=total, amount_remaining=total)
            return 200, copy.deepcopy(item)
        if parts[:2] == ["v1", "invoices"] and len(parts) >= 3:
            inv = self.invoices.get(parts[2])
            if inv is None:
                return 404, {"error": {"type": "invalid_request_error", "code": "resource_missing"}}
            if method == "GET":
                return 200, copy.deepcopy(inv)
            action = parts[3]
            recorded = recording({"finalize": "invoice_open", "pay": "invoice_paid"}[action])
            keep = {k: inv[k] for k in ("id", "customer", "description", "metadata", "lines")}
            totals = {k: inv[k] for k in ("subtotal", "total", "amount_due")}
            inv.clear()
            inv.update(recorded, **keep, **totals)
            if action == "pay":
                inv.update(amount_paid=0, amount_remaining=0)  # out of band: no money moved
            else:
                inv["amount_remaining"] = inv["amount_due"]
            return 200, copy.deepcopy(inv)
        return 404, {"error": {"type": "invalid_request_error", "message": f"no route {path}"}}


def _metadata(form: dict[str, str]) -> dict[str, str]:
    return {k[9:-1]: v for k, v in form.items() if k.startswith("metadata[")}


@pytest.fixture
def stripe_replay(settings) -> Iterator[StripeReplay]:  # type: ignore[no-untyped-def]
    state = StripeReplay()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length).decode() if length else ""
            form = {k: v[0] for k, v in parse_qs(raw).items()}
            path = self.path.split("?")[0]
            status, body = state.handle(
                self.command, path, form, self.headers.get("Idempotency-Key", "")
            )
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if status >= 500:
                self.send_header("Stripe-Should-Retry", "false")
            self.end_headers()
            self.wfile.write(data)

        do_GET = _answer
        do_POST = _answer

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    settings.STRIPE_API_BASE = f"http://127.0.0.1:{server.server_address[1]}"
    settings.STRIPE_SECRET_KEY = "sk_test_recorded"
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def october_invoice(group) -> Invoice:  # type: ignore[no-untyped-def]
    catalogue_sync()
    sonar = AIModel.objects.get(name="sonar")
    pro = AIModel.objects.get(name="sonar-pro")
    k1 = api_key_create(group=group, name="Server").key
    k2 = api_key_create(group=group, name="Laptop").key
    usage(group, k1, sonar, OCT.replace(day=3), cost=1_234_567)
    usage(group, k1, pro, OCT.replace(day=4), cost=2_000_005)
    usage(group, k2, sonar, OCT.replace(day=5), cost=4_999)  # rounds to 0 cents on its own
    usage(group, k2, pro, OCT.replace(day=6), cost=10_000_000)
    BillingProfile.objects.update_or_create(group=group, defaults={"stripe_customer_id": "cus_X1"})
    result = invoice_generate(group=group, period=period_from_key("2025-10"))
    assert result.invoice is not None
    return result.invoice


def test_mirror_is_off_with_localstripe() -> None:
    # Tests (like `make run`) use localstripe's placeholder key: there are no invoices to mirror to.
    assert django_settings.INVOICE_STRIPE_MIRROR is False


def test_invoice_mirrored_as_items_finalized_and_paid_out_of_band(
    stripe_replay: StripeReplay, october_invoice: Invoice
) -> None:
    inv = october_invoice
    billed = [ln for ln in inv.lines.order_by("position") if ln.billed and ln.amount_cents]

    sid = invoice_mirror(inv)

    calls = [(m, p) for m, p, _, _ in stripe_replay.requests]
    assert calls == [
        ("POST", "/v1/invoices"),
        *[("POST", "/v1/invoiceitems")] * len(billed),
        ("POST", f"/v1/invoices/{sid}/finalize"),
        ("POST", f"/v1/invoices/{sid}/pay"),
    ]
    create = stripe_replay.requests[0][2]
    assert create["customer"] == "cus_X1"
    assert create["pending_invoice_items_behavior"] == "exclude"
    assert create["collection_method"] == "send_invoice"
    assert create["metadata[portal_invoice]"] == inv.number
    items = [r[2] for r in stripe_replay.requests[1 : 1 + len(billed)]]
    assert [int(i["amount"]) for i in items] == [ln.amount_cents for ln in billed]
    assert all(i["invoice"] == sid and i["currency"] == "usd" for i in items)
    assert [i["description"].split(" — ")[0] for i in items] == [ln.label for ln in billed]
    assert stripe_replay.requests[-1][2]["paid_out_of_band"] == "true"
    keys = [r[3] for r in stripe_replay.requests]
    assert all(k.startswith(f"portal-{inv.number}-") for k in keys)
    assert len(set(keys)) == len(keys)

    inv.refresh_from_db()
    assert inv.stripe_invoice_id == sid
    assert inv.stripe_hosted_url == recording("invoice_paid")["hosted_invoice_url"]
    assert inv.stripe_error == ""
    assert stripe_replay.invoices[sid]["status"] == "paid"
    assert stripe_replay.invoices[sid]["total"] == inv.total_cents == 1324


def test_outage_midway_resumes_without_a_second_invoice_or_duplicate_items(
    stripe_replay: StripeReplay, october_invoice: Invoice
) -> None:
    stripe_replay.fail_next.add("/finalize")
    with pytest.raises(stripe_api.StripeFailure):
        invoice_mirror(october_invoice)
    inv = Invoice.objects.get(pk=october_invoice.pk)
    assert inv.stripe_invoice_id  # saved as soon as Stripe created it
    assert inv.stripe_error.startswith("Stripe:")
    assert inv.stripe_hosted_url == ""

    sid = invoice_mirror(inv)  # the task's retry

    assert sid == inv.stripe_invoice_id
    creates = [r for r in stripe_replay.requests if r[:2] == ("POST", "/v1/invoices")]
    assert len(creates) == 1
    stripe_inv = stripe_replay.invoices[sid]
    billed = [ln for ln in inv.lines.all() if ln.billed and ln.amount_cents]
    # Items re-sent with the same idempotency keys: not doubled.
    assert len(stripe_inv["lines"]["data"]) == len(billed) == 4
    assert stripe_inv["status"] == "paid"
    assert stripe_inv["total"] == inv.total_cents
    inv.refresh_from_db()
    assert inv.stripe_error == ""
    assert inv.stripe_hosted_url.startswith("https://invoice.stripe.com/")


def test_mirroring_again_changes_nothing(
    stripe_replay: StripeReplay, october_invoice: Invoice
) -> None:
    sid = invoice_mirror(october_invoice)
    before = len(stripe_replay.requests)
    assert invoice_mirror(Invoice.objects.get(pk=october_invoice.pk)) == sid
    assert [r[:2] for r in stripe_replay.requests[before:]] == [("GET", f"/v1/invoices/{sid}")]


def test_group_without_stripe_customer_is_not_mirrored(
    stripe_replay: StripeReplay, october_invoice: Invoice
) -> None:
    BillingProfile.objects.filter(group=october_invoice.group).update(stripe_customer_id="")
    assert invoice_mirror(october_invoice) == ""
    assert stripe_replay.requests == []


def test_issuing_queues_the_mirror_only_when_switched_on(
    stripe_replay: StripeReplay, group, settings, django_capture_on_commit_callbacks
) -> None:  # type: ignore[no-untyped-def]
    catalogue_sync()
    key = api_key_create(group=group, name="Server").key
    sonar = AIModel.objects.get(name="sonar")
    BillingProfile.objects.update_or_create(group=group, defaults={"stripe_customer_id": "cus_X2"})
    usage(group, key, sonar, OCT.replace(day=9), cost=3_000_000)
    usage(group, key, sonar, OCT.replace(month=11, day=9), cost=5_000_000)

    settings.INVOICE_STRIPE_MIRROR = False
    with django_capture_on_commit_callbacks(execute=True):
        invoice_generate(group=group, period=period_from_key("2025-10"))
    assert stripe_replay.requests == []

    settings.INVOICE_STRIPE_MIRROR = True
    with django_capture_on_commit_callbacks(execute=True):
        result = invoice_generate(group=group, period=period_from_key("2025-11"))
    assert result.invoice is not None
    result.invoice.refresh_from_db()
    assert result.invoice.stripe_invoice_id
    assert stripe_replay.invoices[result.invoice.stripe_invoice_id]["total"] == 500
    assert stripe_replay.requests[0][2]["customer"] == "cus_X2"

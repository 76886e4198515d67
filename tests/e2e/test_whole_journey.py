"""The whole journey of a team lead and a teammate, in Chromium, against the portal's real processes.

What runs (tests/e2e/processes.py): the web server is `uvicorn portal.asgi:application` with 2
workers, as the Dockerfile runs it; a Celery worker and Celery beat are `celery -A portal worker`
and `celery -A portal beat`, as the Procfile runs them. They use the pytest test database (this
test is transactional: what either side commits, the other sees), the suite's Redis as cache and
broker, localstripe (its Stripe.js in the browser, its webhooks sent to the web process) and a
real SMTP server (aiosmtpd) for every e-mail, whichever process sends it. Nothing runs eagerly.

Steps: 1 sign-up and group, 2 card, credits and auto top-up, 3 a key used with both SDKs,
4 usage metrics, 5 a read-only teammate, 6 credits run out (402), auto top-up in the worker, then
a card declined at charge time (Admins e-mailed, keys stay blocked), 7 revocation, 8 the month's
invoice and its PDF.

Two things are arranged rather than waited for:
- Step 6 needs credits to run out in a few calls, so `sonar` with a high search context is priced
  at $8 a request here (its catalogue row). While credits run out the worker is held (SIGSTOP):
  the top-up queued when the balance fell under the threshold waits, so the 402 that a slower
  top-up would let users see is observable; SIGCONT, and the worker charges the card.
- Step 8: the invoice of a month is issued when the month has ended (billing/invoicing/generation.py
  refuses an open period); beat's run is at 00:10 UTC on the 1st. The test simulates that moment:
  in the test process, the invoicing clock (`timezone.now` as `billing.invoicing.periods` and
  `billing.invoicing.generation` read it) is set to 00:10 UTC on the 1st of next month, and
  `manage.py generate_invoices --period <this month>` is run, as the beat's task would for the
  period that just closed. The browser then finds the invoice as any member would.

Screenshots of each step and the processes' logs are saved under test-results/<test>/.
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from types import SimpleNamespace

import openai
import perplexity
import pytest
from django.conf import settings
from django.core.management import call_command
from django.utils import timezone
from pypdf import PdfReader

from billing.invoicing import generation, periods
from billing.models import (
    BillingProfile,
    CreditAccount,
    Invoice,
    Payment,
    PaymentMethod,
    StripeEvent,
)
from portal.launcher import Processes, free_port, wait_for
from tests.e2e.processes import portal_env, start_beat, start_web, start_worker, web_ready
from tests.e2e.test_billing_journey import fill_card
from usage.catalogue import catalogue_sync
from usage.models import AIModel, UsageEvent

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PASSWORD = "a-long-unique-passphrase"
MESSAGES = [{"role": "user", "content": "What is the tallest mountain?"}]
WEBHOOK_SECRET = "whsec_whole_journey"  # localstripe's, for this test only
DECLINES_WHEN_CHARGED = "4000000000000341"  # localstripe: attaches, every charge is declined
HIGH = {"web_search_options": {"search_context_size": "high"}}
# Costs in micro-dollars (the simulator's usage is deterministic: 7 prompt tokens, 21 completion):
SONAR = 5_028  # 7 + 21 + $5 / 1K requests
SONAR_PRO = 6_336  # 7 × 3 + 21 × 15 + $6 / 1K requests
SONAR_HIGH = 8_000_028  # 7 + 21 + $8,000 / 1K requests (the price set below)


@dataclass
class Portal:
    url: str
    processes: Processes


@pytest.fixture
def live_portal(transactional_db, localstripe, smtp_server, output_dir) -> Iterator[Portal]:  # type: ignore[no-untyped-def]
    """Web server, Celery worker and beat as subprocesses; stopped (process groups) afterwards."""
    catalogue_sync()
    # $8,000 per 1K requests with a high search context: credits run out in a few calls (step 6).
    AIModel.objects.filter(name="sonar").update(request_high_per_k=8_000_000_000)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    localstripe.register_webhook(f"{url}/stripe/webhook/", WEBHOOK_SECRET)
    env = portal_env(
        REDIS_URL=settings.REDIS_URL,
        SITE_URL=url,
        STRIPE_API_BASE=localstripe.base_url,
        STRIPE_SECRET_KEY="sk_test_localstripe",
        STRIPE_PUBLISHABLE_KEY="pk_test_localstripe",
        STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
        EMAIL_URL=f"smtp://{smtp_server.host}:{smtp_server.port}",
    )
    processes = Processes(env=env, logs=output_dir / "logs")
    try:
        start_web(processes, port)
        start_worker(processes)
        start_beat(processes)
        wait_for(lambda: web_ready(processes, url), 60, "the web server", every=0.1)
        yield Portal(url=url, processes=processes)
    finally:
        processes.stop()


def balance(group) -> int:  # type: ignore[no-untyped-def]
    return CreditAccount.objects.get(group=group).balance_micros


def answered_or_refused(client: openai.OpenAI, **extra):  # type: ignore[no-untyped-def]
    """The completion, or None when the gateway answers 402 (no credits)."""
    try:
        return client.chat.completions.create(model="sonar", messages=MESSAGES, extra_body=extra)
    except openai.APIStatusError as exc:
        if exc.status_code != 402:
            raise
        assert exc.code == "insufficient_credits", exc
        return None


def sign_up(page, base: str, smtp, name: str, email: str) -> None:  # type: ignore[no-untyped-def]
    page.get_by_label("Full name").fill(name)
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password:", exact=True).fill(PASSWORD)
    page.get_by_label("Password (again)").fill(PASSWORD)
    page.get_by_role("button", name="Sign Up").click()


# Over 60 lines on purpose: one person's journey read top to bottom, its numbered steps the same
# as docs/reliability.md's list; split into functions it would hide the order the user lives.
def test_team_lead_and_teammate_whole_journey(
    live_portal, smtp_server, new_page, output_dir, monkeypatch
):  # type: ignore[no-untyped-def]
    base = live_portal.url
    processes = live_portal.processes
    shot = iter(range(1, 100))

    def snap(page, name: str) -> None:  # type: ignore[no-untyped-def]
        page.screenshot(path=output_dir / f"{next(shot):02d}-{name}.png", full_page=True)

    # 1. Sign up, verify through the mailed link, create the API group with address and tax ID.
    lead = new_page()
    lead.goto(f"{base}/accounts/signup/")
    sign_up(lead, base, smtp_server, "Tess Lead", "tess@example.com")
    lead.wait_for_url("**/accounts/confirm-email/")
    mail = smtp_server.wait_for(to="tess@example.com", subject_contains="Confirm")
    lead.goto(next(u for u in smtp_server.links(mail) if "/accounts/confirm-email/" in u))
    lead.get_by_role("button", name="Confirm").click()
    lead.wait_for_url("**/groups/new/")
    lead.get_by_label("Organization name").fill("Tess Labs")
    lead.get_by_label("Address line 1").fill("1 Market Street")
    lead.get_by_label("City").fill("San Francisco")
    lead.get_by_label("ZIP / postal code").fill("94105")
    lead.get_by_label("Country").select_option("US")
    lead.get_by_label("Tax ID").fill("12-3456789")
    snap(lead, "create-group")
    lead.get_by_role("button", name="Create API group").click()
    lead.wait_for_url("**/usage/")
    group_url = lead.url.rsplit("/usage/", 1)[0]
    from groups.models import APIGroup

    group = APIGroup.objects.get(name="Tess Labs")
    assert (group.tax_id, group.city, group.country.code) == ("12-3456789", "San Francisco", "US")

    # 2. A card through the Stripe.js form, $20 of credits, auto top-up of $25 below $5.
    lead.goto(f"{group_url}/billing/cards/new/")
    fill_card(lead, "4242424242424242")
    lead.get_by_role("button", name="Save card").click()
    lead.wait_for_url(re.compile(r".*/billing/$"))
    lead.get_by_role("textbox", name="Amount (USD)", exact=True).fill("20")
    lead.get_by_role("button", name="Buy credits").click()
    # The worker charges the card; the page polls (htmx) until it has, then says so.
    lead.get_by_text("$20.00 of credits added").wait_for(timeout=30_000)
    lead.get_by_label("Turn on auto top-up").check()
    lead.get_by_role("textbox", name="When the balance falls below (USD)", exact=True).fill("5")
    lead.get_by_label("Add this amount (USD)").fill("25")
    lead.get_by_role("button", name="Save auto top-up").click()
    assert lead.get_by_text("Auto top-up saved").is_visible()
    snap(lead, "billing")
    assert CreditAccount.objects.get(group=group).balance_micros == 20_000_000

    # 3. An API key, copied from the page, used with both SDKs, streaming and not.
    lead.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
    lead.goto(f"{group_url}/keys/")
    lead.get_by_placeholder("e.g. Production server").fill("Server")
    lead.get_by_role("button", name="Create key").click()
    lead.get_by_test_id("new-key").wait_for()
    lead.get_by_role("button", name="Copy").first.click()
    secret = lead.evaluate("navigator.clipboard.readText()")
    assert secret == lead.get_by_label("Your new API key").input_value()
    assert secret.startswith("pplx-")
    snap(lead, "api-key")

    oa = openai.OpenAI(base_url=f"{base}/v1", api_key=secret, max_retries=0)
    answer = oa.chat.completions.create(model="sonar", messages=MESSAGES)
    assert answer.choices[0].message.content and answer.usage.cost["total_cost"] > 0  # type: ignore[attr-defined]
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in oa.chat.completions.create(model="sonar-pro", messages=MESSAGES, stream=True)
        if c.choices
    )
    assert streamed
    px = perplexity.Perplexity(base_url=base, api_key=secret, max_retries=0)
    assert px.chat.completions.create(model="sonar", messages=MESSAGES).choices
    assert list(px.chat.completions.create(model="sonar", messages=MESSAGES, stream=True))
    assert UsageEvent.objects.filter(group=group).count() == 4

    # 4. Usage Metrics by model and by key; CSV export.
    lead.goto(f"{group_url}/usage/?range=24h")
    assert lead.get_by_test_id("total-requests").inner_text() == "4"
    assert "sonar-pro" in lead.get_by_test_id("by-model").inner_text()
    assert "Server" in lead.get_by_test_id("by-key").inner_text()
    snap(lead, "usage")
    export = lead.request.get(f"{group_url}/usage/events.csv?range=24h")
    assert export.status == 200 and len(export.text().strip().splitlines()) == 5

    # 5. A teammate joins in a second browser context: sees usage, cannot change anything.
    lead.goto(f"{group_url}/members/")
    lead.get_by_text("+ Add Member").click()
    lead.get_by_label("E-mail address").fill("mate@example.com")
    lead.get_by_label("Role").first.select_option("member")
    lead.get_by_role("button", name="Invite").click()
    assert lead.get_by_text("Invitation sent to mate@example.com").is_visible()
    mail = smtp_server.wait_for(to="mate@example.com", subject_contains="Tess Labs")
    mate = new_page()
    mate.goto(next(u for u in smtp_server.links(mail) if "/invitations/" in u))
    mate.get_by_role("link", name="Create account and join").click()
    sign_up(mate, base, smtp_server, "Mate Person", "mate@example.com")
    mate.get_by_role("button", name="Join Tess Labs").click()
    mate.wait_for_url(re.compile(r".*/usage/$"))
    mate.goto(f"{group_url}/usage/?range=24h")
    assert mate.get_by_test_id("total-requests").inner_text() == "4"
    mate.goto(f"{group_url}/billing/")
    assert mate.get_by_test_id("balance").is_visible()
    assert mate.get_by_role("button", name="Buy credits").count() == 0
    mate.goto(f"{group_url}/keys/")
    assert mate.get_by_role("button", name="Create key").count() == 0
    snap(mate, "teammate-keys")
    token = mate.evaluate("document.cookie.match(/csrftoken=([^;]+)/)[1]")
    for path, form in [
        ("/billing/credits/", {"amount": "500"}),
        ("/keys/new/", {"name": "Mine"}),
        ("/members/invite/", {"email": "evil@example.com", "role": "admin"}),
    ]:
        forged = mate.request.post(
            f"{group_url}{path}", form={**form, "csrfmiddlewaretoken": token},
            headers={"X-CSRFToken": token, "Referer": base + "/"},
        )  # fmt: skip
        assert forged.status == 403, path
    assert CreditAccount.objects.get(group=group).balance_micros < 20_000_000
    assert group.api_keys.count() == 1
    assert not group.invitations.filter(email="evil@example.com").exists()

    # 6. Credits run out. Auto top-up is on ($25 below $5, step 2). The worker is held while
    #    three $8 calls take $19.98 to $11.98, to $3.98 (under $5: the gateway queues a top-up)
    #    and to -$4.02; the next call is refused with 402.
    spent = 3 * SONAR + SONAR_PRO
    assert balance(group) == 20_000_000 - spent
    wait_for(lambda: processes.logged("worker", " ready."), 30, "the Celery worker")
    processes.pause("worker")
    try:
        for _ in range(3):
            assert answered_or_refused(oa, **HIGH) is not None
        spent += 3 * SONAR_HIGH
        with pytest.raises(openai.APIStatusError) as refused:
            oa.chat.completions.create(model="sonar", messages=MESSAGES, extra_body=HIGH)
        assert (refused.value.status_code, refused.value.code) == (402, "insufficient_credits")
        assert balance(group) == 20_000_000 - spent < 0
        lead.goto(f"{group_url}/billing/")
        assert lead.get_by_test_id("blocked-banner").is_visible()
        snap(lead, "out-of-credits")
        assert not Payment.objects.filter(group=group, kind="auto_top_up").exists()
    finally:
        processes.resume("worker")
    # The worker takes the queued top-up and charges the saved card, once; calls succeed again.
    wait_for(
        lambda: Payment.objects.filter(group=group, kind="auto_top_up", status="succeeded").exists(),
        30, "the auto top-up",
    )  # fmt: skip
    assert wait_for(lambda: answered_or_refused(oa), 10, "calls to be admitted again").choices
    spent += SONAR
    top_up = Payment.objects.get(group=group, kind="auto_top_up")
    # localstripe's webhooks reach the web process too (the purchase's and the top-up's).
    wait_for(
        lambda: StripeEvent.objects.filter(type="payment_intent.succeeded").count() == 2,
        10, "the payment_intent.succeeded webhooks",
    )  # fmt: skip
    assert (top_up.status, top_up.amount_micros) == ("succeeded", 25_000_000)
    assert balance(group) == 20_000_000 + 25_000_000 - spent == 20_973_468
    lead.goto(f"{group_url}/billing/")
    assert lead.get_by_test_id("blocked-banner").count() == 0
    assert lead.get_by_test_id("balance").inner_text() == "$20.97"
    assert lead.get_by_role("cell", name="Auto top-up by card", exact=True).count() == 1
    snap(lead, "auto-top-up")

    #    Then the card is replaced by one the bank declines when charged, and credits run out
    #    again: $20.97 → $12.97 → $4.97 (top-up queued, declined) → -$3.03 → 402. Admins are
    #    e-mailed by the worker; the keys stay blocked.
    lead.goto(f"{group_url}/billing/cards/new/")
    fill_card(lead, DECLINES_WHEN_CHARGED)
    lead.get_by_role("button", name="Save card").click()
    lead.wait_for_url(re.compile(r".*/billing/$"))
    lead.once("dialog", lambda dialog: dialog.accept())  # "Remove this card?"
    lead.get_by_test_id("cards").locator("li", has_text="4242").get_by_role(
        "button", name="Remove"
    ).click()
    lead.get_by_text("Visa •••• 4242 removed.").wait_for()
    assert PaymentMethod.objects.get(group=group).last4 == "0341"
    for _ in range(3):
        assert answered_or_refused(oa, **HIGH) is not None
    spent += 3 * SONAR_HIGH
    # Queued by the gateway at the crossing, not by the next minute's credit watch (beat).
    mail = smtp_server.wait_for(to="tess@example.com", subject_contains="was declined", timeout=5)
    assert mail["Subject"] == "Auto top-up of $25.00 for Tess Labs was declined"
    assert "mate@example.com" not in str(mail["To"])  # Admins only
    with pytest.raises(openai.APIStatusError) as refused:
        oa.chat.completions.create(model="sonar", messages=MESSAGES)
    assert (refused.value.status_code, refused.value.code) == (402, "insufficient_credits")
    with pytest.raises(perplexity.APIStatusError) as px_refused:
        px.chat.completions.create(model="sonar", messages=MESSAGES)
    assert px_refused.value.status_code == 402
    declined = Payment.objects.get(group=group, kind="auto_top_up", status="failed")
    # The decline arrives twice (the charge call fails, then the webhook): counted once, so the
    # first retry is in 1 hour (AUTO_TOP_UP_RETRY_HOURS), not later.
    wait_for(
        lambda: StripeEvent.objects.filter(type="payment_intent.payment_failed").exists(),
        10, "the payment_intent.payment_failed webhook",
    )  # fmt: skip
    assert BillingProfile.objects.get(group=group).top_up_failures == 1
    assert "declined" in declined.error_message.lower()
    assert Payment.objects.filter(group=group, kind="auto_top_up").count() == 2
    assert balance(group) == 45_000_000 - spent == -3_026_616
    lead.goto(f"{group_url}/billing/")
    assert lead.get_by_test_id("top-up-failed").is_visible()
    assert lead.get_by_test_id("blocked-banner").is_visible()
    snap(lead, "top-up-declined")

    # 7. Revoke the key: within a second its calls are refused as unknown (401), no longer as
    #    out of credits (402).
    lead.goto(f"{group_url}/keys/")
    lead.get_by_role("link", name="Revoke").click()
    lead.get_by_role("button", name="Revoke key").click()
    revoked_at = time.monotonic()
    with pytest.raises(openai.AuthenticationError):
        while True:
            assert answered_or_refused(oa) is None  # blocked, not charged
            assert time.monotonic() - revoked_at < 1.0, "the revoked key still works after 1 s"
            time.sleep(0.05)  # poll, without spending the key's rate limit
    snap(lead, "revoked")

    # 8. The month's invoice, issued as beat's run at 00:10 UTC on the 1st would issue it (the
    #    invoicing clock is set there; see the docstring), found in the browser.
    period = periods.period_containing(timezone.now())
    with monkeypatch.context() as clock:
        at = period.end + timedelta(minutes=10)
        for module in (periods, generation):
            clock.setattr(module, "timezone", SimpleNamespace(now=lambda: at))
        assert periods.period_just_closed() == period  # the period beat's run invoices
        call_command("generate_invoices", period=period.key, stdout=io.StringIO())
    invoice = Invoice.objects.get(group=group, period_key=period.key)
    assert invoice.usage_micros == spent and invoice.closing_balance_micros == -3_026_616
    last4 = group.api_keys.get().last_four
    lead.goto(f"{group_url}/usage/")
    lead.get_by_test_id("invoice-history").click()
    lead.get_by_role("link", name=invoice.number).click()
    lines = lead.get_by_test_id("invoice-lines")
    lines.wait_for()
    assert f"sonar ({last4})" in lines.inner_text()
    assert f"sonar-pro ({last4})" in lines.inner_text()
    assert lead.get_by_test_id("invoice-total").first.inner_text() == "$48.03"
    snap(lead, "invoice")
    with lead.expect_download() as download:
        lead.get_by_test_id("invoice-pdf").click()
    assert download.value.suggested_filename == f"{invoice.number}.pdf"
    pdf_text = "".join(page.extract_text() for page in PdfReader(download.value.path()).pages)
    assert f"sonar ({last4})" in pdf_text and "Tess Labs" in pdf_text and "$48.03" in pdf_text
    for name in ("web", "worker", "beat"):
        processes.alive(name)  # none of them died on the way

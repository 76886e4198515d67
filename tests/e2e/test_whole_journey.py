"""The whole journey of a team lead and a teammate, in Chromium, against a real server.

The portal (Django pages and the gateway, one ASGI app) runs under uvicorn on loopback (the
`gateway` fixture); e-mail goes through a real SMTP server, cards through localstripe's Stripe.js.
Celery tasks run eagerly in the server's process (the suite's test setting); the worker and its
faults are covered by tests/billing/test_worker_killed.py. Screenshots of each step are saved
under test-results/<test>/.
"""

from __future__ import annotations

import re
import time

import openai
import perplexity
import pytest

from billing.models import CreditAccount
from tests.e2e.test_billing_journey import fill_card
from tests.gateway import conftest as gateway_fixtures
from usage.models import UsageEvent

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

gateway = gateway_fixtures.gateway  # the uvicorn server fixture, pages and gateway
PASSWORD = "a-long-unique-passphrase"
MESSAGES = [{"role": "user", "content": "What is the tallest mountain?"}]


def sign_up(page, base: str, smtp, name: str, email: str) -> None:  # type: ignore[no-untyped-def]
    page.get_by_label("Full name").fill(name)
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password:", exact=True).fill(PASSWORD)
    page.get_by_label("Password (again)").fill(PASSWORD)
    page.get_by_role("button", name="Sign Up").click()


def test_team_lead_and_teammate_whole_journey(
    gateway, smtp_server, localstripe, new_page, output_dir, settings
):  # type: ignore[no-untyped-def]
    base = gateway.url
    settings.SITE_URL = base
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
    assert lead.get_by_text("$20.00 of credits added").is_visible()
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

    # 7. Revoke the key: the next call is refused within a second.
    lead.goto(f"{group_url}/keys/")
    lead.get_by_role("link", name="Revoke").click()
    lead.get_by_role("button", name="Revoke key").click()
    revoked_at = time.monotonic()
    with pytest.raises(openai.AuthenticationError):
        while True:
            oa.chat.completions.create(model="sonar", messages=MESSAGES)
            assert time.monotonic() - revoked_at < 1.0, "the revoked key still works after 1 s"
    snap(lead, "revoked")

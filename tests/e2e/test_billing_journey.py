"""An Admin saves a card with the Stripe.js form, buys credits, turns on auto top-up."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from billing.models import CreditAccount, PaymentMethod
from tests.factories import GroupFactory, MembershipFactory

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def fill_card(page, number: str) -> None:  # type: ignore[no-untyped-def]
    page.get_by_placeholder("number").fill(number)
    page.get_by_placeholder("exp_month").fill("12")
    page.get_by_placeholder("exp_year").fill("30")  # localstripe prefixes "20"
    page.get_by_placeholder("cvc").fill("123")
    page.get_by_placeholder("postal_code").fill("94105")


def test_card_credits_and_auto_top_up_in_the_browser(
    live_server, localstripe, new_page, output_dir, password
):
    group = GroupFactory(name="Card Co")
    admin = MembershipFactory(group=group, role="admin").user
    page = new_page()
    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_label("Email").fill(admin.email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign In").click()
    page.goto(f"{live_server.url}/g/{group.public_id}/billing/")
    assert page.get_by_test_id("blocked-banner").is_visible()

    # A card that the bank refuses: Stripe's message appears in the form, nothing is saved.
    page.get_by_role("link", name="Add Payment Method").click()
    assert page.get_by_text("Saving a card does not charge it").is_visible()
    fill_card(page, "4000000000000002")
    page.get_by_role("button", name="Save card").click()
    error = page.get_by_test_id("card-error")
    error.wait_for(state="visible")
    expect(error).to_have_text(re.compile(r"\S"))  # not wait_for_function: the CSP forbids eval
    assert "declined" in error.inner_text().lower()
    page.screenshot(path=output_dir / "01-declined-card.png")
    assert not PaymentMethod.objects.exists()

    # A good card.
    page.goto(f"{live_server.url}/g/{group.public_id}/billing/cards/new/")
    fill_card(page, "4242424242424242")
    page.get_by_role("button", name="Save card").click()
    page.wait_for_url(re.compile(r".*/billing/$"))
    assert page.get_by_text("Nothing was charged").is_visible()
    assert "Visa •••• 4242" in page.get_by_test_id("cards").inner_text()
    assert CreditAccount.objects.get(group=group).balance_micros == 0

    # Buy $20 of credits.
    page.get_by_role("textbox", name="Amount (USD)", exact=True).fill("20")
    page.get_by_role("button", name="Buy credits").click()
    assert page.get_by_text("$20.00 of credits added").is_visible()
    assert page.get_by_test_id("balance").inner_text() == "$20.00"
    assert page.get_by_test_id("blocked-banner").count() == 0

    # Turn on auto top-up.
    page.get_by_label("Turn on auto top-up").check()
    page.get_by_role("textbox", name="When the balance falls below (USD)", exact=True).fill("5")
    page.get_by_label("Add this amount (USD)").fill("25")
    page.get_by_role("button", name="Save auto top-up").click()
    assert page.get_by_text("Auto top-up saved").is_visible()
    page.screenshot(path=output_dir / "02-billing.png", full_page=True)
    profile = group.billing
    profile.refresh_from_db()
    assert (
        profile.auto_top_up_enabled,
        profile.auto_top_up_threshold_micros,
        profile.auto_top_up_amount_micros,
    ) == (
        True,
        5_000_000,
        25_000_000,
    )

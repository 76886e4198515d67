"""Buying credits does not wait for Stripe in the web request: the purchase is recorded as a
pending Payment, its charge is queued (`charge_payment`), and the page shows its state —
processing (htmx polls, a link reloads), then paid, declined or waiting for the bank."""

from __future__ import annotations

import pytest

from billing.models import CreditAccount, Payment
from billing.tasks import charge_payment
from tests.billing.test_stripe import DECLINES, NEEDS_AUTH, intents

pytestmark = pytest.mark.django_db


def balance(group) -> int:  # type: ignore[no-untyped-def]
    return CreditAccount.objects.get(group=group).balance_micros


def start_purchase(admin_client, group, amount: str = "20.00"):  # type: ignore[no-untyped-def]
    """POST the Add credits form; the charge task is not run (no commit in this test)."""
    response = admin_client.post(f"/g/{group.public_id}/billing/credits/", {"buy-amount": amount})
    payment = Payment.objects.get(group=group)
    assert response.status_code == 302
    assert response.url == f"/g/{group.public_id}/billing/payments/{payment.public_id}/"
    return payment


def test_the_purchase_request_charges_nothing_and_shows_processing(admin_client, group, save_card):
    save_card(group)
    payment = start_purchase(admin_client, group)
    # The web request made no PaymentIntent: the card is charged by the queued task.
    assert (payment.status, payment.amount_micros) == ("creating", 20_000_000)
    assert intents(group) == [] and balance(group) == 0
    url = f"/g/{group.public_id}/billing/payments/{payment.public_id}/"

    page = admin_client.get(url).content.decode()
    assert "Payment processing…" in page and "$20.00" in page
    assert f'hx-get="{url}"' in page and 'hx-trigger="every 1s"' in page
    assert f'href="{url}">Check again</a>' in page  # works without JavaScript too
    poll = admin_client.get(url, HTTP_HX_REQUEST="true")
    assert poll.status_code == 200 and "Payment processing…" in poll.content.decode()
    assert "<html" not in poll.content.decode()  # just the state, swapped in place
    overview = admin_client.get(f"/g/{group.public_id}/billing/").content.decode()
    assert "Payment processing: $20.00 of credits" in overview

    assert charge_payment(payment.pk) == "succeeded"
    assert balance(group) == 20_000_000 and len(intents(group)) == 1
    settled = admin_client.get(url, HTTP_HX_REQUEST="true")
    assert settled["HX-Redirect"] == url  # htmx loads the whole page, which says how it went
    done = admin_client.get(url, follow=True)
    assert done.redirect_chain == [(f"/g/{group.public_id}/billing/", 302)]
    assert "$20.00 of credits added" in done.content.decode()
    assert "Payment processing" not in done.content.decode()
    # Running the task again (a redelivery) charges nothing more.
    assert charge_payment(payment.pk) == "succeeded"
    assert balance(group) == 20_000_000 and len(intents(group)) == 1


def test_a_declined_purchase_says_why_and_credits_nothing(admin_client, group, save_card):
    save_card(group, DECLINES)
    payment = start_purchase(admin_client, group)
    assert charge_payment(payment.pk) == "failed"
    url = f"/g/{group.public_id}/billing/payments/{payment.public_id}/"
    page = admin_client.get(url, follow=True).content.decode()
    assert "The payment was declined:" in page and "Nothing was charged." in page
    assert balance(group) == 0


def test_a_purchase_the_bank_wants_confirmed_goes_to_the_confirmation(
    admin_client, group, save_card
):
    save_card(group, NEEDS_AUTH)
    payment = start_purchase(admin_client, group, "15")
    assert charge_payment(payment.pk) == "requires_action"
    response = admin_client.get(f"/g/{group.public_id}/billing/payments/{payment.public_id}/")
    assert response.url == f"/g/{group.public_id}/billing/payments/{payment.public_id}/complete/"
    assert balance(group) == 0


def test_members_cannot_see_another_groups_payment(admin_client, group, save_card):
    from tests.factories import GroupFactory

    other = GroupFactory()
    save_card(other)
    theirs = Payment.objects.create(
        public_id="p-other", group=other, kind="purchase", amount_micros=5_000_000
    )
    response = admin_client.get(f"/g/{group.public_id}/billing/payments/{theirs.public_id}/")
    assert response.status_code == 404

"""Stripe webhooks, hardened: only a replayed event id is a "duplicate"; disputes (chargebacks)
take the disputed credits back and give them back when won; a PaymentIntent paid by another
group's customer is never credited. Events are posted signed, as Stripe sends them."""

from __future__ import annotations

import logging

import pytest
import stripe
from django.core import mail
from django.db.models import Sum

from audit.models import AuditEvent
from billing import payments, stripe_api
from billing.models import CreditAccount, LedgerEntry, Payment, PaymentMethod, StripeEvent
from billing.services import ledger_post
from groups.models import new_public_id
from tests.factories import GroupFactory, MembershipFactory

pytestmark = pytest.mark.django_db


def balance(group) -> int:  # type: ignore[no-untyped-def]
    account = CreditAccount.objects.filter(group=group).first()
    return account.balance_micros if account else 0


def entries_sum(group) -> int:  # type: ignore[no-untyped-def]
    return (
        LedgerEntry.objects.filter(account__group=group).aggregate(s=Sum("amount_micros"))["s"] or 0
    )


def intent_for(group, payment: Payment, amount_cents: int, **metadata: str) -> dict:  # type: ignore[no-untyped-def]
    """A PaymentIntent charged to `group`'s card, naming `payment` in its metadata."""
    return stripe_api.payment_intent_create(
        customer_id=payments.profile_for(group=group).stripe_customer_id,
        payment_method_id=PaymentMethod.objects.get(group=group, is_default=True).stripe_id,
        amount_cents=amount_cents, idempotency_key=f"t-{new_public_id()}",
        metadata={"portal_payment": payment.public_id, **metadata}, description="t",
    )  # fmt: skip


def new_payment(group, amount_micros: int = 30_000_000) -> Payment:  # type: ignore[no-untyped-def]
    return Payment.objects.create(
        public_id=new_public_id(), group=group, kind="purchase", amount_micros=amount_micros
    )


# --- integrity errors --------------------------------------------------------------------------


def test_an_integrity_error_that_is_not_a_replay_fails_the_webhook_so_stripe_retries(
    group, save_card, post_webhook, caplog
):
    save_card(group)
    payment = new_payment(group)
    intent = intent_for(group, payment, 3000)
    # A stale row holds the PaymentIntent id: recording it on our payment breaks a unique key.
    stale = new_payment(group, 1_000_000)
    Payment.objects.filter(pk=stale.pk).update(stripe_payment_intent_id=intent["id"])
    with caplog.at_level(logging.ERROR, logger="billing.webhooks"):
        response = post_webhook("payment_intent.succeeded", intent["id"], event_id="evt_pi_1")
    assert response.status_code == 500
    assert "evt_pi_1" in caplog.text and "integrity" in caplog.text
    assert not StripeEvent.objects.exists()  # not marked done: the retry is processed
    assert balance(group) == 0 and not LedgerEntry.objects.exists()
    Payment.objects.filter(pk=stale.pk).delete()  # the cause is fixed; Stripe retries
    assert post_webhook("payment_intent.succeeded", intent["id"], event_id="evt_pi_1").json() == {
        "received": True
    }
    assert balance(group) == 30_000_000
    assert post_webhook("payment_intent.succeeded", intent["id"], event_id="evt_pi_1").json() == {
        "received": True,
        "duplicate": True,
    }
    assert balance(group) == 30_000_000 == entries_sum(group)


# --- a payment's customer must be the group's ---------------------------------------------------


@pytest.mark.parametrize("names", ["payment_of_a_paid_by_b", "metadata_names_b"])
def test_payment_intent_of_another_groups_customer_is_refused(
    group, save_card, post_webhook, caplog, names
):
    other = GroupFactory()
    save_card(group)
    save_card(other)
    payment = new_payment(group)
    if names == "payment_of_a_paid_by_b":
        intent = intent_for(other, payment, 3000, portal_group=group.public_id)
    else:
        intent = intent_for(group, payment, 3000, portal_group=other.public_id)
    assert intent["status"] == "succeeded"  # the card was charged at Stripe
    with caplog.at_level(logging.ERROR):
        response = post_webhook("payment_intent.succeeded", intent["id"])
    assert response.status_code == 200 and response.json()["refused"] is True
    assert f"PaymentIntent {intent['id']} refused" in caplog.text
    assert balance(group) == 0 and balance(other) == 0
    assert not LedgerEntry.objects.exists()
    assert Payment.objects.get(pk=payment.pk).status == "creating"


# --- disputes ----------------------------------------------------------------------------------


@pytest.fixture
def paid(group, user, save_card, buy):  # type: ignore[no-untyped-def]
    """A $20.00 purchase, $15.00 of it spent: balance $5.00. Returns the charge id."""
    save_card(group)
    payment = buy(group, 20_000_000, user)
    ledger_post(group=group, amount_micros=-15_000_000, kind="usage", reference="req-1")
    charge = stripe_api.payment_intent_retrieve(payment.stripe_payment_intent_id)["latest_charge"]
    return charge["id"] if isinstance(charge, dict) else charge


def dispute(charge_id: str, status: str, amount: int = 2000) -> dict:
    return {"object": "dispute", "charge": charge_id, "amount": amount, "status": status}


def test_dispute_takes_the_credits_back_blocks_the_keys_and_a_won_dispute_gives_them_back(
    group, user, paid, post_webhook, admin_client, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        for _ in range(3):  # delivered (and re-sent as new events) three times: booked once
            response = post_webhook(
                "charge.dispute.created", "dp_1", obj=dispute(paid, "needs_response")
            )
            assert response.status_code == 200
    assert balance(group) == 5_000_000 - 20_000_000 == -15_000_000
    assert LedgerEntry.objects.get(reference="dispute:dp_1").amount_micros == -20_000_000
    page = admin_client.get(f"/g/{group.public_id}/billing/").content.decode()
    assert 'data-testid="blocked-banner"' in page  # the keys are blocked, as at $0
    assert len(mail.outbox) == 1 and mail.outbox[0].to == [user.email]
    assert "disputed" in mail.outbox[0].subject and "-$15.00" in mail.outbox[0].body
    assert AuditEvent.objects.filter(group=group, action="billing.dispute_opened").count() == 1

    with django_capture_on_commit_callbacks(execute=True):
        for _ in range(2):
            post_webhook("charge.dispute.closed", "dp_1", obj=dispute(paid, "won"))
    assert balance(group) == 5_000_000 == entries_sum(group)
    assert LedgerEntry.objects.get(reference="dispute:dp_1:won").amount_micros == 20_000_000
    assert len(mail.outbox) == 2 and "in your favour" in mail.outbox[1].subject
    assert AuditEvent.objects.filter(group=group, action="billing.dispute_won").count() == 1
    page = admin_client.get(f"/g/{group.public_id}/billing/").content.decode()
    assert 'data-testid="blocked-banner"' not in page


def test_lost_dispute_keeps_the_debit_and_tells_admins_once(
    group, paid, post_webhook, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        post_webhook("charge.dispute.created", "dp_2", obj=dispute(paid, "needs_response", 1250))
        post_webhook("charge.dispute.closed", "dp_2", obj=dispute(paid, "lost", 1250))
        post_webhook("charge.dispute.closed", "dp_2", obj=dispute(paid, "lost", 1250))
    assert balance(group) == 5_000_000 - 12_500_000 == entries_sum(group)
    assert [m.subject.split(": ", 1)[1] for m in mail.outbox] == [
        "a card payment was disputed",
        "the dispute was decided for the card holder",
    ]
    assert AuditEvent.objects.filter(group=group, action="billing.dispute_lost").count() == 1


def test_won_dispute_reported_before_its_opening_nets_to_zero(group, paid, post_webhook):
    post_webhook("charge.dispute.closed", "dp_3", obj=dispute(paid, "won"))
    post_webhook("charge.dispute.created", "dp_3", obj=dispute(paid, "needs_response"))
    assert balance(group) == 5_000_000 == entries_sum(group)
    assert sorted(
        LedgerEntry.objects.filter(reference__startswith="dispute:").values_list(
            "amount_micros", flat=True
        )
    ) == [-20_000_000, 20_000_000]


def test_inquiry_and_over_large_dispute_amounts(group, paid, post_webhook):
    post_webhook("charge.dispute.created", "dp_4", obj=dispute(paid, "warning_needs_response"))
    assert (
        balance(group) == 5_000_000
        and not LedgerEntry.objects.filter(reference__startswith="dispute:").exists()
    )
    # A dispute never takes back more than the payment credited.
    post_webhook("charge.dispute.created", "dp_5", obj=dispute(paid, "needs_response", 999_999))
    assert balance(group) == 5_000_000 - 20_000_000 == entries_sum(group)


def test_dispute_of_a_charge_we_do_not_know_changes_nothing(group, save_card, post_webhook):
    other = GroupFactory()
    MembershipFactory(group=other, role="admin")
    save_card(other)
    # A charge made outside the portal (no Payment of ours).
    intent = stripe.PaymentIntent.create(
        amount=1000, currency="usd", customer=payments.profile_for(group=other).stripe_customer_id,
        payment_method=PaymentMethod.objects.get(group=other).stripe_id, confirm=True,
        api_key="sk_test_localstripe",
    )  # fmt: skip
    charge = intent["latest_charge"]
    charge_id = charge if isinstance(charge, str) else charge["id"]
    response = post_webhook("charge.dispute.created", "dp_6", obj=dispute(charge_id, "lost", 1000))
    assert response.status_code == 200
    assert not LedgerEntry.objects.exists()

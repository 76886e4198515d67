from __future__ import annotations

import threading
from datetime import timedelta

import pytest
import stripe
from django.core import mail
from django.db import connections
from django.utils import timezone

from billing import payments, stripe_api
from billing.models import CreditAccount, LedgerEntry, Payment, PaymentMethod, StripeEvent
from groups.models import new_public_id
from tests.factories import GroupFactory, MembershipFactory

pytestmark = pytest.mark.django_db

DECLINES = "4000000000000341"
NEEDS_AUTH = "4000002500003155"


def balance(group) -> int:  # type: ignore[no-untyped-def]
    return CreditAccount.objects.get(group=group).balance_micros


def intents(group) -> list[dict]:  # type: ignore[no-untyped-def]
    return stripe_api.payment_intents_for_customer(
        payments.profile_for(group=group).stripe_customer_id, limit=100
    )


def test_saving_a_card_charges_nothing(group, user, save_card):
    method = save_card(group, actor=user)
    assert (method.brand, method.last4, method.is_default) == ("visa", "4242", True)
    assert intents(group) == []
    assert balance(group) == 0
    customer = stripe.Customer.retrieve(
        payments.profile_for(group=group).stripe_customer_id, api_key="sk_test_localstripe"
    )
    assert customer.name == group.name
    assert group.audit_events.filter(action="billing.card_add").exists()


def test_purchase_credits_once_and_counts_toward_the_tier(group, user, save_card, buy):
    save_card(group)
    payment = buy(group, 20_000_000, user)
    assert payment.status == "succeeded"
    assert balance(group) == 20_000_000
    entry = LedgerEntry.objects.get(kind="purchase")
    assert entry.reference == payment.stripe_payment_intent_id
    assert CreditAccount.objects.get(group=group).purchased_micros == 20_000_000
    assert len(intents(group)) == 1


def test_webhook_five_times_in_a_row_and_before_the_sync_result(group, save_card, post_webhook):
    save_card(group)
    payment = Payment.objects.create(
        public_id=new_public_id(), group=group, kind="purchase", amount_micros=30_000_000
    )
    method = PaymentMethod.objects.get(group=group)
    intent = stripe_api.payment_intent_create(
        customer_id=payments.profile_for(group=group).stripe_customer_id, payment_method_id=method.stripe_id,
        amount_cents=3000, idempotency_key="k1", metadata={"portal_payment": payment.public_id}, description="t",
    )  # fmt: skip
    for i in range(5):  # the same event delivered five times, then five different events
        assert (
            post_webhook("payment_intent.succeeded", intent["id"], event_id="evt_same").status_code
            == 200
        )
        assert (
            post_webhook("payment_intent.succeeded", intent["id"], event_id=f"evt_{i}").status_code
            == 200
        )
    payments.payment_intent_apply(intent)  # the synchronous result arrives last
    assert balance(group) == 30_000_000
    assert LedgerEntry.objects.filter(reference=intent["id"]).count() == 1
    assert StripeEvent.objects.count() == 6
    Payment.objects.get(pk=payment.pk).status == "succeeded"


@pytest.mark.django_db(transaction=True)
def test_webhook_delivered_five_times_concurrently_credits_once(
    localstripe, save_card, post_webhook, settings, buy
):
    from django.test import Client

    group = GroupFactory()
    save_card(group)
    payment = buy(group, 10_000_000, None)
    intent_id = payment.stripe_payment_intent_id
    LedgerEntry.objects.all()  # the purchase already credited once
    statuses = []

    def deliver() -> None:
        try:
            import hmac
            import json
            import time

            payload = json.dumps(
                {
                    "id": "evt_concurrent",
                    "type": "payment_intent.succeeded",
                    "data": {"object": {"id": intent_id}},
                }
            )
            stamp = int(time.time())
            sig = hmac.new(
                settings.STRIPE_WEBHOOK_SECRET.encode(), f"{stamp}.{payload}".encode(), "sha256"
            ).hexdigest()
            statuses.append(
                Client()
                .post(
                    "/stripe/webhook/",
                    payload,
                    content_type="application/json",
                    HTTP_STRIPE_SIGNATURE=f"t={stamp},v1={sig}",
                )
                .status_code
            )
        finally:
            connections.close_all()

    threads = [threading.Thread(target=deliver) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * 5
    assert LedgerEntry.objects.filter(reference=intent_id).count() == 1
    assert balance(group) == 10_000_000


def test_bad_or_missing_signature_is_400_and_writes_nothing(
    group, save_card, post_webhook, client, buy
):
    save_card(group)
    payment = buy(group, 5_000_000, None)
    response = post_webhook(
        "payment_intent.succeeded", payment.stripe_payment_intent_id, secret="whsec_wrong"
    )
    assert response.status_code == 400
    assert client.post("/stripe/webhook/", "{}", content_type="application/json").status_code == 400
    assert StripeEvent.objects.count() == 0


def test_out_of_order_failure_event_does_not_undo_a_success(group, save_card, post_webhook, buy):
    save_card(group)
    payment = buy(group, 5_000_000, None)
    post_webhook("payment_intent.payment_failed", payment.stripe_payment_intent_id)
    assert Payment.objects.get(pk=payment.pk).status == "succeeded"
    assert balance(group) == 5_000_000


def test_declined_card_credits_nothing_and_says_why(group, save_card, buy):
    save_card(group, DECLINES)  # attaches fine, declines when charged
    payment = buy(group, 20_000_000, None)
    assert payment.status == "failed"
    assert "declined" in payment.error_message.lower()
    assert balance(group) == 0 and not LedgerEntry.objects.exists()


def test_card_needing_authentication_is_completed_on_session(group, save_card, localstripe, buy):
    save_card(group, NEEDS_AUTH)
    payment = buy(group, 15_000_000, None)
    assert payment.status == "requires_action" and balance(group) == 0
    intent = stripe_api.payment_intent_retrieve(payment.stripe_payment_intent_id)
    # What Stripe.js's confirmCardPayment does in the browser (localstripe's test hook):
    import urllib.request

    req = urllib.request.Request(
        f"{localstripe.base_url}/v1/payment_intents/{intent['id']}/_authenticate?success=true",
        data=b'{"key": "pk_test_localstripe", "client_secret": "'
        + intent["client_secret"].encode()
        + b'"}',
        method="POST",
    )
    urllib.request.urlopen(req).read()
    payments.payment_intent_apply(stripe_api.payment_intent_retrieve(intent["id"]))
    assert Payment.objects.get(pk=payment.pk).status == "succeeded"
    assert balance(group) == 15_000_000


def test_purchase_amount_limits(group, save_card):
    save_card(group)
    for amount, message in [
        (4_990_000, "from $5.00"),
        (10_000_010_000, "to $10,000.00"),
        (5_000_001, "whole cents"),
    ]:
        with pytest.raises(payments.BillingError, match=message.replace("$", r"\$")):
            payments.purchase(group=group, amount_micros=amount, actor=None)
    assert not Payment.objects.exists()


def test_refund_books_a_negative_entry_once(group, save_card, post_webhook, buy):
    save_card(group)
    payment = buy(group, 20_000_000, None)
    charge = stripe_api.payment_intent_retrieve(payment.stripe_payment_intent_id)["latest_charge"]
    charge_id = charge["id"] if isinstance(charge, dict) else charge
    stripe.Refund.create(charge=charge_id, amount=500, api_key="sk_test_localstripe")
    for _ in range(3):
        post_webhook("charge.refunded", charge_id)
    refunds = LedgerEntry.objects.filter(kind="refund")
    assert refunds.count() == 1 and refunds.get().amount_micros == -5_000_000
    assert balance(group) == 15_000_000
    assert CreditAccount.objects.get(group=group).purchased_micros == 15_000_000


def test_detached_card_webhook_removes_our_copy(group, save_card, post_webhook):
    method = save_card(group)
    stripe_api.payment_method_detach(method.stripe_id)
    post_webhook("payment_method.detached", method.stripe_id)
    assert not PaymentMethod.objects.exists()


def test_remove_and_default_cards(group, user, save_card):
    first = save_card(group)
    second = save_card(group, "5555555555554444")
    assert not PaymentMethod.objects.get(pk=second.pk).is_default
    payments.card_set_default(method=second, actor=user)
    assert PaymentMethod.objects.get(is_default=True).pk == second.pk
    payments.card_remove(method=PaymentMethod.objects.get(pk=second.pk), actor=user)
    assert PaymentMethod.objects.get().pk == first.pk and PaymentMethod.objects.get().is_default


# --- automatic top-up --------------------------------------------------------------------------


def enable_top_up(group, user, threshold=10_000_000, amount=25_000_000):  # type: ignore[no-untyped-def]
    payments.auto_top_up_configure(
        group=group, enabled=True, threshold_micros=threshold, amount_micros=amount, actor=user
    )


@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_threshold_crossings_make_one_payment_intent(localstripe, save_card):
    group = GroupFactory()
    admin = MembershipFactory(group=group, role="admin").user
    save_card(group)
    enable_top_up(group, admin)
    barrier = threading.Barrier(50)

    def run() -> None:
        try:
            barrier.wait()
            payments.auto_top_up_run(group_id=group.pk)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(intents(group)) == 1
    assert Payment.objects.filter(kind="auto_top_up").count() == 1
    assert balance(group) == 25_000_000
    assert LedgerEntry.objects.get().kind == "auto_top_up"
    payments.auto_top_up_run(group_id=group.pk)  # above the threshold now: nothing
    assert len(intents(group)) == 1


def test_top_up_decline_emails_admins_once_and_backs_off(
    group, user, save_card, django_capture_on_commit_callbacks
):
    save_card(group, DECLINES)
    enable_top_up(group, user)
    with django_capture_on_commit_callbacks(execute=True):
        first = payments.auto_top_up_run(group_id=group.pk)
    assert first.status == "failed" and balance(group) == 0
    profile = payments.profile_for(group=group)
    assert profile.top_up_failures == 1 and profile.top_up_retry_at is not None
    assert len(mail.outbox) == 1 and "declined" in mail.outbox[0].subject
    assert mail.outbox[0].to == [user.email]
    # Still inside the back-off: no new charge attempt.
    assert payments.auto_top_up_run(group_id=group.pk) is None
    # Back-off passed: retried, declined again, no second e-mail.
    payments.BillingProfile.objects.filter(group=group).update(top_up_retry_at=None)
    with django_capture_on_commit_callbacks(execute=True):
        payments.auto_top_up_run(group_id=group.pk)
    assert len(mail.outbox) == 1
    assert payments.profile_for(group=group).top_up_failures == 2
    assert len(intents(group)) == 2 and not LedgerEntry.objects.exists()


def test_the_decline_webhook_after_the_declined_charge_counts_one_failure(
    group, user, save_card, django_capture_on_commit_callbacks
):
    """Stripe reports a decline twice: the charge call fails, and payment_intent.payment_failed
    arrives. Whichever comes second must not count a second failure (longer back-off)."""
    save_card(group, DECLINES)
    enable_top_up(group, user)
    with django_capture_on_commit_callbacks(execute=True):
        payment = payments.auto_top_up_run(group_id=group.pk)
    assert payment.status == "failed"
    (intent,) = intents(group)
    with django_capture_on_commit_callbacks(execute=True):
        payments.payment_intent_apply(stripe_api.payment_intent_retrieve(intent["id"]))
    profile = payments.profile_for(group=group)
    assert profile.top_up_failures == 1
    assert profile.top_up_retry_at < timezone.now() + timedelta(hours=1, minutes=1)
    assert len(mail.outbox) == 1


def test_top_up_rerun_after_a_crash_does_not_charge_twice(group, user, save_card):
    """The worker died after Stripe charged but before we recorded it (SIGKILL mid-task)."""
    save_card(group)
    enable_top_up(group, user)
    payment = Payment.objects.create(
        public_id=new_public_id(), group=group, kind="auto_top_up", amount_micros=25_000_000
    )
    method = PaymentMethod.objects.get(group=group)
    stripe_api.payment_intent_create(
        customer_id=payments.profile_for(group=group).stripe_customer_id, payment_method_id=method.stripe_id,
        amount_cents=2500, idempotency_key=f"portal-payment-{payment.public_id}",
        metadata={"portal_payment": payment.public_id}, description="t",
    )  # fmt: skip
    payments.auto_top_up_run(group_id=group.pk)  # the re-run
    payments.auto_top_up_run(group_id=group.pk)
    assert len(intents(group)) == 1
    assert balance(group) == 25_000_000
    assert Payment.objects.get(pk=payment.pk).status == "succeeded"


def test_low_balance_alert_once_until_recovered(
    group, user, save_card, django_capture_on_commit_callbacks
):
    from billing.services import ledger_post

    payments.low_balance_alert_configure(group=group, level_micros=5_000_000, actor=user)
    ledger_post(group=group, amount_micros=1_000_000, kind="promotional", reference="p1")
    with django_capture_on_commit_callbacks(execute=True):
        assert payments.low_balance_check(group=group) is True
        assert payments.low_balance_check(group=group) is False
    assert len(mail.outbox) == 1 and "low" in mail.outbox[0].subject
    ledger_post(group=group, amount_micros=10_000_000, kind="promotional", reference="p2")
    payments.low_balance_check(group=group)  # recovered: re-armed
    ledger_post(group=group, amount_micros=-9_000_000, kind="adjustment", reference="a1")
    with django_capture_on_commit_callbacks(execute=True):
        assert payments.low_balance_check(group=group) is True
    assert len(mail.outbox) == 2


def test_members_cannot_buy_or_change_billing(member_client, group, save_card):
    save_card(group)
    base = f"/g/{group.public_id}/billing/"
    assert member_client.post(base + "credits/", {"buy-amount": "20"}).status_code == 403
    assert (
        member_client.post(
            base + "auto-top-up/",
            {"topup-enabled": "on", "topup-threshold": "5", "topup-amount": "20"},
        ).status_code
        == 403
    )
    assert not Payment.objects.exists()
    html = member_client.get(base).content.decode()
    assert "Buy credits" not in html and "Visa •••• 4242" in html


def test_admin_buys_through_the_page(
    admin_client, group, save_card, django_capture_on_commit_callbacks
):
    save_card(group)
    with django_capture_on_commit_callbacks(execute=True):
        queued = admin_client.post(
            f"/g/{group.public_id}/billing/credits/", {"buy-amount": "20.00"}
        )
    # The request only queued the charge; the charge task ran when it committed.
    payment = Payment.objects.get(group=group)
    assert queued.url == f"/g/{group.public_id}/billing/payments/{payment.public_id}/"
    response = admin_client.get(queued.url, follow=True)
    assert "$20.00 of credits added" in response.content.decode()
    assert balance(group) == 20_000_000
    bad = admin_client.post(f"/g/{group.public_id}/billing/credits/", {"buy-amount": "2"})
    assert bad.status_code == 422 and "from $5.00" in bad.content.decode()


def test_top_up_needing_authentication_emails_admins_a_link(
    group, user, save_card, django_capture_on_commit_callbacks
):
    save_card(group, NEEDS_AUTH)
    enable_top_up(group, user)
    with django_capture_on_commit_callbacks(execute=True):
        payment = payments.auto_top_up_run(group_id=group.pk)
    assert payment.status == "requires_action" and balance(group) == 0
    assert len(mail.outbox) == 1
    assert "needs your confirmation" in mail.outbox[0].subject
    assert f"/g/{group.public_id}/billing/?complete={payment.public_id}" in mail.outbox[0].body
    # While it waits for the Admin, no second top-up is started.
    assert payments.auto_top_up_run(group_id=group.pk).pk == payment.pk
    assert len(intents(group)) == 1


def test_group_details_are_copied_to_the_stripe_customer(
    group, user, save_card, django_capture_on_commit_callbacks
):
    from groups.services import api_group_update

    save_card(group)
    with django_capture_on_commit_callbacks(execute=True):
        api_group_update(group=group, actor=user, name="Renamed Inc", tax_id="DE123456789")
    customer = stripe.Customer.retrieve(
        payments.profile_for(group=group).stripe_customer_id, api_key="sk_test_localstripe"
    )
    assert customer.name == "Renamed Inc"
    assert customer.metadata["tax_id"] == "DE123456789"


# --- auto top-up safety (hardening) ------------------------------------------------------------


@pytest.mark.parametrize(
    ("threshold", "amount"),
    [("10000", "5"), ("25", "25"), ("100", "99.99")],
)
def test_top_up_that_cannot_lift_the_balance_over_the_threshold_is_refused(
    admin_client, group, save_card, threshold, amount
):
    from tests.billing.test_money_input import field_has_error
    from tests.test_form_fuzz import snapshot

    save_card(group)
    payments.profile_for(group=group)
    before = snapshot()
    response = admin_client.post(
        f"/g/{group.public_id}/billing/auto-top-up/",
        {"topup-enabled": "on", "topup-threshold": threshold, "topup-amount": amount},
    )
    html = response.content.decode()
    assert response.status_code == 422
    assert field_has_error(html, "topup-amount")
    assert "The amount must be more than the threshold" in html
    assert snapshot() == before  # nothing saved, nothing audited
    assert not payments.profile_for(group=group).auto_top_up_enabled
    assert intents(group) == []


def test_top_up_just_above_the_threshold_is_accepted(admin_client, group, save_card):
    save_card(group)
    response = admin_client.post(
        f"/g/{group.public_id}/billing/auto-top-up/",
        {"topup-enabled": "on", "topup-threshold": "24.99", "topup-amount": "25"},
    )
    assert response.status_code == 302
    profile = payments.profile_for(group=group)
    assert (profile.auto_top_up_threshold_micros, profile.auto_top_up_amount_micros) == (
        24_990_000,
        25_000_000,
    )


def test_the_sixth_automatic_top_up_in_a_day_is_not_attempted(
    group, user, save_card, django_capture_on_commit_callbacks, settings
):
    """Usage spends every top-up at once: the card is charged 5 times in 24 hours, not every
    minute; Admins get one e-mail however often the cap stops a top-up."""
    from audit.models import AuditEvent
    from billing.services import ledger_post

    assert settings.AUTO_TOPUP_DAILY_LIMIT == 5
    save_card(group)
    enable_top_up(group, user)  # under $10, add $25
    for i in range(8):
        spent = balance(group)
        if spent:
            ledger_post(group=group, amount_micros=-spent, kind="usage", reference=f"use-{i}")
        with django_capture_on_commit_callbacks(execute=True):
            payments.auto_top_up_run(group_id=group.pk)
    assert len(intents(group)) == 5
    assert Payment.objects.filter(kind="auto_top_up", status="succeeded").count() == 5
    assert (
        sum(LedgerEntry.objects.filter(kind="auto_top_up").values_list("amount_micros", flat=True))
        == 125_000_000
    )
    assert balance(group) == 0
    capped = [m for m in mail.outbox if "paused" in m.subject]
    assert len(capped) == 1 and capped[0].to == [user.email]
    assert "5 times in the last 24 hours" in capped[0].body
    assert AuditEvent.objects.filter(group=group, action="billing.auto_top_up_capped").count() == 1
    # A day later the oldest top-ups have aged out of the window: top-ups resume.
    Payment.objects.update(created_at=timezone.now() - timedelta(hours=25))
    with django_capture_on_commit_callbacks(execute=True):
        payments.auto_top_up_run(group_id=group.pk)
    assert len(intents(group)) == 6 and balance(group) == 25_000_000

"""Cards, credit purchases and automatic top-ups through Stripe.

Buying credits never waits for Stripe in the web request: `purchase` records a pending Payment
and queues `charge_payment`, which calls `charge`; the billing page shows the Payment's state
until it is settled (succeeded, declined, or waiting for the bank's authentication).

Every entry point (a view, a task or the webhook calls it, never another billing function) runs
in a durable transaction; the rows it locks are locked through `billing.locks`, in its order.

Exactly-once crediting: a successful PaymentIntent is posted to the ledger with the PaymentIntent id
as the entry's reference (`ledger_post` is idempotent on it), so the charge task's result, the
webhook, a replayed webhook and a re-run task all credit once, whichever comes first.

Never two automatic top-ups at once: a partial unique constraint allows one in-flight auto top-up
Payment per group, and the task locks the group's BillingProfile row. A worker killed mid-charge is
re-run (acks_late): the Payment row exists, the PaymentIntent is found again by its metadata (or by
Stripe's idempotency key) and no second charge is made.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.models import AuditEvent
from audit.services import audit_record
from billing import stripe_api
from billing.locks import billing_profile_lock, payment_lock
from billing.models import (
    IN_FLIGHT,
    BillingProfile,
    CreditAccount,
    EntryKind,
    Payment,
    PaymentKind,
    PaymentMethod,
    PaymentStatus,
)
from billing.services import ledger_post
from billing.tasks import (
    charge_payment,
    email_admins_about_dispute,
    email_admins_about_payment,
    email_admins_top_up_capped,
    email_low_balance,
)
from core import faults
from core.money import MICROS_PER_CENT, format_usd
from groups.models import APIGroup, new_public_id

logger = logging.getLogger(__name__)


class BillingError(ValueError):
    """A billing action that cannot be done; the message is for the user, `field` the input
    it is about (if any)."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class PaymentRefused(BillingError):
    """A PaymentIntent that does not match the group it names: never credited."""


def profile_for(*, group: Any) -> BillingProfile:
    """Return the group's billing profile, creating it on first use."""
    profile, _ = BillingProfile.objects.get_or_create(group=group)
    return profile


def _lock_profile(group: Any) -> BillingProfile:
    """Lock the group's billing profile row (creating it first if needed)."""
    profile_for(group=group)
    locked = billing_profile_lock(group=group)
    assert locked is not None  # created just above, and profiles are never deleted
    return locked


def _customer_fields(group: APIGroup) -> dict[str, Any]:
    address = {
        "line1": group.address_line1,
        "line2": group.address_line2,
        "city": group.city,
        "state": group.state,
        "postal_code": group.postal_code,
        "country": str(group.country or ""),
    }
    return {
        "name": group.name,
        "metadata": {"portal_group": group.public_id, "tax_id": group.tax_id},
        "address": {k: v for k, v in address.items() if v} or None,
    }


def customer_ensure(*, group: APIGroup) -> str:
    """Return the group's Stripe customer id, creating the customer once."""
    profile = profile_for(group=group)
    if profile.stripe_customer_id:
        return profile.stripe_customer_id
    with transaction.atomic():
        profile = _lock_profile(group)
        if not profile.stripe_customer_id:
            customer = stripe_api.customer_create(**_customer_fields(group))
            profile.stripe_customer_id = customer["id"]
            profile.save(update_fields=["stripe_customer_id", "updated_at"])
    return profile.stripe_customer_id


def customer_sync(*, group: APIGroup) -> None:
    """Copy the group's name, address and tax ID to its Stripe customer (if it has one)."""
    profile = BillingProfile.objects.filter(group=group).first()
    if profile and profile.stripe_customer_id:
        stripe_api.customer_update(profile.stripe_customer_id, **_customer_fields(group))


# --- cards -------------------------------------------------------------------------------------


def card_setup_start(*, group: APIGroup) -> str:
    """Return the client secret of a SetupIntent for saving a card (nothing is charged)."""
    return stripe_api.setup_intent_create(customer_ensure(group=group))["client_secret"]


def card_setup_complete(
    *, group: APIGroup, setup_intent_id: str, actor: Any = None, request: Any = None
) -> PaymentMethod:
    """Record the card of a succeeded SetupIntent of this group's customer; idempotent."""
    customer_id = customer_ensure(group=group)
    intent = stripe_api.setup_intent_retrieve(setup_intent_id)
    if intent.get("customer") != customer_id:
        raise BillingError("That card setup does not belong to this API group.")
    if intent.get("status") != "succeeded":
        error = (intent.get("last_setup_error") or {}).get("message")
        raise BillingError(error or "The card could not be saved. Please try again.")
    pm_id = intent["payment_method"]
    pm_id = pm_id["id"] if isinstance(pm_id, dict) else pm_id
    return _mirror_card(
        group=group, customer_id=customer_id, pm_id=pm_id, actor=actor, request=request
    )


def _mirror_card(
    *, group: APIGroup, customer_id: str, pm_id: str, actor: Any, request: Any
) -> PaymentMethod:
    pm = stripe_api.payment_method_retrieve(pm_id)
    if not pm.get("customer"):  # real Stripe attaches on SetupIntent success; localstripe doesn't
        pm = stripe_api.payment_method_attach(pm_id, customer_id)
    elif pm["customer"] != customer_id:
        raise BillingError("That card belongs to another customer.")
    card = pm["card"]
    with transaction.atomic():
        _lock_profile(group)
        existing = PaymentMethod.objects.filter(stripe_id=pm_id).first()
        if existing is not None:
            return existing
        first = not PaymentMethod.objects.filter(group=group).exists()
        method = PaymentMethod.objects.create(
            group=group, stripe_id=pm_id, brand=card.get("brand", "card"), last4=card["last4"],
            exp_month=card["exp_month"], exp_year=card["exp_year"], is_default=first,
        )  # fmt: skip
        audit_record(
            group=group, actor=actor, action="billing.card_add", target=method, request=request
        )
    if first:
        stripe_api.customer_set_default_card(customer_id, pm_id)
    return method


@transaction.atomic(durable=True)
def card_set_default(*, method: PaymentMethod, actor: Any, request: Any = None) -> None:
    _lock_profile(method.group)
    PaymentMethod.objects.filter(group=method.group, is_default=True).update(is_default=False)
    PaymentMethod.objects.filter(pk=method.pk).update(is_default=True)
    audit_record(
        group=method.group,
        actor=actor,
        action="billing.card_default",
        target=method,
        request=request,
    )
    customer_id = profile_for(group=method.group).stripe_customer_id
    if customer_id:
        transaction.on_commit(
            lambda: stripe_api.customer_set_default_card(customer_id, method.stripe_id)
        )


def card_remove(*, method: PaymentMethod, actor: Any, request: Any = None) -> None:
    try:
        stripe_api.payment_method_detach(method.stripe_id)
    except stripe_api.StripeFailure as exc:
        if "not attached" not in exc.user_message.lower():
            raise BillingError(exc.user_message) from exc
    with transaction.atomic(durable=True):
        _lock_profile(method.group)
        was_default = method.is_default
        PaymentMethod.objects.filter(pk=method.pk).delete()
        audit_record(
            group=method.group,
            actor=actor,
            action="billing.card_remove",
            target_repr=str(method),
            request=request,
        )
        successor = PaymentMethod.objects.filter(group=method.group).order_by("-created_at").first()
        if was_default and successor is not None:
            PaymentMethod.objects.filter(pk=successor.pk).update(is_default=True)
        if was_default and successor is None:
            BillingProfile.objects.filter(group=method.group).update(auto_top_up_enabled=False)


def card_forget(*, stripe_id: str) -> None:
    """A card was detached at Stripe (webhook): drop our copy."""
    method = PaymentMethod.objects.filter(stripe_id=stripe_id).select_related("group").first()
    if method is not None:
        with transaction.atomic():
            PaymentMethod.objects.filter(pk=method.pk).delete()
            successor = PaymentMethod.objects.filter(group=method.group).first()
            if method.is_default and successor is not None:
                PaymentMethod.objects.filter(pk=successor.pk).update(is_default=True)


# --- purchases ---------------------------------------------------------------------------------


def validate_amount(amount_micros: int, *, field: str = "amount") -> None:
    low, high = settings.BILLING_MIN_PURCHASE * 1_000_000, settings.BILLING_MAX_PURCHASE * 1_000_000
    if amount_micros % MICROS_PER_CENT:
        raise BillingError("Amounts are in whole cents.", field=field)
    if not low <= amount_micros <= high:
        raise BillingError(
            f"Choose an amount from {format_usd(low)} to {format_usd(high)}.", field=field
        )


@transaction.atomic(durable=True)
def purchase(*, group: APIGroup, amount_micros: int, actor: Any, request: Any = None) -> Payment:
    """Buy credits with the default card, off-session: record the Payment (pending) and queue
    its charge. The billing page follows the Payment until the charge has settled it."""
    validate_amount(amount_micros)
    if not PaymentMethod.objects.filter(group=group, is_default=True).exists():
        raise BillingError("Add a card first.")
    payment = Payment.objects.create(
        public_id=new_public_id(), group=group, kind=PaymentKind.PURCHASE, amount_micros=amount_micros,
        created_by=actor if getattr(actor, "pk", None) else None,
    )  # fmt: skip
    audit_record(
        group=group,
        actor=actor,
        action="billing.purchase",
        target_repr=format_usd(amount_micros),
        request=request,
        data={"payment": payment.public_id},
    )
    charge_payment.delay_on_commit(payment.pk)
    return payment


def charge(*, payment: Payment) -> Payment:
    """Charge a Payment's amount once; safe to call again, or concurrently, for the same Payment.

    The Payment row stays locked (SKIP LOCKED for everyone else) while Stripe is called, so two
    workers never charge it at once; if a worker dies, its connection and lock go with it and a
    re-run finds the PaymentIntent it may have created by its metadata.
    """
    with transaction.atomic(durable=True):
        locked = payment_lock(pk=payment.pk, skip_locked=True)
        if locked is None:
            return payment  # another worker is charging it right now
        if locked.status == PaymentStatus.REQUIRES_ACTION and locked.stripe_payment_intent_id:
            return payment_intent_apply(
                stripe_api.payment_intent_retrieve(locked.stripe_payment_intent_id)
            )
        if locked.status != PaymentStatus.CREATING:
            return locked
        group = locked.group
        customer_id = customer_ensure(group=group)
        method = PaymentMethod.objects.filter(group=group, is_default=True).first()
        if method is None:
            return _fail(locked, "No card on file.")
        intent = next(
            (
                pi
                for pi in stripe_api.payment_intents_for_customer(customer_id)
                if (pi.get("metadata") or {}).get("portal_payment") == locked.public_id
            ),
            None,
        )
        if intent is None:
            try:
                intent = stripe_api.payment_intent_create(
                    customer_id=customer_id,
                    payment_method_id=method.stripe_id,
                    amount_cents=locked.amount_micros // MICROS_PER_CENT,
                    idempotency_key=f"portal-payment-{locked.public_id}",
                    metadata={
                        "portal_payment": locked.public_id,
                        "portal_group": group.public_id,
                        "kind": locked.kind,
                    },
                    description=f"{settings.PORTAL_NAME} credits ({locked.get_kind_display().lower()})",
                )
            except stripe_api.StripeFailure as exc:
                return _fail(locked, exc.user_message)
            faults.pause("after_charge")  # reliability tests kill the worker here
        return payment_intent_apply(intent)


def _fail(payment: Payment, message: str) -> Payment:
    with transaction.atomic():
        payment = _locked(payment)
        if payment.status in (PaymentStatus.SUCCEEDED, PaymentStatus.FAILED):
            # Settled already: Stripe reports a decline twice (the failed charge call, then the
            # payment_intent.payment_failed webhook) and it must count once.
            return payment
        payment.status = PaymentStatus.FAILED
        payment.error_message = message[:255]
        payment.save(update_fields=["status", "error_message", "updated_at"])
    if payment.kind == PaymentKind.AUTO_TOP_UP:
        _top_up_declined(payment)
    return payment


def payment_intent_apply(intent: dict) -> Payment:
    """Bring our Payment (and the ledger) in line with the PaymentIntent's current state."""
    public_id = (intent.get("metadata") or {}).get("portal_payment")
    payment = (
        Payment.objects.filter(public_id=public_id).select_related("group").first()
        if public_id
        else None
    )
    if payment is None:
        payment = (
            Payment.objects.filter(stripe_payment_intent_id=intent["id"])
            .select_related("group")
            .first()
        )
    if payment is None:
        raise BillingError(f"No payment of ours for {intent['id']}.")
    _check_intent_belongs(intent, payment)
    status = intent.get("status")
    with transaction.atomic():
        payment = _locked(payment)
        if payment.stripe_payment_intent_id != intent["id"]:
            payment.stripe_payment_intent_id = intent["id"]
            payment.save(update_fields=["stripe_payment_intent_id", "updated_at"])
        if status == "succeeded":
            received = int(intent.get("amount_received") or intent["amount"]) * MICROS_PER_CENT
            ledger_post(
                group=payment.group,
                amount_micros=received,
                kind=EntryKind.AUTO_TOP_UP
                if payment.kind == PaymentKind.AUTO_TOP_UP
                else EntryKind.PURCHASE,
                reference=intent["id"],
                description=f"{payment.get_kind_display()} by card",
                actor=payment.created_by,
            )
            if payment.status != PaymentStatus.SUCCEEDED:
                payment.status = PaymentStatus.SUCCEEDED
                payment.error_message = ""
                payment.save(update_fields=["status", "error_message", "updated_at"])
                if payment.kind == PaymentKind.AUTO_TOP_UP:
                    BillingProfile.objects.filter(group=payment.group).update(
                        top_up_failures=0, top_up_failure_message="", top_up_retry_at=None
                    )
            return payment
        if payment.status == PaymentStatus.SUCCEEDED:
            return payment  # an out-of-order older event: success stands
        if status == "requires_action":
            first_time = payment.status != PaymentStatus.REQUIRES_ACTION
            payment.status = PaymentStatus.REQUIRES_ACTION
            payment.save(update_fields=["status", "updated_at"])
            if first_time and payment.kind == PaymentKind.AUTO_TOP_UP:
                email_admins_about_payment.delay_on_commit("needs_action", payment.pk)
            return payment
    if status in ("requires_payment_method", "canceled"):
        message = (
            (intent.get("last_payment_error") or {}).get("message")
        ) or "The card was declined."
        return _fail(payment, message)
    return payment


def _locked(payment: Payment) -> Payment:
    locked = payment_lock(pk=payment.pk)
    assert locked is not None  # payments are never deleted
    return locked


def payment_confirm(*, payment: Payment) -> Payment:
    """Settle a Payment the Admin has just authenticated on-session (3-D Secure) from Stripe's
    PaymentIntent as it is now; the webhook may have settled it already (then nothing changes)."""
    if not payment.stripe_payment_intent_id:
        return payment
    intent = stripe_api.payment_intent_retrieve(payment.stripe_payment_intent_id)
    with transaction.atomic(durable=True):
        return payment_intent_apply(intent)


def payment_client_secret(*, payment: Payment) -> str | None:
    """The client secret Stripe.js needs to authenticate the payment in the browser."""
    intent = stripe_api.payment_intent_retrieve(payment.stripe_payment_intent_id or "")
    return intent.get("client_secret")


def _check_intent_belongs(intent: dict, payment: Payment) -> None:
    """Refuse a PaymentIntent whose customer is not the Stripe customer of the group it names.

    Our PaymentIntents name the Payment and the group in their metadata; a PaymentIntent made
    elsewhere (the Stripe dashboard, another integration) could name our Payment while another
    group's, or nobody's, card paid it. Crediting it would move money between groups.
    """
    customer = intent.get("customer")
    customer = customer.get("id") if isinstance(customer, dict) else customer
    named_group = (intent.get("metadata") or {}).get("portal_group")
    ours = (
        BillingProfile.objects.filter(group_id=payment.group_id)
        .values_list("stripe_customer_id", flat=True)
        .first()
    )
    problem = ""
    if named_group and named_group != payment.group.public_id:
        problem = (
            f"its metadata names group {named_group}, the payment is {payment.group.public_id}'s"
        )
    elif not ours or customer != ours:
        problem = f"its customer {customer} is not the customer of group {payment.group.public_id}"
    if problem:
        logger.error("PaymentIntent %s refused: %s", intent.get("id"), problem)
        raise PaymentRefused(f"PaymentIntent {intent.get('id')} refused: {problem}.")


# --- disputes (chargebacks) --------------------------------------------------------------------


@transaction.atomic
def dispute_apply(*, payment: Payment, dispute: dict) -> None:
    """Book a card dispute of a payment: debit the disputed credits, give them back if won.

    Idempotent per dispute (the ledger references `dispute:<id>` and `dispute:<id>:won`), and in
    any order: a dispute reported closed and won before its opening is booked as debit and
    credit back (net zero), so the late opening event changes nothing. Inquiries
    (`warning_*`), where no money is taken, book nothing. A balance that goes to $0 or below
    blocks the group's keys as any spent balance does (the gateway reloads it after commit).
    """
    dispute_id = str(dispute["id"])
    status = str(dispute.get("status") or "")
    if status.startswith("warning_"):
        return
    # One event of a payment's disputes at a time (the "lost" note is checked, then written).
    payment = _locked(payment)
    group = payment.group
    # Never more than the payment credited (Stripe's amount is in cents, like the payment's).
    amount = min(int(dispute.get("amount") or 0) * MICROS_PER_CENT, payment.amount_micros)
    if amount <= 0:
        logger.error("dispute %s has no amount: nothing booked", dispute_id)
        return
    debit = ledger_post(
        group=group, amount_micros=-amount, kind=EntryKind.ADJUSTMENT,
        reference=f"dispute:{dispute_id}", description="Card payment disputed",
    )  # fmt: skip
    outcomes = []
    if debit.created:
        outcomes.append("opened")
    if status == "won":
        back = ledger_post(
            group=group, amount_micros=amount, kind=EntryKind.ADJUSTMENT,
            reference=f"dispute:{dispute_id}:won", description="Dispute won: credits restored",
        )  # fmt: skip
        if back.created:
            outcomes.append("won")
    elif (
        status == "lost"
        and not AuditEvent.objects.filter(
            group=group, action="billing.dispute_lost", data__dispute=dispute_id
        ).exists()
    ):
        outcomes.append("lost")
    for outcome in outcomes:
        audit_record(
            group=group, actor=None, action=f"billing.dispute_{outcome}",
            target_repr=f"dispute {dispute_id}"[:255],
            data={"dispute": dispute_id, "payment": payment.public_id, "amount_micros": amount},
        )  # fmt: skip
        logger.warning("dispute %s of payment %s: %s", dispute_id, payment.public_id, outcome)
        email_admins_about_dispute.delay_on_commit(payment.pk, dispute_id, amount, outcome)


# --- automatic top-up --------------------------------------------------------------------------


def auto_top_up_due(*, group: APIGroup, now: Any = None) -> bool:
    profile = BillingProfile.objects.filter(group=group).first()
    if profile is None or not profile.auto_top_up_enabled:
        return False
    balance = (
        CreditAccount.objects.filter(group=group).values_list("balance_micros", flat=True).first()
        or 0
    )
    if balance >= profile.auto_top_up_threshold_micros:
        return False
    return not (profile.top_up_retry_at and profile.top_up_retry_at > (now or timezone.now()))


def auto_top_up_run(*, group_id: int) -> Payment | None:
    """Charge the configured amount if the balance is under the threshold; one at a time."""
    group = APIGroup.objects.get(pk=group_id)
    with transaction.atomic(durable=True):
        profile = billing_profile_lock(group=group)
        in_flight = Payment.objects.filter(
            group=group, kind=PaymentKind.AUTO_TOP_UP, status__in=IN_FLIGHT
        ).first()
        if in_flight is None:
            if profile is None or not auto_top_up_due(group=group):
                return None
            if _top_up_cap_reached(group):
                return None
            try:
                with transaction.atomic():
                    in_flight = Payment.objects.create(
                        public_id=new_public_id(), group=group, kind=PaymentKind.AUTO_TOP_UP,
                        amount_micros=profile.auto_top_up_amount_micros,
                    )  # fmt: skip
            except IntegrityError:
                return None  # another run holds the in-flight top-up
        elif in_flight.status == PaymentStatus.REQUIRES_ACTION:
            return in_flight  # waiting for an Admin to authenticate it
    return charge(payment=in_flight)


def _top_up_cap_reached(group: APIGroup) -> bool:
    """Whether the group had AUTO_TOPUP_DAILY_LIMIT automatic top-ups in the last 24 hours.

    Called with the billing profile locked. The first time in a day that the cap stops a top-up
    it is audited and Admins are e-mailed (the audit event is the note that they were told).
    """
    since = timezone.now() - timedelta(days=1)
    made = Payment.objects.filter(
        group=group, kind=PaymentKind.AUTO_TOP_UP, created_at__gte=since
    ).count()
    limit = settings.AUTO_TOPUP_DAILY_LIMIT
    if made < limit:
        return False
    told = AuditEvent.objects.filter(
        group=group, action="billing.auto_top_up_capped", created_at__gte=since
    ).exists()
    if not told:
        logger.warning("auto top-up of group %s stopped by the daily cap (%s)", group.pk, made)
        audit_record(
            group=group, actor=None, action="billing.auto_top_up_capped",
            target_repr="auto top-up", data={"top_ups_in_24h": made, "limit": limit},
        )  # fmt: skip
        email_admins_top_up_capped.delay_on_commit(group.pk, made)
    return True


def _top_up_declined(payment: Payment) -> None:
    with transaction.atomic():
        profile = _lock_profile(payment.group)
        profile.top_up_failures += 1
        hours = settings.AUTO_TOP_UP_RETRY_HOURS
        delay = hours[min(profile.top_up_failures, len(hours)) - 1]
        profile.top_up_retry_at = timezone.now() + timedelta(hours=delay)
        profile.top_up_failure_message = payment.error_message
        profile.save(
            update_fields=[
                "top_up_failures",
                "top_up_retry_at",
                "top_up_failure_message",
                "updated_at",
            ]
        )
        if profile.top_up_failures == 1:  # once per run of declines
            email_admins_about_payment.delay_on_commit("declined", payment.pk)


@transaction.atomic(durable=True)
def auto_top_up_configure(
    *,
    group: APIGroup,
    enabled: bool,
    threshold_micros: int,
    amount_micros: int,
    actor: Any,
    request: Any = None,
) -> BillingProfile:
    if threshold_micros < 0:
        raise BillingError("The threshold can't be negative.", field="threshold")
    validate_amount(amount_micros)
    if amount_micros <= threshold_micros:
        # A top-up starts when the balance is under the threshold (auto_top_up_due). From a
        # balance of $0 (keys blocked) it must end above it, or the next check charges again.
        raise BillingError(
            f"The amount must be more than the threshold ({format_usd(threshold_micros)}), so "
            "that one top-up lifts the balance back above it; otherwise the card would be "
            "charged again and again.",
            field="amount",
        )
    if enabled and not PaymentMethod.objects.filter(group=group).exists():
        raise BillingError("Add a card before turning on auto top-up.")
    profile = _lock_profile(group)
    profile.auto_top_up_enabled = enabled
    profile.auto_top_up_threshold_micros = threshold_micros
    profile.auto_top_up_amount_micros = amount_micros
    profile.top_up_retry_at = None  # settings changed (e.g. card fixed): try again now
    profile.save(
        update_fields=[
            "auto_top_up_enabled",
            "auto_top_up_threshold_micros",
            "auto_top_up_amount_micros",
            "top_up_retry_at",
            "updated_at",
        ]
    )
    audit_record(
        group=group, actor=actor, action="billing.auto_top_up", target_repr="auto top-up", request=request,
        data={"enabled": enabled, "threshold_micros": threshold_micros, "amount_micros": amount_micros},
    )  # fmt: skip
    return profile


@transaction.atomic(durable=True)
def low_balance_alert_configure(
    *, group: APIGroup, level_micros: int | None, actor: Any, request: Any = None
) -> None:
    if level_micros is not None and level_micros <= 0:
        raise BillingError(
            "The alert level must be more than $0, or empty to turn it off.", field="level"
        )
    profile = _lock_profile(group)
    profile.low_balance_alert_micros = level_micros
    profile.low_balance_alerted = False
    profile.save(update_fields=["low_balance_alert_micros", "low_balance_alerted", "updated_at"])
    audit_record(
        group=group,
        actor=actor,
        action="billing.low_balance_alert",
        target_repr="low-balance alert",
        request=request,
        data={"level_micros": level_micros},
    )


def low_balance_check(*, group: APIGroup) -> bool:
    """E-mail Admins once when the balance is under their level; re-arm once it has recovered."""
    with transaction.atomic(durable=True):
        profile = billing_profile_lock(group=group)
        if profile is None or profile.low_balance_alert_micros is None:
            return False
        balance = CreditAccount.objects.get(group=group).balance_micros
        if balance < profile.low_balance_alert_micros and not profile.low_balance_alerted:
            profile.low_balance_alerted = True
            profile.save(update_fields=["low_balance_alerted", "updated_at"])
            email_low_balance.delay_on_commit(group.pk, balance)
            return True
        if balance >= profile.low_balance_alert_micros and profile.low_balance_alerted:
            profile.low_balance_alerted = False
            profile.save(update_fields=["low_balance_alerted", "updated_at"])
    return False

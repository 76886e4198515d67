"""Stripe webhooks: verified, each event id handled once, handlers re-read the object."""

from __future__ import annotations

import logging

from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from billing import payments, stripe_api
from billing.models import BillingProfile, EntryKind, Payment, StripeEvent
from billing.services import LedgerError, ledger_post
from core.money import MICROS_PER_CENT

logger = logging.getLogger(__name__)


def _object_id(event: dict) -> str:
    obj = event["data"]["object"]
    return obj["id"] if isinstance(obj, dict) else str(obj)


def handle_payment_intent(event: dict) -> None:
    intent = stripe_api.payment_intent_retrieve(_object_id(event))
    if (intent.get("metadata") or {}).get("portal_payment") or Payment.objects.filter(
        stripe_payment_intent_id=intent["id"]
    ).exists():
        payments.payment_intent_apply(intent)


def handle_setup_intent(event: dict) -> None:
    intent = stripe_api.setup_intent_retrieve(_object_id(event))
    profile = (
        BillingProfile.objects.filter(stripe_customer_id=intent.get("customer") or "-")
        .select_related("group")
        .first()
    )
    if profile is not None and intent.get("status") == "succeeded":
        payments.card_setup_complete(group=profile.group, setup_intent_id=intent["id"])


def handle_payment_method_detached(event: dict) -> None:
    payments.card_forget(stripe_id=_object_id(event))


def handle_charge_refunded(event: dict) -> None:
    charge = stripe_api.charge_retrieve(_object_id(event))
    pi = charge.get("payment_intent")
    pi = pi["id"] if isinstance(pi, dict) else pi
    payment = Payment.objects.filter(stripe_payment_intent_id=pi).select_related("group").first()
    if payment is None:
        return
    refunds = (charge.get("refunds") or {}).get("data") or []
    if not refunds and charge.get("amount_refunded"):
        # No refund objects listed: book the refunded total against the charge itself.
        refunds = [
            {
                "id": f"{charge['id']}:refunded",
                "amount": charge["amount_refunded"],
                "status": "succeeded",
            }
        ]
    for refund in refunds:
        if refund.get("status", "succeeded") == "succeeded":
            ledger_post(
                group=payment.group,
                amount_micros=-int(refund["amount"]) * MICROS_PER_CENT,
                kind=EntryKind.REFUND,
                reference=refund["id"],
                description="Refund to card",
            )


def handle_dispute(event: dict) -> None:
    # The dispute as the signed event carries it (each event is a moment of the dispute:
    # opened, closed won or lost); its charge is re-read to find our payment.
    dispute = event["data"]["object"]
    charge_id = dispute.get("charge")
    charge_id = charge_id["id"] if isinstance(charge_id, dict) else charge_id
    charge = stripe_api.charge_retrieve(str(charge_id))
    pi = charge.get("payment_intent")
    pi = pi["id"] if isinstance(pi, dict) else pi
    payment = Payment.objects.filter(stripe_payment_intent_id=pi).select_related("group").first()
    if payment is None:
        logger.warning("dispute %s: no payment of ours for charge %s", dispute.get("id"), charge_id)
        return
    customer = charge.get("customer")
    customer = customer["id"] if isinstance(customer, dict) else customer
    if customer and customer != payments.profile_for(group=payment.group).stripe_customer_id:
        logger.error(
            "dispute %s: charge %s is not group %s's",
            dispute["id"],
            charge_id,
            payment.group.public_id,
        )
        raise payments.PaymentRefused(f"Charge {charge_id} is not the group's.")
    payments.dispute_apply(payment=payment, dispute=dispute)


HANDLERS = {
    "payment_intent.succeeded": handle_payment_intent,
    "payment_intent.payment_failed": handle_payment_intent,
    "payment_intent.requires_action": handle_payment_intent,
    "payment_intent.canceled": handle_payment_intent,
    "setup_intent.succeeded": handle_setup_intent,
    "payment_method.detached": handle_payment_method_detached,
    "charge.refunded": handle_charge_refunded,
    "charge.dispute.created": handle_dispute,
    "charge.dispute.closed": handle_dispute,
}


@csrf_exempt
@require_POST
def stripe_webhook(request: HttpRequest) -> HttpResponse:
    signature = request.headers.get("Stripe-Signature", "")
    try:
        event = stripe_api.webhook_event(request.body, signature)
    except ValueError:
        return JsonResponse({"error": "invalid signature"}, status=400)
    handler = HANDLERS.get(event.get("type", ""))
    if handler is None:
        return JsonResponse({"received": True, "handled": False})
    try:
        with transaction.atomic(durable=True):  # the webhook is an entry point (billing.locks)
            if not _event_record(event):
                return JsonResponse({"received": True, "duplicate": True})
            try:
                with transaction.atomic():
                    handler(event)
            except payments.PaymentRefused as exc:
                # Not ours to credit, now or on a retry: keep the event (a replay is a duplicate).
                logger.error("webhook %s refused: %s", event.get("id"), exc)
                return JsonResponse({"received": True, "refused": True})
    except IntegrityError:
        # Only the event id's uniqueness means "done already" (_event_record); anything else is
        # a failure to process: roll back, log, and let Stripe deliver the event again.
        logger.exception("webhook %s failed: integrity error", event.get("id"))
        return JsonResponse({"error": "could not process"}, status=500)
    except (stripe_api.StripeFailure, payments.BillingError, LedgerError) as exc:
        logger.warning("webhook %s not handled: %s", event.get("id"), exc)
        return JsonResponse({"error": "could not process"}, status=500)  # Stripe retries later
    return JsonResponse({"received": True})


def _event_record(event: dict) -> bool:
    """Record the event id; False if it is recorded already (a replay, or a concurrent delivery
    that committed first). Any other integrity error is raised."""
    try:
        with transaction.atomic():
            StripeEvent.objects.create(event_id=event["id"], type=event["type"])
    except IntegrityError:
        if StripeEvent.objects.filter(event_id=event["id"]).exists():
            return False
        raise
    return True

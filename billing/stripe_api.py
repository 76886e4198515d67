"""The only module that talks to Stripe. Real Stripe in production; localstripe in development.

Every call reads the key and API base from settings at call time, so tests can point it at their
own localstripe. Objects are returned as plain dicts (`to_dict()`), never SDK objects.
"""

from __future__ import annotations

from typing import Any

import stripe
from django.conf import settings


class StripeFailure(Exception):
    """Stripe refused or could not be reached; `user_message` is safe to show."""

    def __init__(self, user_message: str, *, code: str = "", declined: bool = False) -> None:
        super().__init__(user_message)
        self.user_message = user_message
        self.code = code
        self.declined = declined


def _opts() -> dict[str, Any]:
    stripe.api_base = settings.STRIPE_API_BASE or "https://api.stripe.com"
    stripe.max_network_retries = 2
    return {"api_key": settings.STRIPE_SECRET_KEY}


def _call(fn: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    try:
        result = fn(*args, **_opts(), **kwargs)
    except stripe.CardError as exc:
        raise StripeFailure(
            exc.user_message or "Your card was declined.", code=exc.code or "", declined=True
        ) from exc
    except stripe.StripeError as exc:
        raise StripeFailure(
            exc.user_message or "The payment provider could not complete this request.",
            code=getattr(exc, "code", "") or "",
        ) from exc
    return result.to_dict() if hasattr(result, "to_dict") else result


def customer_create(*, name: str, metadata: dict[str, str], address: dict[str, str] | None) -> dict:
    params: dict[str, Any] = {"name": name, "metadata": metadata}
    if address:
        params["address"] = address
    return _call(stripe.Customer.create, **params)


def customer_update(
    customer_id: str, *, name: str, metadata: dict[str, str], address: dict[str, str] | None
) -> dict:
    params: dict[str, Any] = {"name": name, "metadata": metadata}
    if address:
        params["address"] = address
    return _call(stripe.Customer.modify, customer_id, **params)


def customer_set_default_card(customer_id: str, payment_method_id: str) -> dict:
    return _call(
        stripe.Customer.modify,
        customer_id,
        invoice_settings={"default_payment_method": payment_method_id},
    )


def setup_intent_create(customer_id: str) -> dict:
    return _call(
        stripe.SetupIntent.create,
        customer=customer_id,
        usage="off_session",
        payment_method_types=["card"],
    )


def setup_intent_retrieve(setup_intent_id: str) -> dict:
    return _call(stripe.SetupIntent.retrieve, setup_intent_id)


def payment_method_retrieve(payment_method_id: str) -> dict:
    return _call(stripe.PaymentMethod.retrieve, payment_method_id)


def payment_method_attach(payment_method_id: str, customer_id: str) -> dict:
    return _call(stripe.PaymentMethod.attach, payment_method_id, customer=customer_id)


def payment_method_detach(payment_method_id: str) -> dict:
    return _call(stripe.PaymentMethod.detach, payment_method_id)


def payment_intent_create(
    *,
    customer_id: str,
    payment_method_id: str,
    amount_cents: int,
    idempotency_key: str,
    metadata: dict[str, str],
    description: str,
) -> dict:
    """Charge a saved card off-session. Raises StripeFailure(declined=True) on a decline."""
    return _call(
        stripe.PaymentIntent.create,
        amount=amount_cents,
        currency="usd",
        customer=customer_id,
        payment_method=payment_method_id,
        off_session=True,
        confirm=True,
        metadata={**metadata, "description": description},  # localstripe has no description
        idempotency_key=idempotency_key,
    )


def payment_intent_retrieve(payment_intent_id: str) -> dict:
    return _call(stripe.PaymentIntent.retrieve, payment_intent_id)


def payment_intents_for_customer(customer_id: str, limit: int = 20) -> list[dict]:
    """The customer's most recent PaymentIntents."""
    try:
        return _call(stripe.PaymentIntent.list, customer=customer_id, limit=limit).get("data", [])
    except StripeFailure as exc:
        if "customer" not in exc.user_message.lower():
            raise
    # localstripe cannot filter by customer: filter here.
    intents = _call(stripe.PaymentIntent.list, limit=100).get("data", [])
    return [pi for pi in intents if pi.get("customer") == customer_id][:limit]


def charge_retrieve(charge_id: str) -> dict:
    return _call(stripe.Charge.retrieve, charge_id, expand=["refunds"])


def webhook_event(payload: bytes, signature: str) -> dict:
    """Verify a webhook's signature (300 s tolerance) and return the event; ValueError if bad."""
    try:
        event = stripe.Webhook.construct_event(
            payload, signature, settings.STRIPE_WEBHOOK_SECRET, tolerance=300
        )
    except (stripe.SignatureVerificationError, ValueError) as exc:
        raise ValueError(str(exc)) from exc
    return event.to_dict() if hasattr(event, "to_dict") else dict(event)


# --- Invoices (Stripe's hosted copy of our invoices; not available on localstripe) ---------


def invoice_create(
    *, customer_id: str, idempotency_key: str, metadata: dict[str, str], description: str
) -> dict:
    """A draft invoice that takes only the items we attach to it, paid from credits."""
    return _call(
        stripe.Invoice.create,
        customer=customer_id,
        collection_method="send_invoice",
        days_until_due=0,
        auto_advance=False,
        pending_invoice_items_behavior="exclude",
        currency="usd",
        description=description,
        metadata=metadata,
        idempotency_key=idempotency_key,
    )


def invoice_item_create(
    *,
    customer_id: str,
    invoice_id: str,
    amount_cents: int,
    description: str,
    idempotency_key: str,
    metadata: dict[str, str],
) -> dict:
    return _call(
        stripe.InvoiceItem.create,
        customer=customer_id,
        invoice=invoice_id,
        amount=amount_cents,
        currency="usd",
        description=description,
        metadata=metadata,
        idempotency_key=idempotency_key,
    )


def invoice_retrieve(invoice_id: str) -> dict:
    return _call(stripe.Invoice.retrieve, invoice_id)


def invoice_finalize(invoice_id: str, *, idempotency_key: str) -> dict:
    return _call(
        stripe.Invoice.finalize_invoice,
        invoice_id,
        auto_advance=False,
        idempotency_key=idempotency_key,
    )


def invoice_pay_out_of_band(invoice_id: str, *, idempotency_key: str) -> dict:
    """Mark the invoice paid: the customer paid with prepaid credits, not through Stripe."""
    return _call(
        stripe.Invoice.pay, invoice_id, paid_out_of_band=True, idempotency_key=idempotency_key
    )

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.request

import pytest
import stripe

from billing import payments
from billing.models import PaymentMethod


def card(number: str) -> dict:
    return {"number": number, "exp_month": 12, "exp_year": 2030, "cvc": "123"}


@pytest.fixture
def save_card(localstripe):  # type: ignore[no-untyped-def]
    """Save a card the way the browser does: SetupIntent confirmed with the card, then recorded."""

    def save(group, number: str = "4242424242424242", actor=None) -> PaymentMethod:  # type: ignore[no-untyped-def]
        secret = payments.card_setup_start(group=group)
        setup_intent_id = secret.split("_secret_")[0]
        stripe.api_base = localstripe.base_url
        pm = stripe.PaymentMethod.create(
            type="card", card=card(number), api_key="sk_test_localstripe"
        )
        intent = stripe.SetupIntent.confirm(
            setup_intent_id, payment_method=pm.id, api_key="sk_test_localstripe"
        )
        if (
            intent.status == "requires_action"
        ):  # 3-D Secure: what Stripe.js does when the user confirms
            body = json.dumps(
                {"key": "pk_test_localstripe", "use_stripe_sdk": True, "client_secret": secret}
            )
            request = urllib.request.Request(
                f"{localstripe.base_url}/v1/setup_intents/{setup_intent_id}/confirm",
                data=body.encode(),
                method="POST",
            )
            urllib.request.urlopen(request).read()
        return payments.card_setup_complete(
            group=group, setup_intent_id=setup_intent_id, actor=actor
        )

    return save


@pytest.fixture
def post_webhook(client, settings):  # type: ignore[no-untyped-def]
    """POST a Stripe event to our webhook, signed like Stripe signs it."""

    def post(event_type: str, obj_id: str, event_id: str | None = None, secret: str | None = None):  # type: ignore[no-untyped-def]
        payload = json.dumps(
            {
                "id": event_id or f"evt_{time.time_ns()}",
                "object": "event",
                "type": event_type,
                "data": {"object": {"id": obj_id}},
            }
        )
        stamp = int(time.time())
        key = (secret or settings.STRIPE_WEBHOOK_SECRET).encode()
        signature = hmac.new(key, f"{stamp}.{payload}".encode(), hashlib.sha256).hexdigest()
        return client.post(
            "/stripe/webhook/",
            payload,
            content_type="application/json",
            HTTP_STRIPE_SIGNATURE=f"t={stamp},v1={signature}",
        )

    return post

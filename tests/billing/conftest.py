from __future__ import annotations

import hashlib
import hmac
import json
import time

import pytest


@pytest.fixture
def post_webhook(client, settings):  # type: ignore[no-untyped-def]
    """POST a Stripe event to our webhook, signed like Stripe signs it."""

    def post(
        event_type: str,
        obj_id: str,
        event_id: str | None = None,
        secret: str | None = None,
        obj: dict | None = None,
    ):  # type: ignore[no-untyped-def]
        """`obj` is the event's whole object (default: just its id)."""
        payload = json.dumps(
            {
                "id": event_id or f"evt_{time.time_ns()}",
                "object": "event",
                "type": event_type,
                "data": {"object": {"id": obj_id, **(obj or {})}},
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


@pytest.fixture
def buy(django_capture_on_commit_callbacks):  # type: ignore[no-untyped-def]
    """Buy credits as the billing page does: the purchase is recorded, then its queued charge
    task runs when the transaction commits (eagerly in tests). Returns the settled Payment."""
    from billing import payments

    def buy(group, amount_micros: int, actor=None):  # type: ignore[no-untyped-def]
        with django_capture_on_commit_callbacks(execute=True):
            payment = payments.purchase(group=group, amount_micros=amount_micros, actor=actor)
        payment.refresh_from_db()
        return payment

    return buy

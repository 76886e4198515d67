"""A card dispute takes the credits back: the gateway blocks the keys at once (as at $0), and a
won dispute unblocks them."""

from __future__ import annotations

from billing import payments
from billing.models import CreditAccount, Payment
from billing.services import ledger_post
from groups.models import new_public_id
from keys.services import api_key_create
from tests.factories import GroupFactory, MembershipFactory


def test_a_dispute_blocks_the_keys_and_winning_it_unblocks_them(gateway, upstream, upstream_model):
    group = GroupFactory()
    MembershipFactory(group=group, role="admin")
    payment = Payment.objects.create(
        public_id=new_public_id(), group=group, kind="purchase", amount_micros=1_000_000,
        status="succeeded", stripe_payment_intent_id="pi_disputed",
    )  # fmt: skip
    ledger_post(group=group, amount_micros=1_000_000, kind="purchase", reference="pi_disputed")
    key = api_key_create(group=group, name="Disputed").secret
    assert gateway.chat(key, model="fake-pro").status_code == 200  # the balance is cached now
    spent = 1_000_000 - CreditAccount.objects.get(group=group).balance_micros
    assert spent > 0

    payments.dispute_apply(
        payment=payment, dispute={"id": "dp_g", "amount": 100, "status": "needs_response"}
    )
    assert CreditAccount.objects.get(group=group).balance_micros == -spent
    response = gateway.chat(key, model="fake-pro")
    assert response.status_code == 402
    assert response.json()["error"]["code"] == "insufficient_credits"

    payments.dispute_apply(payment=payment, dispute={"id": "dp_g", "amount": 100, "status": "won"})
    assert gateway.chat(key, model="fake-pro").status_code == 200

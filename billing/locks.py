"""The row locks that guard money, and the one order in which they are taken.

A transaction that needs more than one of these takes them in this order, never the other way
round, so two billing paths can never wait for each other (Saleor's `checkout/lock_objects.py`):

1. `payment_lock`         a Payment (charging it, settling it from Stripe, booking its disputes)
2. `billing_profile_lock` the group's BillingProfile (cards, the Stripe customer, auto top-up
                          settings and its decline/retry state, the low-balance alert)
3. `credit_account_lock`  the group's CreditAccount (the balance; `ledger_post`'s trigger
                          updates it, so posting to the ledger takes this lock last)

Each function locks only its own row (`of=("self",)`): a related row joined to read it (the
group) is never locked by accident. Call them inside `transaction.atomic()`.
"""

from __future__ import annotations

from typing import Any

from billing.models import BillingProfile, CreditAccount, Payment


def payment_lock(*, pk: int, skip_locked: bool = False) -> Payment | None:
    """Lock a Payment row (with its group read alongside). With `skip_locked`, return None
    while another transaction holds it instead of waiting."""
    return (
        Payment.objects.select_for_update(of=("self",), skip_locked=skip_locked)
        .select_related("group")
        .filter(pk=pk)
        .first()
    )


def billing_profile_lock(*, group: Any) -> BillingProfile | None:
    """Lock the group's BillingProfile row; None if the group has none yet."""
    return BillingProfile.objects.select_for_update(of=("self",)).filter(group=group).first()


def credit_account_lock(*, group: Any) -> CreditAccount:
    """Lock the group's CreditAccount row (its balance cannot change until commit)."""
    return CreditAccount.objects.select_for_update(of=("self",)).get(group=group)

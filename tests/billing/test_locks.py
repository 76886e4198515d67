"""billing.locks: each lock takes only its own row, and billing's entry points refuse to run
inside someone else's transaction (durable), where their locks would be held too long and their
side effects sent before the money is committed."""

from __future__ import annotations

import threading

import pytest
from django.db import DatabaseError, connections, transaction

from billing import locks, payments
from billing.models import CreditAccount, Payment
from groups.models import APIGroup, new_public_id
from tests.factories import GroupFactory

pytestmark = pytest.mark.django_db(transaction=True)


def try_lock_elsewhere(queryset) -> str:  # type: ignore[no-untyped-def]
    """From another connection, lock the queryset's rows without waiting: "free" or "locked"."""
    result: list[str] = []

    def run() -> None:
        try:
            with transaction.atomic():
                list(queryset.select_for_update(nowait=True))
            result.append("free")
        except DatabaseError:
            result.append("locked")
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(10)
    return result[0]


def test_each_lock_holds_its_own_row_and_not_the_group_it_reads():
    group = GroupFactory()
    payment = Payment.objects.create(
        public_id=new_public_id(), group=group, kind="purchase", amount_micros=5_000_000
    )
    payments.profile_for(group=group)
    with transaction.atomic():
        locked = locks.payment_lock(pk=payment.pk)
        assert locked is not None and locked.group.name == group.name  # the group is read…
        assert try_lock_elsewhere(Payment.objects.filter(pk=payment.pk)) == "locked"
        assert try_lock_elsewhere(APIGroup.objects.filter(pk=group.pk)) == "free"  # …not locked
        locks.billing_profile_lock(group=group)
        locks.credit_account_lock(group=group)
        assert try_lock_elsewhere(CreditAccount.objects.filter(group=group)) == "locked"
    assert try_lock_elsewhere(Payment.objects.filter(pk=payment.pk)) == "free"


def test_a_payment_being_charged_is_skipped_not_waited_for():
    group = GroupFactory()
    payment = Payment.objects.create(
        public_id=new_public_id(), group=group, kind="purchase", amount_micros=5_000_000
    )
    with transaction.atomic():
        locks.payment_lock(pk=payment.pk)
        seen: list[object] = []

        def other_worker() -> None:
            with transaction.atomic():
                seen.append(locks.payment_lock(pk=payment.pk, skip_locked=True))
            connections.close_all()

        thread = threading.Thread(target=other_worker)
        thread.start()
        thread.join(10)
    assert seen == [None]


@pytest.mark.parametrize(
    "entry_point",
    [
        lambda group, user: payments.purchase(group=group, amount_micros=5_000_000, actor=user),
        lambda group, user: payments.low_balance_alert_configure(
            group=group, level_micros=1_000_000, actor=user
        ),
        lambda group, user: payments.auto_top_up_run(group_id=group.pk),
        lambda group, user: payments.low_balance_check(group=group),
    ],
)
def test_billing_entry_points_run_in_their_own_transaction(entry_point, user):
    group = GroupFactory()
    with pytest.raises(RuntimeError, match="durable"), transaction.atomic():
        entry_point(group, user)
    assert not Payment.objects.exists()

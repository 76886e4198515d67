"""Credit lots: draw-down order, expiry, reminders (billing/credits.py).

The property test runs random grants (with and without expiry), purchases, refunds, usage and
clock moves against the database and against a reference model that attributes each usage
debit the moment it happens; the lots must agree exactly, with 0 drift from the ledger.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from unittest import mock

import pytest
from django.core import mail
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from billing.credits import (
    account_lock,
    credit_lot_reminders_due,
    credit_lots_expire_due,
    credit_lots_settle,
    lots_projected,
)
from billing.models import CreditAccount, CreditLot, EntryKind, LedgerEntry, LotKind
from billing.services import LedgerError, credits_grant, ledger_post
from tests.factories import GroupFactory, MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db

T0 = datetime(2031, 3, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def account_of(group) -> CreditAccount:  # type: ignore[no-untyped-def]
    return CreditAccount.objects.get(group=group)


def entries_sum(account: CreditAccount) -> int:
    return account.entries.aggregate(s=Sum("amount_micros"))["s"] or 0


def settle(group, now: datetime) -> None:  # type: ignore[no-untyped-def]
    with transaction.atomic():
        credit_lots_settle(account=account_lock(account_id=account_of(group).pk), now=now)


# --- the reference model --------------------------------------------------------------------


@dataclass
class Lot:
    promotional: bool
    remaining: int
    expires: datetime | None
    seq: int

    def usable(self, at: datetime) -> bool:  # usage dated up to the expiry moment draws it
        return self.expires is None or self.expires >= at


class Model:
    def __init__(self) -> None:
        self.lots: list[Lot] = []
        self.deficit = 0

    def _take(self, lots: list[Lot], amount: int) -> None:
        for lot in lots:
            take = min(lot.remaining, amount)
            lot.remaining -= take
            amount -= take
        self.deficit += amount

    def use(self, amount: int, at: datetime) -> None:
        usable = [lot for lot in self.lots if lot.usable(at)]
        promo = sorted(
            (lot for lot in usable if lot.promotional),
            key=lambda lot: (lot.expires or datetime.max.replace(tzinfo=UTC), lot.seq),
        )
        paid = sorted((lot for lot in usable if not lot.promotional), key=lambda lot: lot.seq)
        self._take(promo + paid, amount)

    def refund(self, amount: int, at: datetime) -> None:
        usable = [lot for lot in self.lots if lot.usable(at)]
        paid = sorted((lot for lot in usable if not lot.promotional), key=lambda lot: -lot.seq)
        promo = sorted(
            (lot for lot in usable if lot.promotional),
            key=lambda lot: (lot.expires or datetime.max.replace(tzinfo=UTC), lot.seq),
        )
        self._take(paid + promo, amount)

    def credit(self, amount: int, *, promotional: bool, expires: datetime | None) -> None:
        payoff = min(self.deficit, amount)
        self.deficit -= payoff
        self.lots.append(Lot(promotional, amount - payoff, expires, len(self.lots)))


# Whole dollars or odd micros, of similar sizes, so that debits often split across lots.
amounts = st.one_of(
    st.integers(min_value=1, max_value=20).map(lambda d: d * 1_000_000),
    st.integers(min_value=1, max_value=20_000_000),
)
use = st.tuples(st.just("use"), amounts, st.none())
ops = st.lists(
    st.one_of(
        use,
        use,
        st.tuples(
            st.just("grant"),
            amounts,
            st.one_of(st.none(), st.integers(min_value=1, max_value=72)),  # hours left
        ),
        st.tuples(st.just("buy"), amounts, st.none()),
        st.tuples(st.just("use"), amounts, st.none()),
        st.tuples(st.just("refund"), amounts, st.none()),
        st.tuples(st.just("wait"), st.integers(min_value=0, max_value=3 * 24 * 3600), st.none()),
        st.tuples(
            st.just("wait"),
            st.integers(min_value=0, max_value=48).map(lambda h: h * 3600),
            st.none(),
        ),  # fmt: skip
        st.tuples(st.just("tick"), st.just(0), st.none()),  # the periodic task
        st.tuples(st.just("settle"), st.just(0), st.none()),
    ),
    max_size=40,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=ops)
# Usage dated after a lot's expiry, not yet attributed when the expiry passes: paid credit's.
@example(steps=[("buy", 5, None), ("grant", 3, 1), ("wait", 7200, None), ("use", 1, None),
                ("use", 2, None), ("tick", 0, None)])  # fmt: skip
# Usage before and after the expiry, attributed in one settlement that closes the lot.
@example(steps=[("grant", 3, 1), ("buy", 5, None), ("use", 1, None), ("wait", 3599, None),
                ("use", 1, None), ("wait", 2, None), ("use", 4, None), ("settle", 0, None)])  # fmt: skip
# Two expiring grants and one without expiry: soonest-expiring first.
@example(steps=[("grant", 3, None), ("grant", 3, 48), ("grant", 3, 24), ("use", 4, None)])
def test_lots_follow_the_draw_down_order_with_zero_drift(db, steps, settings):  # type: ignore[no-untyped-def]
    settings.CREDIT_EXPIRY_GRACE_SECONDS = 0
    group = GroupFactory()
    model = Model()
    clock = Clock(T0)
    n = 0
    with mock.patch.object(timezone, "now", clock):
        for op, value, hours in steps:
            n += 1
            now = clock.at
            if op == "grant":
                expires = now + timedelta(hours=hours) if hours else None
                ledger_post(group=group, amount_micros=value, kind=EntryKind.PROMOTIONAL,
                            reference=f"p:{group.pk}:{n}", expires_at=expires)  # fmt: skip
                model.credit(value, promotional=True, expires=expires)
            elif op == "buy":
                ledger_post(group=group, amount_micros=value, kind=EntryKind.PURCHASE,
                            reference=f"pi:{group.pk}:{n}")  # fmt: skip
                model.credit(value, promotional=False, expires=None)
            elif op == "use":
                ledger_post(group=group, amount_micros=-value, kind=EntryKind.USAGE,
                            reference=f"usage:{group.pk}:{n}", created_at=now)  # fmt: skip
                model.use(value, now)
            elif op == "refund":
                ledger_post(group=group, amount_micros=-value, kind=EntryKind.REFUND,
                            reference=f"re:{group.pk}:{n}")  # fmt: skip
                model.refund(value, now)
            elif op == "wait":
                clock.at = now + timedelta(seconds=value)
            elif op == "tick":
                credit_lots_expire_due(now=now)
            else:
                settle(group, now)
            check(group, model, clock.at)
        # Far in the future every expiring lot is closed: what it had left is one expiry entry.
        clock.at += timedelta(days=30)
        credit_lots_expire_due(now=clock.at)
        assert credit_lots_expire_due(now=clock.at) == 0  # a second run books nothing
        check(group, model, clock.at)
    lots = list(CreditLot.objects.filter(account__group=group).order_by("id"))
    for lot, ref in zip(lots, model.lots, strict=True):
        expiries = LedgerEntry.objects.filter(reference=f"expiry:lot:{lot.pk}")
        if ref.expires is None:
            assert lot.expired_at is None and not expiries.exists()
        else:
            assert lot.expired_at is not None and lot.remaining_micros == 0
            assert [e.amount_micros for e in expiries] == (
                [-ref.remaining] if ref.remaining else []
            )
            assert (lot.expiry_entry_id is not None) == (ref.remaining > 0)


def check(group, model: Model, now: datetime) -> None:  # type: ignore[no-untyped-def]
    account = account_of(group)
    lots = list(CreditLot.objects.filter(account=account).order_by("id"))
    pending = account.used_micros - account.lots_used_micros
    # The ledger: balance = sum(entries); the lots attribute exactly that balance.
    assert account.balance_micros == entries_sum(account)
    assert sum(lot.remaining_micros for lot in lots) - account.lots_deficit_micros - pending == (
        account.balance_micros
    )
    if pending == 0 and account.balance_micros >= 0:
        assert account.lots_deficit_micros == 0
        assert sum(lot.remaining_micros for lot in lots) == account.balance_micros
    # What the next settlement stores equals the model that attributed each debit at once.
    projected = {lot.pk: lot.remaining_micros for lot in lots_projected(account=account, now=now)}
    for lot, ref in zip(lots, model.lots, strict=True):
        expected = 0 if ref.expires is not None and ref.expires < now else ref.remaining
        assert projected.get(lot.pk, lot.remaining_micros) == expected, (lot, ref)
        assert lot.kind == (LotKind.PROMOTIONAL if ref.promotional else LotKind.PAID)
        assert lot.remaining_micros >= 0


# --- examples --------------------------------------------------------------------------------


def test_usage_draws_promotional_soonest_expiring_first_then_paid_oldest_first(group):
    paid_old = ledger_post(group=group, amount_micros=3_000_000, kind="purchase", reference="a")
    paid_new = ledger_post(group=group, amount_micros=3_000_000, kind="purchase", reference="b")
    later = timezone.now() + timedelta(days=20)
    sooner = timezone.now() + timedelta(days=10)
    promo_late = credits_grant(group=group, amount_micros=2_000_000, reason="Late", reference="pl",
                               kind="promotional", expires_at=later)  # fmt: skip
    promo_soon = credits_grant(group=group, amount_micros=1_000_000, reason="Soon", reference="ps",
                               kind="promotional", expires_at=sooner)  # fmt: skip
    ledger_post(group=group, amount_micros=-4_500_000, kind="usage", reference="usage:1")
    settle(group, timezone.now())

    def left(result) -> int:  # type: ignore[no-untyped-def]
        return CreditLot.objects.get(entry=result.entry).remaining_micros

    assert left(promo_soon) == 0 and left(promo_late) == 0
    assert left(paid_old) == 1_500_000 and left(paid_new) == 3_000_000
    assert account_of(group).balance_micros == 4_500_000


def test_refunds_take_paid_credit_newest_first(group):
    old = ledger_post(group=group, amount_micros=5_000_000, kind="purchase", reference="a")
    new = ledger_post(group=group, amount_micros=2_000_000, kind="purchase", reference="b")
    promo = ledger_post(group=group, amount_micros=1_000_000, kind="promotional", reference="p")
    ledger_post(group=group, amount_micros=-3_000_000, kind="refund", reference="re_1")
    remaining = {
        r.entry.reference: CreditLot.objects.get(entry=r.entry).remaining_micros
        for r in (old, new, promo)
    }
    assert remaining == {"a": 4_000_000, "b": 0, "p": 1_000_000}


def test_a_new_lot_pays_off_a_deficit_first(group):
    ledger_post(group=group, amount_micros=-2_000_000, kind="usage", reference="usage:1")
    grant = ledger_post(group=group, amount_micros=5_000_000, kind="promotional", reference="p")
    lot = CreditLot.objects.get(entry=grant.entry)
    assert (lot.original_micros, lot.remaining_micros) == (5_000_000, 3_000_000)
    assert account_of(group).lots_deficit_micros == 0
    assert account_of(group).balance_micros == 3_000_000


def test_only_promotional_credit_expires_and_only_in_the_future(group):
    future = timezone.now() + timedelta(days=3)
    with pytest.raises(LedgerError, match="Only promotional"):
        credits_grant(group=group, amount_micros=1, reason="r", reference="x", expires_at=future)
    with pytest.raises(LedgerError, match="future"):
        credits_grant(group=group, amount_micros=1, reason="r", reference="y",
                      kind="promotional", expires_at=timezone.now() - timedelta(seconds=1))  # fmt: skip
    with pytest.raises(LedgerError, match="Expiry entries"):
        ledger_post(group=group, amount_micros=-1, kind="expiry", reference="z")
    assert entries_sum(account_of(group)) == 0


def test_usage_dated_before_the_expiry_but_metered_late_is_attributed_first(group, settings):
    settings.CREDIT_EXPIRY_GRACE_SECONDS = 120
    expires = timezone.now() + timedelta(hours=1)
    ledger_post(group=group, amount_micros=10_000_000, kind="purchase", reference="pi")
    grant = credits_grant(group=group, amount_micros=5_000_000, reason="Trial", reference="t",
                          kind="promotional", expires_at=expires)  # fmt: skip
    lot = CreditLot.objects.get(entry=grant.entry)
    # Usage after the expiry moment goes to paid credit, even before the expiry is booked.
    ledger_post(group=group, amount_micros=-1_000_000, kind="usage", reference="usage:after",
                created_at=expires + timedelta(seconds=30))  # fmt: skip
    assert credit_lots_expire_due(now=expires + timedelta(seconds=60)) == 0  # still in grace
    # A request of before the moment, metered late (in the grace): still the promotional lot's.
    ledger_post(group=group, amount_micros=-2_000_000, kind="usage", reference="usage:before",
                created_at=expires - timedelta(seconds=5))  # fmt: skip
    assert credit_lots_expire_due(now=expires + timedelta(seconds=121)) == 1
    assert credit_lots_expire_due(now=expires + timedelta(seconds=180)) == 0  # run twice: once
    lot.refresh_from_db()
    expiry = LedgerEntry.objects.get(kind="expiry")
    assert expiry.reference == f"expiry:lot:{lot.pk}" and expiry.amount_micros == -3_000_000
    assert lot.remaining_micros == 0 and lot.expiry_entry == expiry
    paid = CreditLot.objects.get(kind="paid")
    assert paid.remaining_micros == 9_000_000
    account = account_of(group)
    assert account.balance_micros == 9_000_000 == entries_sum(account)


def test_the_periodic_task_expires_once(group):
    from billing.tasks import credit_lots_tick

    credits_grant(group=group, amount_micros=4_000_000, reason="Launch", reference="l",
                  kind="promotional", expires_at=timezone.now() + timedelta(seconds=5))  # fmt: skip
    later = timezone.now() + timedelta(hours=1)
    with mock.patch.object(timezone, "now", Clock(later)):
        assert credit_lots_tick() == {"expired": 1, "reminded": 0}
        assert credit_lots_tick() == {"expired": 0, "reminded": 0}
    assert LedgerEntry.objects.filter(kind="expiry").count() == 1
    assert account_of(group).balance_micros == 0


def test_the_expiry_reminder_goes_to_admins_once(group, user, django_capture_on_commit_callbacks):
    MembershipFactory(group=group, user=UserFactory(email="member@example.com"), role="member")
    expires = timezone.now() + timedelta(days=8)
    credits_grant(group=group, amount_micros=7_000_000, reason="Conference", reference="c",
                  kind="promotional", expires_at=expires)  # fmt: skip
    ledger_post(group=group, amount_micros=-2_500_000, kind="usage", reference="usage:1")
    assert credit_lot_reminders_due() == 0  # 8 days left: not yet
    with django_capture_on_commit_callbacks(execute=True):
        assert credit_lot_reminders_due(now=expires - timedelta(days=7)) == 1
    with django_capture_on_commit_callbacks(execute=True):
        assert credit_lot_reminders_due(now=expires - timedelta(days=6)) == 0
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == [user.email]
    assert "$4.50 of promotional credit expires" in message.subject
    assert "Conference" in message.body and "$7.00" in message.body


def test_no_reminder_for_a_used_up_grant(group):
    expires = timezone.now() + timedelta(days=3)
    credits_grant(group=group, amount_micros=1_000_000, reason="Small", reference="s",
                  kind="promotional", expires_at=expires)  # fmt: skip
    ledger_post(group=group, amount_micros=-1_000_000, kind="usage", reference="usage:1")
    assert credit_lot_reminders_due() == 0
    assert CreditLot.objects.get().reminded_at is not None
    assert mail.outbox == []


def test_grant_credits_command_sets_an_expiry(group):
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("grant_credits", group=group.public_id, amount="25", reason="Hackathon",
                 reference="hk", promotional=True, expires="2099-01-31", stdout=out)  # fmt: skip
    lot = CreditLot.objects.get()
    assert lot.kind == "promotional" and lot.expires_at == datetime(2099, 2, 1, tzinfo=UTC)
    assert "Expires 2099-02-01 00:00 UTC" in out.getvalue()
    event = group.audit_events.get(action="credits.grant")
    assert event.data["expires_at"] == "2099-02-01T00:00:00+00:00"


def test_billing_page_shows_each_grant_and_paid_credit(member_client, group):
    import re

    ledger_post(group=group, amount_micros=20_000_000, kind="purchase", reference="pi")
    expires = timezone.now() + timedelta(days=30)
    credits_grant(group=group, amount_micros=10_000_000, reason="Startup programme",
                  reference="sp", kind="promotional", expires_at=expires)  # fmt: skip
    credits_grant(group=group, amount_micros=2_000_000, reason="Gone soon", reference="gs",
                  kind="promotional", expires_at=timezone.now() + timedelta(seconds=1))  # fmt: skip
    # Not attributed yet (the gateway's debit): the page attributes it as the next settlement will.
    ledger_post(group=group, amount_micros=-1_500_000, kind="usage", reference="usage:1")
    credit_lots_expire_due(now=timezone.now() + timedelta(hours=1))
    html = member_client.get(f"/g/{group.public_id}/billing/").content.decode()
    rows = re.findall(r'<tr data-testid="grant">(.*?)</tr>', html, re.S)
    assert len(rows) == 2
    assert "Startup programme" in rows[1] or "Startup programme" in rows[0]
    startup = next(r for r in rows if "Startup programme" in r)
    gone = next(r for r in rows if "Gone soon" in r)
    assert "$10.00" in startup and "$10.00" in startup.split("$10.00", 1)[1]  # untouched
    assert expires.strftime("%b %-d, %Y") in startup
    assert "$0.50 expired" in gone and "Expired" in gone  # $2 − $1.50 of usage
    paid = re.search(r'<tr data-testid="paid-credit">(.*?)</tr>', html, re.S)
    assert paid and "$20.00" in paid.group(1)
    assert account_of(group).balance_micros == 30_000_000


def test_billing_page_lots_of_another_group_are_not_shown(member_client, group):
    other = GroupFactory()
    credits_grant(group=other, amount_micros=9_870_000, reason="Theirs", reference="o",
                  kind="promotional", expires_at=timezone.now() + timedelta(days=3))  # fmt: skip
    html = member_client.get(f"/g/{group.public_id}/billing/").content.decode()
    assert "Theirs" not in html and "$9.87" not in html


def test_a_debit_written_like_the_gateway_writes_it_is_attributed_at_the_next_settlement(group):
    from django.db import connection

    grant = credits_grant(group=group, amount_micros=2_000_000, reason="Trial", reference="tr",
                          kind="promotional", expires_at=timezone.now() + timedelta(days=1))  # fmt: skip
    account = account_of(group)
    with connection.cursor() as cursor:  # meter.sql's INSERT: no lot work on the hot path
        cursor.execute(
            "INSERT INTO billing_ledgerentry (account_id, kind, amount_micros, reference,"
            " description, created_at) VALUES (%s, 'usage', -750000, 'usage:gw', '', now())",
            [account.pk],
        )
    account.refresh_from_db()
    assert account.used_micros - account.lots_used_micros == 750_000
    assert CreditLot.objects.get(entry=grant.entry).remaining_micros == 2_000_000  # not yet
    settle(group, timezone.now())
    assert CreditLot.objects.get(entry=grant.entry).remaining_micros == 1_250_000
    assert account_of(group).balance_micros == 1_250_000

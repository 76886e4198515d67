"""Credit lots: which credits a balance is made of, the order usage spends them, and expiry.

The balance stays one number, the sum of the ledger's entries. Lots only attribute it:

    sum(lot remaining) - deficit - unattributed usage == balance        (always)

- Every credit entry opens a lot: a promotional grant a *promotional* lot (with an optional
  expiry), a purchase, an auto top-up or a positive adjustment (credit note, dispute won,
  support credit) a *paid* lot that never expires. A new lot first pays off the deficit (usage
  no lot covered, i.e. a balance below zero).
- Usage draws promotional lots first, soonest-expiring first (then those without an expiry,
  oldest first), then paid lots, oldest first. The gateway writes usage debits in one statement
  and does nothing for lots: the ledger trigger adds each debit to the account's `used_micros`
  in the UPDATE it already makes. Usage is attributed later, in bulk, by `credit_lots_settle`
  (before every other lot change, and every minute for accounts with expiring lots).
- Refunds and negative adjustments (disputes, corrections) draw paid credit first, newest
  first (the money going back was paid in most recently), then promotional lots in the usage
  order; what no lot covers becomes deficit. They are attributed when posted.
- A promotional lot stops being drawn at its `expires_at`: usage dated after that moment goes to
  other lots (usage dated exactly at it still draws it). Once `CREDIT_EXPIRY_GRACE_SECONDS` have passed (so usage metered late but dated
  before the moment is attributed to it first), its remaining leaves the balance as one ledger
  entry of kind `expiry`, reference `expiry:lot:<id>` (so at most once).

Every writer holds the account's row lock, the same lock the ledger trigger takes: each
attribution sees every committed debit and no debit commits halfway through it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q, Sum
from django.utils import timezone

from billing import balance_cache
from billing.models import CreditAccount, CreditLot, EntryKind, LedgerEntry, LotKind
from billing.tasks import email_credit_expiry_reminder

REMINDER_BEFORE = timedelta(days=7)


def _far() -> datetime:
    return datetime(9999, 12, 31, tzinfo=UTC)


def usage_order(lot: CreditLot) -> tuple:
    """Usage: promotional first, soonest-expiring first; then paid, oldest first."""
    return (
        lot.kind != LotKind.PROMOTIONAL,
        lot.expires_at or _far(),
        lot.created_at,
        lot.pk or 0,
    )


def refund_order(lot: CreditLot) -> tuple:
    """Refunds and negative adjustments: paid first, newest first; then promotional."""
    if lot.kind == LotKind.PAID:
        return (0, -lot.created_at.timestamp(), -(lot.pk or 0))
    return (1, *usage_order(lot))


def draw(lots: Iterable[CreditLot], amount: int, order: Callable[[CreditLot], tuple]) -> int:
    """Take `amount` from the lots in `order` (in memory); return what no lot covered."""
    for lot in sorted(lots, key=order):
        if amount <= 0:
            break
        take = min(lot.remaining_micros, amount)
        lot.remaining_micros -= take
        amount -= take
    return amount


def grace() -> timedelta:
    return timedelta(seconds=settings.CREDIT_EXPIRY_GRACE_SECONDS)


def attribute(
    account: CreditAccount,
    lots: list[CreditLot],
    *,
    now: datetime,
    usage_after: Callable[[datetime], int],
) -> list[CreditLot]:
    """Attribute the account's unattributed usage to `lots` (its open lots), in memory.

    A lot whose expiry has come is drawn only by the usage dated before it: `usage_after(t)`
    says how much usage is dated after `t`; of the unattributed usage, what is dated after
    the lot's expiry (and after the last settlement, before which everything was attributed)
    goes to the other lots. Return the lots to close now (expiry plus the grace passed).
    """
    pending = account.used_micros - account.lots_used_micros
    drawable = [lot for lot in lots if lot.expired_at is None]
    closing = sorted(
        (lot for lot in drawable if lot.expires_at is not None and lot.expires_at < now),
        key=lambda lot: (lot.expires_at, lot.pk or 0),
    )
    settled = account.lots_settled_at
    due = []
    for lot in closing:
        assert lot.expires_at is not None
        since = max(lot.expires_at, settled) if settled else lot.expires_at
        after = min(max(usage_after(since), 0), pending)
        account.lots_deficit_micros += draw(drawable, pending - after, usage_order)
        pending = after
        drawable.remove(lot)
        if lot.expires_at < now - grace():
            due.append(lot)
    account.lots_deficit_micros += draw(drawable, pending, usage_order)
    account.lots_used_micros = account.used_micros
    account.lots_settled_at = now
    return due


def usage_after(account_id: int) -> Callable[[datetime], int]:
    def after(moment: datetime) -> int:
        total = LedgerEntry.objects.filter(
            account_id=account_id, kind=EntryKind.USAGE, created_at__gt=moment
        ).aggregate(s=Sum("amount_micros"))["s"]
        return -(total or 0)

    return after


def open_lots(account: CreditAccount, *, now: datetime) -> list[CreditLot]:
    """The lots that can still be drawn or closed: some left, or an expiry not yet booked."""
    return list(
        account.lots.filter(
            Q(remaining_micros__gt=0) | Q(expires_at__lt=now), expired_at__isnull=True
        )
    )


def account_lock(*, account_id: int) -> CreditAccount:
    """Lock the credit account row (the ledger trigger's lock) and read it afresh."""
    return CreditAccount.objects.select_for_update(of=("self",)).get(pk=account_id)


def credit_lots_settle(*, account: CreditAccount, now: datetime | None = None) -> list[CreditLot]:
    """Attribute the locked account's pending usage and close its due lots (booking each
    one's remaining as an `expiry` entry). Return the lots closed. The caller holds the lock."""
    now = now or timezone.now()
    lots = open_lots(account, now=now)
    was = {lot.pk: lot.remaining_micros for lot in lots}
    due = attribute(account, lots, now=now, usage_after=usage_after(account.pk))
    for lot in due:
        lot.expired_at = now
        if lot.remaining_micros > 0:
            lot.expiry_entry = _post_expiry(account, lot, now=now)
            lot.remaining_micros = 0
    changed = [lot for lot in lots if lot.remaining_micros != was[lot.pk] or lot in due]
    if changed:
        CreditLot.objects.bulk_update(
            changed, ["remaining_micros", "expired_at", "expiry_entry"], batch_size=500
        )
    account.save(update_fields=["lots_used_micros", "lots_deficit_micros", "lots_settled_at"])
    return due


def _post_expiry(account: CreditAccount, lot: CreditLot, *, now: datetime) -> LedgerEntry:
    reference = f"expiry:lot:{lot.pk}"
    entry = LedgerEntry.objects.filter(reference=reference).first()
    if entry is not None:  # booked before (the lot's row change was lost): never twice
        return entry
    assert lot.expires_at is not None
    entry = LedgerEntry.objects.create(
        account=account,
        kind=EntryKind.EXPIRY,
        amount_micros=-lot.remaining_micros,
        reference=reference,
        description=f"Promotional credit expired on {lot.expires_at:%Y-%m-%d %H:%M} UTC",
        created_at=now,
    )
    group_id = account.group_id
    transaction.on_commit(lambda: balance_cache.forget(group_id=group_id))
    return entry


def lots_book_entry(*, entry: LedgerEntry, expires_at: datetime | None = None) -> CreditLot | None:
    """Attribute a just-posted entry to lots, in the poster's transaction (which holds the
    account's lock: the ledger trigger took it). Usage is left to `credit_lots_settle`; pending
    usage is settled first, so it never draws a lot opened after it was booked."""
    if entry.kind in (EntryKind.USAGE, EntryKind.EXPIRY):
        return None
    now = timezone.now()
    account = account_lock(account_id=entry.account_id)
    credit_lots_settle(account=account, now=now)
    if entry.amount_micros < 0:
        lots = [
            lot
            for lot in open_lots(account, now=now)
            if lot.remaining_micros > 0 and (lot.expires_at is None or lot.expires_at >= now)
        ]
        was = {lot.pk: lot.remaining_micros for lot in lots}
        account.lots_deficit_micros += draw(lots, -entry.amount_micros, refund_order)
        changed = [lot for lot in lots if lot.remaining_micros != was[lot.pk]]
        CreditLot.objects.bulk_update(changed, ["remaining_micros"])
        account.save(update_fields=["lots_deficit_micros"])
        return None
    promotional = entry.kind == EntryKind.PROMOTIONAL
    payoff = min(account.lots_deficit_micros, entry.amount_micros)
    lot = CreditLot.objects.create(
        account=account,
        entry=entry,
        kind=LotKind.PROMOTIONAL if promotional else LotKind.PAID,
        original_micros=entry.amount_micros,
        remaining_micros=entry.amount_micros - payoff,
        expires_at=expires_at if promotional else None,
        created_at=now,
    )
    if payoff:
        account.lots_deficit_micros -= payoff
        account.save(update_fields=["lots_deficit_micros"])
    return lot


# --- the periodic work (billing.tasks.credit_lots_tick, every minute) ---------------------------


def credit_lots_expire_due(*, now: datetime | None = None) -> int:
    """Close every lot whose expiry (plus the grace) has passed; return how many. Idempotent:
    a closed lot is never closed again, and its expiry entry's reference is unique."""
    now = now or timezone.now()
    account_ids = (
        CreditLot.objects.filter(expired_at__isnull=True, expires_at__lt=now - grace())
        .values_list("account_id", flat=True)
        .distinct()
    )
    closed = 0
    for account_id in sorted(set(account_ids)):
        with transaction.atomic():
            closed += len(credit_lots_settle(account=account_lock(account_id=account_id), now=now))
    return closed


def credit_lot_reminders_due(*, now: datetime | None = None) -> int:
    """Queue the e-mail to a group's Admins for each promotional lot with 7 days or less left
    (at once for a shorter grant) and something remaining; once per lot. Return how many."""
    now = now or timezone.now()
    due = CreditLot.objects.filter(
        kind=LotKind.PROMOTIONAL,
        reminded_at__isnull=True,
        expired_at__isnull=True,
        expires_at__gt=now,
        expires_at__lte=now + REMINDER_BEFORE,
    )
    sent = 0
    for account_id in sorted(set(due.values_list("account_id", flat=True))):
        with transaction.atomic():
            account = account_lock(account_id=account_id)
            credit_lots_settle(account=account, now=now)  # the remaining the e-mail states
            for lot in due.filter(account_id=account_id).select_for_update():
                lot.reminded_at = now
                lot.save(update_fields=["reminded_at"])
                if lot.remaining_micros > 0:
                    email_credit_expiry_reminder.delay_on_commit(lot.pk)
                    sent += 1
    return sent


def lots_projected(*, account: CreditAccount, now: datetime | None = None) -> list[CreditLot]:
    """The account's open lots with its pending usage attributed, in memory (nothing written):
    what the next settlement will store. For pages and the API."""
    now = now or timezone.now()
    lots = open_lots(account, now=now)
    shadow = CreditAccount(
        pk=account.pk,
        used_micros=account.used_micros,
        lots_used_micros=account.lots_used_micros,
        lots_deficit_micros=account.lots_deficit_micros,
        lots_settled_at=account.lots_settled_at,
    )
    for lot in attribute(shadow, lots, now=now, usage_after=usage_after(account.pk)):
        lot.remaining_micros = 0  # about to leave the balance as an expiry entry
    return lots

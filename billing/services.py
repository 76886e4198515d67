"""Writes to the credit ledger. Every balance change is one `ledger_post` call.

`ledger_post` is idempotent on `reference`: posting the same reference again returns the entry
that exists and changes nothing, so a Stripe webhook replayed five times, or a command run twice,
credits once. The database trigger applies the amount to the account's balance.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.services import audit_record
from billing import balance_cache
from billing.credits import lots_book_entry
from billing.models import CreditAccount, EntryKind, LedgerEntry
from billing.tasks import sync_customer


class LedgerError(ValueError):
    """A ledger write that cannot be made; the message says why."""


@dataclass(frozen=True)
class PostResult:
    entry: LedgerEntry
    created: bool


def credit_account_for(*, group: Any) -> CreditAccount:
    """Return the group's credit account, creating it on first use."""
    account, _ = CreditAccount.objects.get_or_create(group=group)
    return account


def customer_sync_queue(*, group: Any) -> None:
    """Queue the update of the group's Stripe customer (name, address, tax ID) after commit."""
    sync_customer.delay_on_commit(group.pk)


def ledger_post(
    *,
    group: Any,
    amount_micros: int,
    kind: str,
    reference: str,
    description: str = "",
    actor: Any | None = None,
    created_at: Any | None = None,
    expires_at: datetime | None = None,
) -> PostResult:
    """Post one entry to the group's ledger, once per reference.

    `created_at` backdates the entry (only for booking usage imported with its own timestamps,
    so that a period's usage debits match its usage events); normally it is now. `expires_at`
    (promotional credit only) is when the credit lot it opens expires (billing/credits.py).

    Runs in its own transaction (or a savepoint inside the caller's), so a replay that hits the
    unique reference leaves the caller's transaction usable.
    """
    if kind not in EntryKind.values:
        raise LedgerError(f"Unknown ledger entry kind {kind!r}.")
    if not isinstance(amount_micros, int) or isinstance(amount_micros, bool):
        raise LedgerError("Ledger amounts are whole micro-dollars.")
    if amount_micros == 0:
        raise LedgerError("A ledger entry cannot be zero.")
    if not reference or len(reference) > 200:
        raise LedgerError("A ledger entry needs a reference of at most 200 characters.")
    if kind == EntryKind.EXPIRY:  # only a credit lot's closing books one (billing/credits.py)
        raise LedgerError("Expiry entries are booked by closing a credit lot.")
    if expires_at is not None and kind != EntryKind.PROMOTIONAL:
        raise LedgerError("Only promotional credit expires.")
    existing = LedgerEntry.objects.filter(reference=reference).first()
    if existing is not None:
        _check_same(existing, group=group, amount_micros=amount_micros, kind=kind)
        return PostResult(existing, created=False)
    account = credit_account_for(group=group)
    try:
        with transaction.atomic():
            entry = LedgerEntry.objects.create(
                account=account,
                kind=kind,
                amount_micros=amount_micros,
                reference=reference,
                description=description[:255],
                created_by=actor if getattr(actor, "pk", None) else None,
                **({"created_at": created_at} if created_at is not None else {}),
            )
            lots_book_entry(entry=entry, expires_at=expires_at)
    except IntegrityError as exc:
        existing = LedgerEntry.objects.filter(reference=reference).first()
        if existing is None:  # a check constraint, not a concurrent replay
            raise LedgerError(f"The ledger refused this entry: {exc}") from exc
        _check_same(existing, group=group, amount_micros=amount_micros, kind=kind)
        return PostResult(existing, created=False)
    transaction.on_commit(lambda: balance_cache.forget(group_id=account.group_id))
    return PostResult(entry, created=True)


def _check_same(entry: LedgerEntry, *, group: Any, amount_micros: int, kind: str) -> None:
    if (
        entry.account.group_id != group.pk
        or entry.amount_micros != amount_micros
        or entry.kind != kind
    ):
        raise LedgerError(
            f"Reference {entry.reference!r} is already used by a different ledger entry."
        )


@transaction.atomic
def credits_grant(
    *,
    group: Any,
    amount_micros: int,
    reason: str,
    reference: str,
    kind: str = EntryKind.ADJUSTMENT,
    actor: Any | None = None,
    expires_at: datetime | None = None,
) -> PostResult:
    """Grant (or, with a negative adjustment, remove) credits by hand; audited. Promotional
    credit may carry an expiry (then what is unused at that moment leaves the balance)."""
    if kind not in (EntryKind.ADJUSTMENT, EntryKind.PROMOTIONAL):
        raise LedgerError("Grants are adjustments or promotional credits.")
    if not reason.strip():
        raise LedgerError("A grant needs a reason.")
    if expires_at is not None:
        if kind != EntryKind.PROMOTIONAL:
            raise LedgerError("Only promotional credit can expire.")
        if timezone.is_naive(expires_at):
            raise LedgerError("The expiry needs a time zone.")
        if expires_at <= timezone.now():
            raise LedgerError("The expiry must be in the future.")
    result = ledger_post(
        group=group,
        amount_micros=amount_micros,
        kind=kind,
        reference=reference,
        description=reason.strip(),
        actor=actor,
        expires_at=expires_at,
    )
    if result.created:
        data: dict[str, Any] = {
            "reference": reference,
            "reason": reason.strip(),
            "amount_micros": amount_micros,
        }
        if expires_at is not None:
            data["expires_at"] = expires_at.isoformat()
        audit_record(
            group=group,
            actor=actor,
            action="credits.grant",
            target=result.entry,
            target_repr=f"{kind} {amount_micros} micros",
            data=data,
        )
    return result

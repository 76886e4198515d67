from __future__ import annotations

import uuid
from datetime import UTC, datetime, time, timedelta

from django.core.management.base import BaseCommand, CommandError

from billing.models import EntryKind
from billing.services import LedgerError, credits_grant
from core.money import format_usd, parse_dollars
from groups.models import APIGroup


class Command(BaseCommand):
    help = "Grant credits to an API group (support, promotions). Idempotent on --reference."

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("--group", required=True, help="the group's public id")
        parser.add_argument(
            "--amount", required=True, help="dollars, e.g. 10.00 (negative removes)"
        )
        parser.add_argument("--reason", required=True)
        parser.add_argument("--reference", help="makes the grant idempotent (default: random)")
        parser.add_argument("--promotional", action="store_true", help="book as promotional credit")
        parser.add_argument(
            "--expires",
            help="promotional credit only: when what is unused expires, an ISO date (valid "
            "through that day, UTC) or date and time (e.g. 2026-12-31T18:00+01:00)",
        )

    def handle(self, *args, **opts):  # type: ignore[no-untyped-def]
        group = APIGroup.objects.filter(public_id=opts["group"]).first()
        if group is None:
            raise CommandError(f"No API group with id {opts['group']!r}.")
        try:
            micros = parse_dollars(opts["amount"])
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        kind = EntryKind.PROMOTIONAL if opts["promotional"] else EntryKind.ADJUSTMENT
        expires_at = _expiry(opts["expires"]) if opts.get("expires") else None
        reference = opts["reference"] or f"grant:{uuid.uuid4().hex}"
        if not reference.startswith("grant:"):
            reference = f"grant:{reference}"
        try:
            result = credits_grant(
                group=group,
                amount_micros=micros,
                reason=opts["reason"],
                reference=reference,
                kind=kind,
                expires_at=expires_at,
            )
        except LedgerError as exc:
            raise CommandError(str(exc)) from exc
        group.credit_account.refresh_from_db()
        balance = format_usd(group.credit_account.balance_micros)
        if result.created:
            self.stdout.write(
                f"Granted {format_usd(micros)} to {group.name} ({reference}). Balance: {balance}."
                + (f" Expires {expires_at:%Y-%m-%d %H:%M} UTC." if expires_at else "")
            )
        else:
            self.stdout.write(
                f"Already granted ({reference}); nothing changed. Balance: {balance}."
            )


def _expiry(text: str) -> datetime:
    """An ISO date means through that day (expires at the next midnight UTC)."""
    try:
        if "T" not in text and " " not in text.strip():
            day = datetime.fromisoformat(text.strip()).date()
            return datetime.combine(day + timedelta(days=1), time(), tzinfo=UTC)
        moment = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise CommandError(f"--expires: {text!r} is not an ISO date or date and time.") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)

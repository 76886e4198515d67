"""Billing periods: calendar months ("2026-10") or ISO weeks ("2026-W43"), in UTC."""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from django.conf import settings
from django.utils import timezone

from billing.invoicing import InvoiceError


@dataclass(frozen=True)
class BillingPeriod:
    key: str  # "2026-10" (month) or "2026-W43" (ISO week)
    start: datetime  # UTC, inclusive
    end: datetime  # UTC, exclusive

    @property
    def unit(self) -> str:
        return "week" if "W" in self.key else "month"

    @property
    def label(self) -> str:
        if self.unit == "week":
            last = self.end - timedelta(days=1)
            return f"Week {self.key[-2:]}, {self.start:%b} {self.start.day} – {last:%b} {last.day}, {last.year}"
        return f"{calendar.month_name[self.start.month]} {self.start.year}"

    def previous(self) -> BillingPeriod:
        return period_containing(self.start - timedelta(seconds=1), self.unit)


_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
_WEEK = re.compile(r"^(\d{4})-W(\d{2})$")


def period_from_key(key: str) -> BillingPeriod:
    """Parse "2026-10" (a calendar month) or "2026-W43" (an ISO week), in UTC."""
    key = key.strip()
    if m := _MONTH.match(key):
        year, month = int(m[1]), int(m[2])
        if not (2000 <= year <= 2999 and 1 <= month <= 12):
            raise InvoiceError(f"“{key}” is not a month; use YYYY-MM, e.g. 2026-10.")
        start = datetime(year, month, 1, tzinfo=UTC)
        end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
        return BillingPeriod(key, start, end)
    if m := _WEEK.match(key):
        try:
            day = date.fromisocalendar(int(m[1]), int(m[2]), 1)
        except ValueError:
            raise InvoiceError(
                f"“{key}” is not an ISO week; use YYYY-Www, e.g. 2026-W43."
            ) from None
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        return BillingPeriod(key, start, start + timedelta(days=7))
    raise InvoiceError(f"“{key}” is not a billing period; use YYYY-MM (or YYYY-Www for weeks).")


def period_containing(moment: datetime, unit: str | None = None) -> BillingPeriod:
    unit = unit or settings.INVOICE_PERIOD
    moment = moment.astimezone(UTC)
    if unit == "week":
        year, week, _ = moment.isocalendar()
        return period_from_key(f"{year}-W{week:02d}")
    return period_from_key(f"{moment.year}-{moment.month:02d}")


def period_just_closed(now: datetime | None = None, unit: str | None = None) -> BillingPeriod:
    """The last period that has ended by `now` (the one the scheduled run invoices)."""
    return period_containing(now or timezone.now(), unit).previous()

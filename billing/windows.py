"""Budget windows: when a budget's current window starts and ends, in its group's time zone.

Pure functions of (window, IANA time zone, moment): no database, so the gateway computes them on
the request path (gateway/budgets.py) exactly as the portal does (billing/selectors.py). Every
window starts at local midnight — a day, a week from Monday, a calendar month — and ends at the
next one, so a day across a daylight-saving change is 23 or 25 hours long. A lifetime window
starts at LIFETIME_START and never ends.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

DAILY, WEEKLY, MONTHLY, LIFETIME = "daily", "weekly", "monthly", "lifetime"
WINDOWS = (DAILY, WEEKLY, MONTHLY, LIFETIME)
LIFETIME_START = datetime(2000, 1, 1, tzinfo=UTC)


@lru_cache(maxsize=512)
def zone(name: str) -> ZoneInfo:
    """The time zone of this IANA name (UTC for an unknown one: groups are validated on save)."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def is_time_zone(name: str) -> bool:
    """True for an IANA time zone name zoneinfo knows (e.g. "Europe/Paris", "UTC")."""
    if not isinstance(name, str) or not name or name != name.strip():
        return False
    return name in _known_zones()


@lru_cache(maxsize=1)
def _known_zones() -> frozenset[str]:
    return frozenset(available_timezones() | {"UTC"})


def _midnight(day: date, tz: ZoneInfo) -> datetime:
    """Local midnight of `day` in `tz`, in UTC (a midnight a DST jump skips: the moment after)."""
    local = datetime(day.year, day.month, day.day, tzinfo=tz)
    moment = local.astimezone(UTC)
    # A wall time that does not exist maps back to another one: take the later reading.
    if moment.astimezone(tz).replace(tzinfo=None) != local.replace(tzinfo=None):
        moment = datetime(day.year, day.month, day.day, fold=1, tzinfo=tz).astimezone(UTC)
    return moment


def bounds(
    window: str, tz_name: str, now: datetime | None = None
) -> tuple[datetime, datetime | None]:
    """[start, end) of the window containing `now` (aware, UTC); end is None for lifetime."""
    if window == LIFETIME:
        return LIFETIME_START, None
    tz = zone(tz_name)
    moment = now or datetime.now(UTC)
    today = moment.astimezone(tz).date()
    if window == DAILY:
        first, after = today, today + timedelta(days=1)
    elif window == WEEKLY:
        first = today - timedelta(days=today.weekday())
        after = first + timedelta(days=7)
    elif window == MONTHLY:
        first = today.replace(day=1)
        after = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    else:
        raise ValueError(f"unknown budget window {window!r}")
    return _midnight(first, tz), _midnight(after, tz)

"""The spend of a budget in its current window, for alert evaluation.

`budget_window_spend` is a stand-in for `billing.selectors.budget_spend(budget, now)` (being built
with budget enforcement): same signature and meaning, so the lead can swap one for the other.
Windows start at midnight in the group's time zone: a day, a week from Monday, a calendar month,
or for ever (lifetime: from LIFETIME_START); built with zoneinfo, so a day across a
daylight-saving change is 23 or 25 hours long.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.db.models import Sum
from django.utils import timezone

from billing.models import Budget, BudgetWindow
from usage.models import UsageEvent

LIFETIME_START = datetime(2000, 1, 1, tzinfo=UTC)


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _midnight(day: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)


def window_bounds(window: str, time_zone: str, now: datetime) -> tuple[datetime, datetime | None]:
    """Return the [start, end) in UTC of the window containing `now`; end is None for lifetime."""
    tz = _zone(time_zone)
    today = now.astimezone(tz).date()
    if window == BudgetWindow.DAILY:
        first, following = today, today + timedelta(days=1)
    elif window == BudgetWindow.WEEKLY:
        first = today - timedelta(days=today.weekday())
        following = first + timedelta(days=7)
    elif window == BudgetWindow.MONTHLY:
        first = today.replace(day=1)
        following = (first + timedelta(days=32)).replace(day=1)
    else:
        return LIFETIME_START, None
    return _midnight(first, tz), _midnight(following, tz)


def budget_window_spend(
    budget: Budget, now: datetime | None = None
) -> tuple[int, datetime, datetime | None]:
    """Return (spent_micros, window_start, window_end) of the budget's window containing `now`:
    the sum of the usage events' costs of its group (or key) since the window's start."""
    now = now or timezone.now()
    start, end = window_bounds(budget.window, budget.group.time_zone, now)
    events = UsageEvent.objects.filter(group_id=budget.group_id, created_at__gte=start)
    if budget.api_key_id is not None:
        events = events.filter(api_key_id=budget.api_key_id)
    if end is not None:
        events = events.filter(created_at__lt=end)
    spent = events.aggregate(total=Sum("cost_micros"))["total"] or 0
    return int(spent), start, end

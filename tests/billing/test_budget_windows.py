"""Budget windows in a group's time zone, across daylight-saving changes (billing/windows.py),
and the spend selector the alerts build on (billing.selectors.budget_spend)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from billing import windows
from billing.models import Budget
from billing.selectors import budget_spend
from keys.services import api_key_create
from usage.models import AIModel, UsageEvent


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_daily_window_across_spring_forward_in_paris() -> None:
    # 2026-03-29: Paris goes from UTC+1 to UTC+2 at 02:00 local; the day lasts 23 hours.
    start, end = windows.bounds("daily", "Europe/Paris", utc(2026, 3, 29, 12))
    assert start == utc(2026, 3, 28, 23)  # midnight CET
    assert end == utc(2026, 3, 29, 22)  # midnight CEST
    assert (end - start).total_seconds() == 23 * 3600
    # The next window starts exactly where this one ended.
    assert windows.bounds("daily", "Europe/Paris", end)[0] == end
    assert windows.bounds("daily", "Europe/Paris", utc(2026, 3, 29, 21, 59, 59))[1] == end


def test_daily_window_across_fall_back_in_new_york() -> None:
    # 2026-11-01: New York goes from UTC-4 to UTC-5 at 02:00 local; the day lasts 25 hours.
    start, end = windows.bounds("daily", "America/New_York", utc(2026, 11, 1, 15))
    assert start == utc(2026, 11, 1, 4)
    assert end == utc(2026, 11, 2, 5)
    assert (end - start).total_seconds() == 25 * 3600
    # 03:30 UTC on Nov 1 is still Oct 31 in New York.
    assert windows.bounds("daily", "America/New_York", utc(2026, 11, 1, 3, 30))[1] == start


def test_weekly_starts_monday_and_monthly_across_dst() -> None:
    # Week of Monday 2026-10-19 .. Monday 2026-10-26 in Paris: DST ends on Sunday 25th.
    start, end = windows.bounds("weekly", "Europe/Paris", utc(2026, 10, 22, 9))
    assert start == utc(2026, 10, 18, 22)  # Monday 00:00 CEST
    assert end == utc(2026, 10, 25, 23)  # Monday 00:00 CET
    assert (end - start).total_seconds() == 7 * 86400 + 3600
    start, end = windows.bounds("monthly", "Europe/Paris", utc(2026, 3, 31, 22, 30))
    assert start == utc(2026, 3, 31, 22)  # April 1st, 00:00 CEST
    assert end == utc(2026, 4, 30, 22)
    start, end = windows.bounds("monthly", "UTC", utc(2026, 12, 31, 23, 59))
    assert (start, end) == (utc(2026, 12, 1), utc(2027, 1, 1))


def test_lifetime_and_time_zone_names() -> None:
    assert windows.bounds("lifetime", "Asia/Tokyo") == (windows.LIFETIME_START, None)
    assert windows.is_time_zone("Europe/Paris") and windows.is_time_zone("UTC")
    assert not windows.is_time_zone("Mars/Olympus") and not windows.is_time_zone("")
    assert not windows.is_time_zone("../etc/passwd")


@pytest.mark.django_db
def test_budget_spend_counts_the_window_in_the_group_time_zone(group) -> None:  # type: ignore[no-untyped-def]
    group.time_zone = "America/New_York"
    group.save()
    key = api_key_create(group=group, name="k").key
    other = api_key_create(group=group, name="other").key
    model = AIModel.objects.create(name="m", input_per_m=1)
    seq = iter(range(100))

    def usage_event(who, cost: int, at: datetime) -> None:  # type: ignore[no-untyped-def]
        UsageEvent.objects.create(
            request_id=f"r{next(seq)}", group=group, api_key=who, model=model,
            cost_micros=cost, created_at=at,
        )  # fmt: skip

    budget = Budget.objects.create(group=group, amount_micros=10_000, window="daily")
    key_budget = Budget.objects.create(
        group=group, api_key=key, amount_micros=10_000, window="daily"
    )
    # Nov 1 in New York runs 04:00 UTC Nov 1 .. 05:00 UTC Nov 2 (25 hours).
    usage_event(key, 100, utc(2026, 11, 1, 3, 59))  # Oct 31 local
    usage_event(key, 200, utc(2026, 11, 1, 4, 0))
    usage_event(other, 300, utc(2026, 11, 2, 4, 59))  # another key's, 23:59 EST
    usage_event(key, 400, utc(2026, 11, 2, 5, 0))  # Nov 2 local
    now = utc(2026, 11, 1, 12)
    assert budget_spend(budget, now) == (500, utc(2026, 11, 1, 4), utc(2026, 11, 2, 5))
    assert budget_spend(key_budget, now)[0] == 200

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from usage.periods import PeriodError, resolve_period

NOW = datetime(2026, 11, 25, 14, 37, tzinfo=UTC)


def test_last_24_hours_ends_with_the_current_hour():
    p = resolve_period(preset="24h", tz="UTC", now=NOW)
    assert p.granularity == "hour"
    assert p.end == datetime(2026, 11, 25, 15, tzinfo=UTC)
    assert p.start == datetime(2026, 11, 24, 15, tzinfo=UTC)
    buckets = p.buckets()
    assert len(buckets) == 24
    assert buckets[-1].start <= NOW < buckets[-1].end


def test_last_7_days_are_whole_local_days_including_today():
    p = resolve_period(preset="7d", tz="America/New_York", now=NOW)
    # 2026-11-25 14:37 UTC is 09:37 in New York (EST, UTC-5).
    assert p.start == datetime(2026, 11, 19, 5, tzinfo=UTC)
    assert p.end == datetime(2026, 11, 26, 5, tzinfo=UTC)
    assert [b.label for b in p.buckets()][0] == "Nov 19"
    assert len(p.buckets()) == 7


def test_daily_buckets_across_spring_forward_are_23_hours():
    p = resolve_period(preset="custom", start="2026-03-06", end="2026-03-09", tz="America/New_York")
    assert p.granularity == "day"
    lengths = [(b.end - b.start) for b in p.buckets()]
    assert lengths == [
        timedelta(hours=24),
        timedelta(hours=24),
        timedelta(hours=23),
        timedelta(hours=24),
    ]
    short = resolve_period(
        preset="custom", start="2026-03-07", end="2026-03-09", tz="America/New_York"
    )
    assert short.granularity == "hour"  # up to three days is drawn by the hour
    assert len(short.buckets()) == 71


def test_daily_buckets_across_fall_back_are_25_hours():
    p = resolve_period(preset="custom", start="2026-10-20", end="2026-10-31", tz="Europe/Berlin")
    assert p.granularity == "day"
    by_label = {b.label: b.end - b.start for b in p.buckets()}
    assert by_label["Oct 25"] == timedelta(hours=25)
    assert by_label["Oct 24"] == timedelta(hours=24)
    assert sum(by_label.values(), timedelta()) == p.end - p.start


def test_hourly_buckets_show_the_repeated_hour_twice():
    p = resolve_period(preset="custom", start="2026-10-25", end="2026-10-25", tz="Europe/Berlin")
    labels = [b.label for b in p.buckets()]
    assert len(labels) == 25
    assert len(set(labels)) == 25
    assert "Oct 25 02:00 (CEST)" in labels or "Oct 25 02:00 (CET)" in labels


def test_this_and_last_month_in_local_time():
    this = resolve_period(preset="this_month", tz="Asia/Tokyo", now=NOW)
    assert this.start == datetime(2026, 10, 31, 15, tzinfo=UTC)  # Nov 1 00:00 JST
    assert this.end == datetime(2026, 11, 30, 15, tzinfo=UTC)
    last = resolve_period(preset="last_month", tz="UTC", now=NOW)
    assert (last.start, last.end) == (
        datetime(2026, 10, 1, tzinfo=UTC),
        datetime(2026, 11, 1, tzinfo=UTC),
    )
    january = resolve_period(preset="last_month", tz="UTC", now=datetime(2026, 1, 10, tzinfo=UTC))
    assert january.start == datetime(2025, 12, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        ("2026-13-01", "2026-12-01", "is not a date"),
        ("yesterday", "2026-12-01", "is not a date"),
        ("2026-11-20", "2026-11-01", "end date is before the start"),
        ("2024-01-01", "2026-01-10", "at most 366 days"),
        ("1999-12-31", "2000-01-02", "2000 or later"),
        ("2026-11-20", "", "needs both"),
        ("2027-06-01", "2027-06-02", "in the future"),
    ],
)
def test_bad_custom_ranges_say_why(start, end, message):
    with pytest.raises(PeriodError, match=message):
        resolve_period(preset="custom", start=start, end=end, tz="UTC", now=NOW)


def test_unknown_preset_and_unknown_zone():
    with pytest.raises(PeriodError, match="Unknown range"):
        resolve_period(preset="forever", now=NOW)
    p = resolve_period(preset="7d", tz="Not/AZone", now=NOW)
    assert p.tz.key == "UTC"

"""Date ranges and chart buckets for usage pages, in the viewer's time zone.

A period is a half-open UTC interval [start, end) chosen by a preset or a custom pair of local
dates, plus the bucket size for charts: hours for spans up to three days, days beyond. Buckets
follow the viewer's wall clock, so a daily bucket on a daylight-saving day is 23 or 25 hours long
and an hourly chart across the autumn change shows the repeated hour twice (with its offset).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

PRESETS: dict[str, str] = {
    "24h": "Last 24 hours",
    "7d": "Last 7 days",
    "30d": "Last 30 days",
    "90d": "Last 90 days",
    "this_month": "This month",
    "last_month": "Last month",
    "custom": "Custom range",
}
DEFAULT_PRESET = "30d"
MAX_CUSTOM_DAYS = 366
HOURLY_MAX_SPAN = timedelta(days=3)
EARLIEST = date(2000, 1, 1)


class PeriodError(ValueError):
    """A range the user asked for that cannot be shown; the message says why.

    `field` names the input at fault ("range", "start" or "end"), for API errors.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Bucket:
    start: datetime  # UTC, inclusive
    end: datetime  # UTC, exclusive
    label: str  # wall-clock label in the viewer's zone


@dataclass(frozen=True)
class Period:
    start: datetime  # UTC, inclusive
    end: datetime  # UTC, exclusive
    preset: str
    tz: ZoneInfo
    granularity: str  # "hour" or "day"

    @property
    def local_start(self) -> datetime:
        return self.start.astimezone(self.tz)

    @property
    def local_end(self) -> datetime:
        return self.end.astimezone(self.tz)

    @property
    def label(self) -> str:
        first = self.local_start
        last = self.local_end - timedelta(microseconds=1)
        if self.granularity == "hour":
            return f"{first:%b %-d, %H:%M} – {self.local_end:%b %-d, %H:%M}"
        if first.date() == last.date():
            return f"{first:%b %-d, %Y}"
        return f"{first:%b %-d, %Y} – {last:%b %-d, %Y}"

    def buckets(self) -> list[Bucket]:
        """Return the chart buckets covering the period, in order."""
        if self.granularity == "hour":
            return self._hour_buckets()
        return self._day_buckets()

    def _hour_buckets(self) -> list[Bucket]:
        out: list[Bucket] = []
        cursor = self.start
        seen: set[str] = set()
        while cursor < self.end:
            nxt = cursor + timedelta(hours=1)
            local = cursor.astimezone(self.tz)
            label = f"{local:%b %-d %H:%M}"
            if label in seen:  # the repeated hour when clocks go back
                label = f"{label} ({local:%Z})"
            seen.add(label)
            out.append(Bucket(cursor, nxt, label))
            cursor = nxt
        return out

    def _day_buckets(self) -> list[Bucket]:
        out: list[Bucket] = []
        day = self.local_start.date()
        last = (self.local_end - timedelta(microseconds=1)).date()
        while day <= last:
            start = local_midnight(day, self.tz)
            end = local_midnight(day + timedelta(days=1), self.tz)
            out.append(Bucket(max(start, self.start), min(end, self.end), f"{day:%b %-d}"))
            day += timedelta(days=1)
        return out


def get_zone(name: str | None) -> ZoneInfo:
    """Return the named zone, or UTC for an empty or unknown name."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    """Return the UTC instant at which `day` starts on the wall clock of `tz`."""
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)


def _month_start(day: date) -> date:
    return day.replace(day=1)


def _next_month(day: date) -> date:
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1)


def _parse_date(value: str, name: str) -> date:
    try:
        parsed = date.fromisoformat(value.strip())
    except ValueError:
        raise PeriodError(
            f"The {name} date “{value}” is not a date like 2026-11-25.", field=name
        ) from None
    if parsed < EARLIEST:
        raise PeriodError(f"The {name} date must be in {EARLIEST.year} or later.", field=name)
    return parsed


def _span(start: datetime, end: datetime) -> str:
    return "hour" if end - start <= HOURLY_MAX_SPAN else "day"


def resolve_period(
    *,
    preset: str | None,
    start: str | None = None,
    end: str | None = None,
    tz: str | ZoneInfo | None = "UTC",
    now: datetime | None = None,
) -> Period:
    """Turn query parameters into a Period, or raise PeriodError with a message for the user."""
    zone = tz if isinstance(tz, ZoneInfo) else get_zone(tz)
    now = (now or datetime.now(UTC)).astimezone(UTC)
    if start or end:
        preset = "custom"
    preset = preset or DEFAULT_PRESET
    if preset not in PRESETS:
        raise PeriodError(
            f"Unknown range “{preset}”. Choose one of: {', '.join(PRESETS)}.", field="range"
        )
    today = now.astimezone(zone).date()

    if preset == "24h":
        local_now = now.astimezone(zone)
        # End at the end of the current wall-clock hour so the last bucket is "now".
        hour_start = local_now.replace(minute=0, second=0, microsecond=0).astimezone(UTC)
        end_utc = hour_start + timedelta(hours=1)
        return Period(end_utc - timedelta(hours=24), end_utc, preset, zone, "hour")
    if preset in {"7d", "30d", "90d"}:
        days = int(preset[:-1])
        first = today - timedelta(days=days - 1)
        s, e = local_midnight(first, zone), local_midnight(today + timedelta(days=1), zone)
        return Period(s, e, preset, zone, _span(s, e))
    if preset == "this_month":
        s = local_midnight(_month_start(today), zone)
        e = local_midnight(_next_month(today), zone)
        return Period(s, e, preset, zone, "day")
    if preset == "last_month":
        first = _month_start(_month_start(today) - timedelta(days=1))
        s = local_midnight(first, zone)
        e = local_midnight(_month_start(today), zone)
        return Period(s, e, preset, zone, "day")

    # custom: local dates, both inclusive
    if not start or not end:
        raise PeriodError(
            "A custom range needs both a start and an end date.", field="end" if start else "start"
        )
    first, last = _parse_date(start, "start"), _parse_date(end, "end")
    if last < first:
        raise PeriodError("The end date is before the start date.", field="end")
    if (last - first).days + 1 > MAX_CUSTOM_DAYS:
        raise PeriodError(f"A custom range can span at most {MAX_CUSTOM_DAYS} days.", field="end")
    if first > today + timedelta(days=1):
        raise PeriodError("The start date is in the future.", field="start")
    s, e = local_midnight(first, zone), local_midnight(last + timedelta(days=1), zone)
    return Period(s, e, "custom", zone, _span(s, e))

"""Usage numbers for the dashboards: rollups for what is rolled up, raw events for the rest.

One SQL round trip per view: UTC day rollups (when the viewer's zone is UTC and the chart is by
day), hourly rollups for the other complete hours, and raw events only after
`RollupState.rolled_through` (the last minute or two). Buckets follow the viewer's wall clock.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from django.db import connection

from keys.models import APIKey
from usage.models import AIModel
from usage.periods import Period
from usage.rollups import METRICS, floor_day, floor_hour, rolled_through

ZERO = dict.fromkeys(METRICS, 0)


@dataclass
class Totals:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    citation_tokens: int = 0
    reasoning_tokens: int = 0
    search_queries: int = 0
    cost_micros: int = 0

    def add(self, values: dict[str, int]) -> None:
        for metric in METRICS:
            setattr(self, metric, getattr(self, metric) + values[metric])

    @property
    def tokens(self) -> int:
        return (
            self.prompt_tokens
            + self.completion_tokens
            + self.citation_tokens
            + self.reasoning_tokens
        )


@dataclass
class Breakdown:
    label: str
    sublabel: str
    totals: Totals
    revoked: bool = False
    obj: Any = None


@dataclass
class Usage:
    period: Period
    totals: Totals
    labels: list[str]
    series: dict[str, list[int]]
    by_model: list[Breakdown] = field(default_factory=list)
    by_key: list[Breakdown] = field(default_factory=list)
    rows: list[tuple[Any, int, int, dict[str, int]]] = field(default_factory=list)


def _filters(key_id: int | None, model_id: int | None) -> str:
    sql = ""
    if key_id is not None:
        sql += " AND api_key_id = %(key)s"
    if model_id is not None:
        sql += " AND model_id = %(model)s"
    return sql


def usage_rows(
    *, group: Any, period: Period, key_id: int | None = None, model_id: int | None = None
) -> list:
    """Return (bucket, key id, model id, metrics…) rows for the period, in one query."""
    start, end = period.start, period.end
    through = rolled_through()
    cutoff = min(end, floor_hour(through)) if through else start
    cutoff = max(cutoff, start)
    by_day = period.granularity == "day"
    use_days = by_day and period.tz.key == "UTC"
    days_to = max(start, min(cutoff, floor_day(cutoff))) if use_days else start
    tz = period.tz.key
    if by_day:
        hour_bucket = "(start AT TIME ZONE %(tz)s)::date"
        raw_bucket = "(created_at AT TIME ZONE %(tz)s)::date"
        day_bucket = "(start AT TIME ZONE 'UTC')::date"
    else:
        hour_bucket, raw_bucket, day_bucket = "start", "date_trunc('hour', created_at)", "start"
    extra = _filters(key_id, model_id)
    sums = ", ".join(f"sum({m})" for m in METRICS)
    cols = ", ".join(METRICS)
    raw_cols = "1, " + ", ".join(METRICS[1:])
    sql = f"""
        SELECT b, api_key_id, model_id, {sums} FROM (
            SELECT {day_bucket} AS b, api_key_id, model_id, {cols} FROM usage_usagerollup
             WHERE group_id = %(group)s AND period = 'day' AND start >= %(d0)s AND start < %(d1)s{extra}
            UNION ALL
            SELECT {hour_bucket}, api_key_id, model_id, {cols} FROM usage_usagerollup
             WHERE group_id = %(group)s AND period = 'hour' AND start >= %(h0)s AND start < %(h1)s{extra}
            UNION ALL
            SELECT {raw_bucket}, api_key_id, model_id, {raw_cols} FROM usage_usageevent
             WHERE group_id = %(group)s AND created_at >= %(r0)s AND created_at < %(r1)s{extra}
        ) AS x GROUP BY 1, 2, 3
    """
    params = {
        "group": group.pk, "tz": tz, "key": key_id, "model": model_id,
        "d0": start, "d1": days_to, "h0": days_to, "h1": cutoff, "r0": cutoff, "r1": end,
    }  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def usage_for(
    *, group: Any, period: Period, key_id: int | None = None, model_id: int | None = None
) -> Usage:
    rows = usage_rows(group=group, period=period, key_id=key_id, model_id=model_id)
    buckets = period.buckets()
    if period.granularity == "day":
        index: dict[Any, int] = {
            b.start.astimezone(period.tz).date(): i for i, b in enumerate(buckets)
        }
    else:
        index = {b.start: i for i, b in enumerate(buckets)}
    series = {m: [0] * len(buckets) for m in ("requests", "tokens", "cost_micros")}
    totals = Totals()
    per_model: dict[int, Totals] = defaultdict(Totals)
    per_key: dict[int, Totals] = defaultdict(Totals)
    parsed = []
    for bucket, key, model, *values in rows:
        metrics = dict(zip(METRICS, (int(v or 0) for v in values), strict=True))
        parsed.append((bucket, key, model, metrics))
        totals.add(metrics)
        per_model[model].add(metrics)
        per_key[key].add(metrics)
        i = index.get(
            bucket
            if not isinstance(bucket, datetime) or period.granularity == "hour"
            else bucket.date()
        )
        if i is None:
            continue
        series["requests"][i] += metrics["requests"]
        series["tokens"][i] += sum(
            metrics[m]
            for m in ("prompt_tokens", "completion_tokens", "citation_tokens", "reasoning_tokens")
        )
        series["cost_micros"][i] += metrics["cost_micros"]
    models = {m.pk: m for m in AIModel.objects.filter(pk__in=per_model)}
    keys = {k.pk: k for k in APIKey.objects.filter(group=group, pk__in=per_key)}
    by_model = sorted(
        (
            Breakdown(models[m].name if m in models else "?", "", t, obj=models.get(m))
            for m, t in per_model.items()
        ),
        key=lambda b: (-b.totals.cost_micros, b.label),
    )
    by_key = sorted(
        (
            Breakdown(
                keys[k].name, keys[k].masked, t, revoked=keys[k].status == "revoked", obj=keys[k]
            )
            for k, t in per_key.items()
            if k in keys
        ),
        key=lambda b: (-b.totals.cost_micros, b.label),
    )
    return Usage(period, totals, [b.label for b in buckets], series, by_model, by_key, parsed)


def bucket_label(bucket: Any, period: Period) -> str:
    if isinstance(bucket, date) and not isinstance(bucket, datetime):
        return bucket.isoformat()
    return bucket.astimezone(period.tz).isoformat(timespec="minutes")


__all__ = ["ZERO", "Usage", "bucket_label", "timedelta", "usage_for", "usage_rows"]

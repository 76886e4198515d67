"""Usage numbers for the dashboards: rollups for what is rolled up, raw events for the rest.

One SQL round trip per view: UTC day rollups (when the viewer's zone is UTC and the chart is by
day), hourly rollups for the other complete hours, and raw events only after
`RollupState.rolled_through` (the last minute or two). Buckets follow the viewer's wall clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from django.db import connection
from django.db.models import QuerySet

from keys.models import APIKey
from usage.metrics import SUMS, TOKENS_SQL, tokens_of
from usage.models import AIModel, UsageEvent
from usage.periods import Period
from usage.rollups import floor_day, floor_hour, rolled_through


@dataclass
class Totals:
    """Sums of usage: the fields are usage.metrics.SUMS, in order (tests/usage/test_metrics.py)."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    citation_tokens: int = 0
    reasoning_tokens: int = 0
    search_queries: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_micros: int = 0

    def add(self, values: dict[str, int]) -> None:
        for metric in SUMS:
            setattr(self, metric, getattr(self, metric) + values[metric])

    @property
    def tokens(self) -> int:
        return tokens_of(self)


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


def _filters(key_id: int | None, model_id: int | None) -> str:
    sql = ""
    if key_id is not None:
        sql += " AND api_key_id = %(key)s"
    if model_id is not None:
        sql += " AND model_id = %(model)s"
    return sql


@dataclass(frozen=True)
class Spans:
    """[start, end) cut into what each table answers exactly."""

    h0: datetime  # hourly rollups [h0, d0)
    d0: datetime  # daily rollups [d0, d1)
    d1: datetime  # hourly rollups [d1, cutoff)
    cutoff: datetime  # raw events [cutoff, end)
    end: datetime


def spans(period: Period) -> Spans:
    start, end = period.start, period.end
    through = rolled_through()
    cutoff = max(start, min(end, floor_hour(through))) if through else start
    first_midnight = (
        floor_day(start) if floor_day(start) == start else floor_day(start) + timedelta(days=1)
    )
    d0 = min(max(start, first_midnight), cutoff)
    d1 = max(d0, floor_day(cutoff))
    return Spans(start, d0, d1, cutoff, end)


def _params(group: Any, period: Period, s: Spans, key_id: int | None, model_id: int | None) -> dict:
    return {
        "group": group.pk, "tz": period.tz.key, "key": key_id, "model": model_id,
        "h0": s.h0, "d0": s.d0, "d1": s.d1, "cutoff": s.cutoff, "end": s.end,
    }  # fmt: skip


def _breakdown_sql(extra: str, select: str, group_by: str) -> str:
    cols = ", ".join(SUMS)
    raw_cols = "1 AS requests, " + ", ".join(SUMS[1:])
    sums = ", ".join(f"sum({m})" for m in SUMS)
    return f"""
        SELECT {select}, {sums} FROM (
            SELECT start, api_key_id, model_id, {cols} FROM usage_usagerollup
             WHERE group_id = %(group)s AND period = 'hour'
               AND ((start >= %(h0)s AND start < %(d0)s) OR (start >= %(d1)s AND start < %(cutoff)s)){extra}
            UNION ALL
            SELECT start, api_key_id, model_id, {cols} FROM usage_usagerollup
             WHERE group_id = %(group)s AND period = 'day' AND start >= %(d0)s AND start < %(d1)s{extra}
            UNION ALL
            SELECT created_at, api_key_id, model_id, {raw_cols} FROM usage_usageevent
             WHERE group_id = %(group)s AND created_at >= %(cutoff)s AND created_at < %(end)s{extra}
        ) AS x GROUP BY {group_by}
    """


def usage_rows(
    *, group: Any, period: Period, key_id: int | None = None, model_id: int | None = None
) -> list:
    """(bucket, key id, model id, metrics…) rows for CSV export; buckets on the viewer's clock.

    Daily rollups are UTC days, so for exports by day in another zone the hourly rollups are read.
    """
    s = spans(period)
    if period.granularity == "day" and period.tz.key != "UTC":
        s = Spans(s.h0, s.cutoff, s.cutoff, s.cutoff, s.end)  # hourly rollups only
    bucket = (
        "(start AT TIME ZONE %(tz)s)::date"
        if period.granularity == "day"
        else "date_trunc('hour', start)"
    )
    sql = _breakdown_sql(
        _filters(key_id, model_id), f"{bucket} AS b, api_key_id, model_id", "1, 2, 3"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, _params(group, period, s, key_id, model_id))
        return cursor.fetchall()


def _totals_by_key_and_model(
    group: Any, period: Period, s: Spans, key_id: int | None, model_id: int | None
) -> list:
    sql = _breakdown_sql(
        _filters(key_id, model_id),
        "GROUPING(api_key_id) AS by_model, api_key_id, model_id",
        "GROUPING SETS ((api_key_id), (model_id))",
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, _params(group, period, s, key_id, model_id))
        return cursor.fetchall()


def _series(group: Any, period: Period, s: Spans, key_id: int | None, model_id: int | None) -> list:
    bucket = "(start AT TIME ZONE %(tz)s)::date" if period.granularity == "day" else "start"
    raw_bucket = (
        "(created_at AT TIME ZONE %(tz)s)::date"
        if period.granularity == "day"
        else "date_trunc('hour', created_at)"
    )
    extra = _filters(key_id, model_id)
    tokens = TOKENS_SQL
    if extra:  # a key or model filter needs the detailed hourly rollups
        rolled = f"""SELECT {bucket} AS b, requests, {tokens} AS tokens, cost_micros FROM usage_usagerollup
                     WHERE group_id = %(group)s AND period = 'hour' AND start >= %(h0)s AND start < %(cutoff)s{extra}"""
    else:
        rolled = f"""SELECT {bucket} AS b, requests, {tokens} AS tokens, cost_micros FROM usage_usagegrouphour
                     WHERE group_id = %(group)s AND start >= %(h0)s AND start < %(cutoff)s"""
    sql = f"""
        SELECT b, sum(requests), sum(tokens), sum(cost_micros) FROM (
            {rolled}
            UNION ALL
            SELECT {raw_bucket}, 1, {tokens}, cost_micros FROM usage_usageevent
             WHERE group_id = %(group)s AND created_at >= %(cutoff)s AND created_at < %(end)s{extra}
        ) AS x GROUP BY 1
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, _params(group, period, s, key_id, model_id))
        return cursor.fetchall()


def usage_for(
    *, group: Any, period: Period, key_id: int | None = None, model_id: int | None = None
) -> Usage:
    """Totals, chart series and breakdowns for the dashboard, in two small queries."""
    s = spans(period)
    buckets = period.buckets()
    if period.granularity == "day":
        index: dict[Any, int] = {
            b.start.astimezone(period.tz).date(): i for i, b in enumerate(buckets)
        }
    else:
        index = {b.start: i for i, b in enumerate(buckets)}
    series = {m: [0] * len(buckets) for m in ("requests", "tokens", "cost_micros")}
    for bucket, requests, tokens, cost in _series(group, period, s, key_id, model_id):
        i = index.get(bucket)
        if i is not None:
            series["requests"][i] += int(requests)
            series["tokens"][i] += int(tokens or 0)
            series["cost_micros"][i] += int(cost or 0)
    totals = Totals()
    per_model: dict[int, Totals] = {}
    per_key: dict[int, Totals] = {}
    for by_model, key, model, *values in _totals_by_key_and_model(
        group, period, s, key_id, model_id
    ):
        t = Totals(*(int(v or 0) for v in values))
        if by_model:
            per_model[model] = t
            totals.add(vars(t))
        else:
            per_key[key] = t
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
    return Usage(period, totals, [b.label for b in buckets], series, by_model, by_key)


def bucket_label(bucket: Any, period: Period) -> str:
    if isinstance(bucket, date) and not isinstance(bucket, datetime):
        return bucket.isoformat()
    return bucket.astimezone(period.tz).isoformat(timespec="minutes")


def ai_model_named(name: str) -> AIModel | None:
    """Return the catalogue's model with this name, or None."""
    return AIModel.objects.filter(name=name).first()


def ai_model_names() -> dict[int, str]:
    """Every model's name by id (disabled ones too: old usage names them)."""
    return dict(AIModel.objects.values_list("pk", "name"))


def usage_events_for(
    *, group: Any, period: Period, key: APIKey | None = None, model: AIModel | None = None
) -> QuerySet[UsageEvent]:
    """The group's usage events in the period, of one key and one model if given."""
    events = UsageEvent.objects.filter(
        group=group, created_at__gte=period.start, created_at__lt=period.end
    )
    if key is not None:
        events = events.filter(api_key=key)
    if model is not None:
        events = events.filter(model=model)
    return events

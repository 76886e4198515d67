"""Usage numbers for the dashboards: rollups for what is rolled up, raw events for the rest.

One SQL round trip per view: UTC day rollups (when the viewer's zone is UTC and the chart is by
day), hourly rollups for the other complete hours, and raw events only after
`RollupState.rolled_through` (the last minute or two). Buckets follow the viewer's wall clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import orjson
from django.db.models import QuerySet

from core.replica import read_connection
from keys.models import APIKey
from usage.attribution import NONE, OTHER
from usage.metrics import API_LABELS, SUMS, TOKENS_SQL, tokens_of
from usage.models import AIModel, ToolPrice, UsageEvent
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
    by_api: list[Breakdown] = field(default_factory=list)
    by_tool: list[ToolUse] = field(default_factory=list)
    by_end_user: list[Breakdown] = field(default_factory=list)
    by_tag: list[Breakdown] = field(default_factory=list)


@dataclass
class ToolUse:
    """Invocations of one tool of the Agent API and their fees, in micro-dollars."""

    tool: str
    invocations: int = 0
    cost_micros: int = 0


@dataclass(frozen=True)
class Filters:
    """The dashboard's filters: one key, one model, one API, the requests that called one tool.

    The rollups keep no trace of which requests called which tool, so with a tool filter every
    number is read from the raw events (`raw_spans`); `rolled` then excludes the rollup rows.
    """

    key_id: int | None = None
    model_id: int | None = None
    api: str | None = None
    tool: str | None = None
    end_user: str | None = None  # the requests of this end user (usage.attribution)
    tag: tuple[str, str] | None = None  # the requests carrying this tag (key, value)

    @property
    def raw_only(self) -> bool:
        """Numbers only the raw events can answer (the rollups do not keep which requests
        called a tool, or were for an end user or carried a tag together with the rest)."""
        return self.tool is not None or self.end_user is not None or self.tag is not None

    @property
    def any(self) -> bool:
        return self.raw_only or bool(self._common())

    def _common(self) -> str:
        sql = ""
        if self.key_id is not None:
            sql += " AND api_key_id = %(key)s"
        if self.model_id is not None:
            sql += " AND model_id = %(model)s"
        if self.api is not None:
            sql += " AND api = %(api)s"
        return sql

    @property
    def rolled(self) -> str:
        """The WHERE tail for rollup tables."""
        return self._common() + (" AND false" if self.raw_only else "")

    @property
    def raw(self) -> str:
        """The WHERE tail for usage events."""
        sql = self._common() + (" AND tool_calls ? %(tool)s" if self.tool is not None else "")
        if self.end_user is not None:
            sql += " AND end_user = %(end_user)s"
        if self.tag is not None:
            sql += " AND tags @> %(tag)s::jsonb"
        return sql

    def params(self) -> dict[str, Any]:
        return {
            "key": self.key_id, "model": self.model_id, "api": self.api, "tool": self.tool,
            "end_user": self.end_user,
            "tag": orjson.dumps({self.tag[0]: self.tag[1]}).decode() if self.tag else None,
        }  # fmt: skip


@dataclass(frozen=True)
class Spans:
    """[start, end) cut into what each table answers exactly."""

    h0: datetime  # hourly rollups [h0, d0)
    d0: datetime  # daily rollups [d0, d1)
    d1: datetime  # hourly rollups [d1, cutoff)
    cutoff: datetime  # raw events [cutoff, end)
    end: datetime


def spans(period: Period, filters: Filters | None = None) -> Spans:
    """Cut the period between the rollups and the raw events; a tool filter reads raw events
    only (Filters)."""
    start, end = period.start, period.end
    if filters is not None and filters.raw_only:
        return Spans(start, start, start, start, end)
    through = rolled_through()
    cutoff = max(start, min(end, floor_hour(through))) if through else start
    first_midnight = (
        floor_day(start) if floor_day(start) == start else floor_day(start) + timedelta(days=1)
    )
    d0 = min(max(start, first_midnight), cutoff)
    d1 = max(d0, floor_day(cutoff))
    return Spans(start, d0, d1, cutoff, end)


def _params(group: Any, period: Period, s: Spans, f: Filters) -> dict:
    return {
        "group": group.pk, "tz": period.tz.key, **f.params(),
        "h0": s.h0, "d0": s.d0, "d1": s.d1, "cutoff": s.cutoff, "end": s.end,
    }  # fmt: skip


def _breakdown_sql(f: Filters, select: str, group_by: str) -> str:
    cols = ", ".join(SUMS)
    raw_cols = "1 AS requests, " + ", ".join(SUMS[1:])
    sums = ", ".join(f"sum({m})" for m in SUMS)
    return f"""
        SELECT {select}, {sums} FROM (
            SELECT start, api_key_id, model_id, api, {cols} FROM usage_usagerollup
             WHERE group_id = %(group)s AND period = 'hour'
               AND ((start >= %(h0)s AND start < %(d0)s) OR (start >= %(d1)s AND start < %(cutoff)s)){f.rolled}
            UNION ALL
            SELECT start, api_key_id, model_id, api, {cols} FROM usage_usagerollup
             WHERE group_id = %(group)s AND period = 'day' AND start >= %(d0)s AND start < %(d1)s{f.rolled}
            UNION ALL
            SELECT created_at, api_key_id, model_id, api, {raw_cols} FROM usage_usageevent
             WHERE group_id = %(group)s AND created_at >= %(cutoff)s AND created_at < %(end)s{f.raw}
        ) AS x GROUP BY {group_by}
    """


def _export_spans(period: Period, f: Filters) -> Spans:
    s = spans(period, f)
    if period.granularity == "day" and period.tz.key != "UTC":
        s = Spans(s.h0, s.cutoff, s.cutoff, s.cutoff, s.end)  # hourly rollups only
    return s


def _export_bucket(period: Period) -> str:
    if period.granularity == "day":
        return "(start AT TIME ZONE %(tz)s)::date"
    return "date_trunc('hour', start)"


def usage_rows(
    *, group: Any, period: Period, key_id: int | None = None, model_id: int | None = None,
    api: str | None = None, tool: str | None = None, end_user: str | None = None,
    tag: tuple[str, str] | None = None,
) -> list:  # fmt: skip
    """(bucket, key id, model id, API, metrics…) rows for CSV export; buckets on the viewer's
    clock.

    Daily rollups are UTC days, so for exports by day in another zone the hourly rollups are read.
    """
    f = Filters(key_id, model_id, api, tool, end_user, tag)
    s = _export_spans(period, f)
    sql = _breakdown_sql(
        f, f"{_export_bucket(period)} AS b, api_key_id, model_id, api", "1, 2, 3, 4"
    )
    with read_connection().cursor() as cursor:
        cursor.execute(sql, _params(group, period, s, f))
        return cursor.fetchall()


def tool_rows(
    *, group: Any, period: Period, key_id: int | None = None, model_id: int | None = None,
    api: str | None = None, tool: str | None = None, end_user: str | None = None,
    tag: tuple[str, str] | None = None,
) -> list:  # fmt: skip
    """(bucket, key id, model id, API, tool, invocations, cost micros) rows for CSV export."""
    f = Filters(key_id, model_id, api, tool, end_user, tag)
    s = _export_spans(period, f)
    sql = _tool_sql(
        f, f"{_export_bucket(period)} AS b, api_key_id, model_id, api, tool", "1, 2, 3, 4, 5"
    )
    with read_connection().cursor() as cursor:
        cursor.execute(sql, _params(group, period, s, f))
        return cursor.fetchall()


def _tool_sql(f: Filters, select: str, group_by: str) -> str:
    """Tool invocations and fees: tool rollups for what is rolled up, the events' tool_calls
    after (the same spans as _breakdown_sql)."""
    return f"""
        SELECT {select}, sum(invocations), sum(cost_micros) FROM (
            SELECT start, api_key_id, model_id, api, tool, invocations, cost_micros
              FROM usage_usagetoolrollup
             WHERE group_id = %(group)s AND period = 'hour'
               AND ((start >= %(h0)s AND start < %(d0)s) OR (start >= %(d1)s AND start < %(cutoff)s)){f.rolled}
            UNION ALL
            SELECT start, api_key_id, model_id, api, tool, invocations, cost_micros
              FROM usage_usagetoolrollup
             WHERE group_id = %(group)s AND period = 'day' AND start >= %(d0)s AND start < %(d1)s{f.rolled}
            UNION ALL
            SELECT created_at, api_key_id, model_id, api, t.key,
                   (t.value->>'invocations')::bigint, (t.value->>'cost_micros')::bigint
              FROM usage_usageevent, jsonb_each(tool_calls) AS t
             WHERE group_id = %(group)s AND created_at >= %(cutoff)s AND created_at < %(end)s{f.raw}
        ) AS x GROUP BY {group_by}
    """


def _totals_by_key_and_model(group: Any, period: Period, s: Spans, f: Filters) -> list:
    sql = _breakdown_sql(
        f,
        "GROUPING(api_key_id, model_id, api) AS grouping, api_key_id, model_id, api",
        "GROUPING SETS ((api_key_id), (model_id), (api))",
    )
    with read_connection().cursor() as cursor:
        cursor.execute(sql, _params(group, period, s, f))
        return cursor.fetchall()


def _series(group: Any, period: Period, s: Spans, f: Filters) -> list:
    bucket = "(start AT TIME ZONE %(tz)s)::date" if period.granularity == "day" else "start"
    raw_bucket = (
        "(created_at AT TIME ZONE %(tz)s)::date"
        if period.granularity == "day"
        else "date_trunc('hour', created_at)"
    )
    tokens = TOKENS_SQL
    if f.rolled:  # a key, model or API filter needs the detailed hourly rollups
        rolled = f"""SELECT {bucket} AS b, requests, {tokens} AS tokens, cost_micros FROM usage_usagerollup
                     WHERE group_id = %(group)s AND period = 'hour' AND start >= %(h0)s AND start < %(cutoff)s{f.rolled}"""
    else:
        rolled = f"""SELECT {bucket} AS b, requests, {tokens} AS tokens, cost_micros FROM usage_usagegrouphour
                     WHERE group_id = %(group)s AND start >= %(h0)s AND start < %(cutoff)s"""
    sql = f"""
        SELECT b, sum(requests), sum(tokens), sum(cost_micros) FROM (
            {rolled}
            UNION ALL
            SELECT {raw_bucket}, 1, {tokens}, cost_micros FROM usage_usageevent
             WHERE group_id = %(group)s AND created_at >= %(cutoff)s AND created_at < %(end)s{f.raw}
        ) AS x GROUP BY 1
    """
    with read_connection().cursor() as cursor:
        cursor.execute(sql, _params(group, period, s, f))
        return cursor.fetchall()


def _chart_series(
    group: Any, period: Period, s: Any, f: Filters, buckets: list
) -> dict[str, list[int]]:
    """Requests, tokens and cost per bucket of the chart."""
    if period.granularity == "day":
        index: dict[Any, int] = {
            b.start.astimezone(period.tz).date(): i for i, b in enumerate(buckets)
        }
    else:
        index = {b.start: i for i, b in enumerate(buckets)}
    series = {m: [0] * len(buckets) for m in ("requests", "tokens", "cost_micros")}
    for bucket, requests, tokens, cost in _series(group, period, s, f):
        i = index.get(bucket)
        if i is not None:
            series["requests"][i] += int(requests)
            series["tokens"][i] += int(tokens or 0)
            series["cost_micros"][i] += int(cost or 0)
    return series


def _by_tool(group: Any, period: Period, s: Any, f: Filters) -> list[ToolUse]:
    """Invocations and fees per tool, most expensive first."""
    sql = _tool_sql(f, "tool", "1")
    with read_connection().cursor() as cursor:
        cursor.execute(sql, _params(group, period, s, f))
        return sorted(
            (ToolUse(tool, int(n or 0), int(c or 0)) for tool, n, c in cursor.fetchall()),
            key=lambda t: (-t.cost_micros, t.tool),
        )


def usage_for(
    *, group: Any, period: Period, key_id: int | None = None, model_id: int | None = None,
    api: str | None = None, tool: str | None = None, end_user: str | None = None,
    tag: tuple[str, str] | None = None, tag_key: str | None = None,
) -> Usage:  # fmt: skip
    """Totals, chart series and breakdowns for the dashboard, in three small queries.

    With a tool, every number is about the requests that called that tool (their tokens, their
    cost, the invocations of every tool they called), read from the raw events.
    """
    f = Filters(key_id, model_id, api, tool, end_user, tag)
    s = spans(period, f)
    buckets = period.buckets()
    series = _chart_series(group, period, s, f, buckets)
    totals = Totals()
    per_model: dict[int, Totals] = {}
    per_key: dict[int, Totals] = {}
    per_api: dict[str, Totals] = {}
    # GROUPING(key, model, api) sets the bit of each column not grouped by (key is the high
    # bit): 0b011 = by key, 0b101 = by model, 0b110 = by API.
    for grouping, key, model, api_name, *values in _totals_by_key_and_model(group, period, s, f):
        t = Totals(*(int(v or 0) for v in values))
        if grouping == 0b101:
            per_model[model] = t
            totals.add(vars(t))
        elif grouping == 0b011:
            per_key[key] = t
        else:
            per_api[api_name] = t
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
    by_api = sorted(
        (Breakdown(API_LABELS.get(a, a), a, t, obj=a) for a, t in per_api.items()),
        key=lambda b: (-b.totals.cost_micros, b.label),
    )
    by_tool = _by_tool(group, period, s, f)
    by_end_user, by_tag = by_dimensions(
        group=group, period=period, f=f, totals=totals, tag_key=tag_key, s=s
    )
    return Usage(
        period, totals, [b.label for b in buckets], series, by_model, by_key, by_api, by_tool,
        by_end_user, by_tag,
    )  # fmt: skip


# A breakdown by end user or tag lists at most this many rows; the rest are summed as "(other)"
# (the rollups hold at most the capped names, but the last minutes' raw events and a filtered
# view read raw values).
DIMENSION_ROWS = 100


def _dimension_sql(f: Filters, tag_key: str | None) -> str:
    """End-user and tag sums by (dimension, value): the dimension rollups for what is rolled up
    (only when no other filter is set: they are summed by group alone), raw events after (or
    throughout). With `tag_key`, only that key's tags."""
    cols = ", ".join(SUMS)
    raw_sums = ", ".join(f"e.{m}" for m in SUMS[1:])
    prefix = (
        " AND (dimension = 'end_user' OR starts_with(value, %(tag_prefix)s))" if tag_key else ""
    )
    only = " AND t.key = %(tag_key)s" if tag_key else ""
    raw = """ FROM usage_usageevent e{join}
             WHERE group_id = %(group)s AND created_at >= %(cutoff)s AND created_at < %(end)s"""
    return f"""
        SELECT dimension, value, {", ".join(f"sum({m})" for m in SUMS)} FROM (
            SELECT dimension, value, {cols} FROM usage_usagedimensionrollup
             WHERE group_id = %(group)s AND period = 'hour'
               AND ((start >= %(h0)s AND start < %(d0)s) OR (start >= %(d1)s AND start < %(cutoff)s)){prefix}
            UNION ALL
            SELECT dimension, value, {cols} FROM usage_usagedimensionrollup
             WHERE group_id = %(group)s AND period = 'day'
               AND start >= %(d0)s AND start < %(d1)s{prefix}
            UNION ALL
            SELECT 'end_user', e.end_user, 1, {raw_sums}{raw.format(join="")}
               AND end_user IS NOT NULL{f.raw}
            UNION ALL
            SELECT 'tag', t.key || '=' || t.value, 1, {raw_sums}{raw.format(join=", jsonb_each_text(e.tags) AS t")}
               AND tags <> '{{}}'::jsonb{only}{f.raw}
        ) AS x GROUP BY 1, 2
    """


def by_dimensions(
    *, group: Any, period: Period, f: Filters, totals: Totals, tag_key: str | None = None,
    s: Spans | None = None,
) -> tuple[list[Breakdown], list[Breakdown]]:  # fmt: skip
    """Usage by end user and by tag ("key=value" rows; with `tag_key`, only that key's values),
    most expensive first, beyond DIMENSION_ROWS rows summed as "(other)"; in one query.

    By end user, and by tag with a `tag_key`, a last row "(none)" holds the requests without a
    value (the totals minus the rows), so the rows add up to the totals exactly. Without a
    `tag_key`, a request counts under each of its tags and untagged ones are not listed.
    """
    s = s or spans(period, f)
    if f.any:  # the dimension rollups are summed per group only: read the raw events
        s = Spans(period.start, period.start, period.start, period.start, period.end)
    params = {
        **_params(group, period, s, f), "tag_key": tag_key,
        "tag_prefix": f"{tag_key}=" if tag_key else None,
    }  # fmt: skip
    found: dict[str, dict[str, Totals]] = {"end_user": {}, "tag": {}}
    with read_connection().cursor() as cursor:
        cursor.execute(_dimension_sql(f, tag_key), params)
        for dimension, value, *values in cursor:
            found[dimension][value] = Totals(*(int(v or 0) for v in values))
    return (
        _dimension_rows(found["end_user"], totals),
        _dimension_rows(found["tag"], totals if tag_key else None),
    )


def _dimension_rows(found: dict[str, Totals], totals: Totals | None) -> list[Breakdown]:
    rows = sorted(found.items(), key=lambda item: (-item[1].cost_micros, item[0]))
    kept = rows[:DIMENSION_ROWS]
    if len(rows) > DIMENSION_ROWS:
        other = Totals()
        for _, t in rows[DIMENSION_ROWS:]:
            other.add(vars(t))
        kept.append((OTHER, other))
    out = [Breakdown(value, "", t, obj=value) for value, t in kept]
    if totals is not None:
        rest = Totals(**vars(totals))
        for _, t in rows:
            rest.add({m: -getattr(t, m) for m in SUMS})
        if rest.requests:
            out.append(Breakdown(NONE, "", rest, obj=None))
    return out


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
    *,
    group: Any,
    period: Period,
    key: APIKey | None = None,
    model: AIModel | None = None,
    api: str | None = None,
    tool: str | None = None,
    end_user: str | None = None,
    tag: tuple[str, str] | None = None,
) -> QuerySet[UsageEvent]:
    """The group's usage events in the period, of one key, one model and one API if given, and
    that called one tool if given."""
    events = UsageEvent.objects.filter(
        group=group, created_at__gte=period.start, created_at__lt=period.end
    )
    if key is not None:
        events = events.filter(api_key=key)
    if model is not None:
        events = events.filter(model=model)
    if api is not None:
        events = events.filter(api=api)
    if tool is not None:
        events = events.filter(tool_calls__has_key=tool)
    if end_user is not None:
        events = events.filter(end_user=end_user)
    if tag is not None:
        events = events.filter(tags__contains={tag[0]: tag[1]})
    return events


def tool_names() -> list[str]:
    """Every tool of the catalogue by name (disabled ones too: old usage names them)."""
    return list(ToolPrice.objects.order_by("name").values_list("name", flat=True))

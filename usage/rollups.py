"""Hourly and daily rollups of usage events, recomputed by whole periods (so always exact).

`rollup_range` recomputes every UTC hour that overlaps [since, until) straight from the raw
events and upserts the sums, then rebuilds the UTC days touched from those hours. Running it twice
changes nothing, and an event that arrives late for an hour is counted the next time that hour is
recomputed. The Celery task `usage.tasks.rollup_recent` recomputes the last two hours every minute
and records `RollupState.rolled_through`: every event created before it is in the rollups.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from usage.metrics import SUMS
from usage.models import RollupState

METRICS = SUMS  # the summed columns of every rollup table, "requests" first
# Events are committed within a moment of their created_at; this margin covers that moment.
COMMIT_MARGIN = timedelta(seconds=5)

_SUMS = ", ".join(f"sum({m})" for m in METRICS[1:])
_SET = ", ".join(f"{m} = EXCLUDED.{m}" for m in METRICS)

HOURS_SQL = f"""
INSERT INTO usage_usagerollup (period, start, group_id, api_key_id, model_id, api, {", ".join(METRICS)})
SELECT 'hour', date_trunc('hour', created_at), group_id, api_key_id, model_id, api, count(*), {_SUMS}
FROM usage_usageevent
WHERE created_at >= %(since)s AND created_at < %(until)s
GROUP BY 2, 3, 4, 5, 6
ON CONFLICT (period, group_id, start, api_key_id, model_id, api) DO UPDATE SET {_SET}
"""

DAYS_SQL = f"""
INSERT INTO usage_usagerollup (period, start, group_id, api_key_id, model_id, api, {", ".join(METRICS)})
SELECT 'day', date_trunc('day', start), group_id, api_key_id, model_id, api, {", ".join(f"sum({m})" for m in METRICS)}
FROM usage_usagerollup
WHERE period = 'hour' AND start >= %(since)s AND start < %(until)s
GROUP BY 2, 3, 4, 5, 6
ON CONFLICT (period, group_id, start, api_key_id, model_id, api) DO UPDATE SET {_SET}
"""

# Per tool: the events' `tool_calls` ({tool: {"invocations": n, "cost_micros": c}}) summed.
TOOL_HOURS_SQL = """
INSERT INTO usage_usagetoolrollup
    (period, start, group_id, api_key_id, model_id, api, tool, invocations, cost_micros)
SELECT 'hour', date_trunc('hour', e.created_at), e.group_id, e.api_key_id, e.model_id, e.api,
       t.key, sum((t.value->>'invocations')::bigint), sum((t.value->>'cost_micros')::bigint)
FROM usage_usageevent e, jsonb_each(e.tool_calls) AS t
WHERE e.created_at >= %(since)s AND e.created_at < %(until)s AND e.tool_calls <> '{}'::jsonb
GROUP BY 2, 3, 4, 5, 6, 7
ON CONFLICT (period, group_id, start, api_key_id, model_id, api, tool)
DO UPDATE SET invocations = EXCLUDED.invocations, cost_micros = EXCLUDED.cost_micros
"""

TOOL_DAYS_SQL = """
INSERT INTO usage_usagetoolrollup
    (period, start, group_id, api_key_id, model_id, api, tool, invocations, cost_micros)
SELECT 'day', date_trunc('day', start), group_id, api_key_id, model_id, api, tool,
       sum(invocations), sum(cost_micros)
FROM usage_usagetoolrollup
WHERE period = 'hour' AND start >= %(since)s AND start < %(until)s
GROUP BY 2, 3, 4, 5, 6, 7
ON CONFLICT (period, group_id, start, api_key_id, model_id, api, tool)
DO UPDATE SET invocations = EXCLUDED.invocations, cost_micros = EXCLUDED.cost_micros
"""


GROUP_HOURS_SQL = f"""
INSERT INTO usage_usagegrouphour (group_id, start, {", ".join(METRICS)})
SELECT group_id, start, {", ".join(f"sum({m})" for m in METRICS)}
FROM usage_usagerollup
WHERE period = 'hour' AND start >= %(since)s AND start < %(until)s
GROUP BY 1, 2
ON CONFLICT (group_id, start) DO UPDATE SET {_SET}
"""


# --- by end user and by tag (usage.attribution) ---------------------------------------------
# Bounded cardinality: per group and UTC day, UsageDimensionName admits the first end users, tag
# keys and tag pairs seen (in order of their first request), up to the settings'
# USAGE_END_USERS_PER_DAY, USAGE_TAG_KEYS_PER_DAY and USAGE_TAGS_PER_DAY; names are only ever
# added, so a value's bucket never changes once rolled up. UsageDimensionRollup rows: an admitted
# end user under its name, any other as "(other)"; a tag pair "key=value" when admitted,
# "key=(other)" when only its key is, "(other)" when not even its key is. So a group-day has at
# most N + 1 end-user rows and M + K + 1 tag rows, whatever clients send.

_DAY = "date_trunc('day', e.created_at)"
_RANGE = "e.created_at >= %(since)s AND e.created_at < %(until)s"
_NAMED = """EXISTS (SELECT 1 FROM usage_usagedimensionname n WHERE n.group_id = e.group_id
            AND n.day = {day} AND n.dimension = '{dimension}' AND n.value = {value})"""
# Candidates per dimension: (group_id, day, value, created_at) of the events in range.
_CANDIDATES = {
    "end_user": f"""SELECT e.group_id, {_DAY} AS day, e.end_user AS value, e.created_at AS at
        FROM usage_usageevent e WHERE {_RANGE} AND e.end_user IS NOT NULL""",
    "tag_key": f"""SELECT e.group_id, {_DAY} AS day, t.key AS value, e.created_at AS at
        FROM usage_usageevent e, jsonb_each_text(e.tags) AS t
        WHERE {_RANGE} AND e.tags <> '{{}}'::jsonb""",
    "tag": f"""SELECT e.group_id, {_DAY} AS day, t.key || '=' || t.value AS value,
               e.created_at AS at
        FROM usage_usageevent e, jsonb_each_text(e.tags) AS t
        WHERE {_RANGE} AND e.tags <> '{{}}'::jsonb
          AND {_NAMED.format(day=_DAY, dimension="tag_key", value="t.key")}""",
}


def _names_sql(dimension: str) -> str:
    """Admit the new values of the range, first seen first, while the group-day has room."""
    return f"""
INSERT INTO usage_usagedimensionname (group_id, day, dimension, value, first_seen)
SELECT group_id, day, '{dimension}', value, first_seen FROM (
    SELECT c.group_id, c.day, c.value, c.first_seen,
           row_number() OVER (PARTITION BY c.group_id, c.day ORDER BY c.first_seen, c.value) AS rank,
           (SELECT count(*) FROM usage_usagedimensionname n WHERE n.group_id = c.group_id
               AND n.day = c.day AND n.dimension = '{dimension}') AS taken
    FROM (SELECT group_id, day, value, min(at) AS first_seen FROM ({_CANDIDATES[dimension]}) AS x
          GROUP BY 1, 2, 3) AS c
    WHERE NOT EXISTS (SELECT 1 FROM usage_usagedimensionname n WHERE n.group_id = c.group_id
                      AND n.day = c.day AND n.dimension = '{dimension}' AND n.value = c.value)
) AS ranked
WHERE rank + taken <= %(cap)s
ON CONFLICT (group_id, day, dimension, value) DO NOTHING
"""


_EVENT_SUMS = ", ".join(f"sum(e.{m})" for m in METRICS[1:])
_NAME_JOIN = """LEFT JOIN usage_usagedimensionname {alias} ON {alias}.group_id = e.group_id
    AND {alias}.day = date_trunc('day', e.created_at) AND {alias}.dimension = '{dimension}'
    AND {alias}.value = {value}"""

DIMENSION_HOURS_SQL = f"""
INSERT INTO usage_usagedimensionrollup (period, start, group_id, dimension, value, {", ".join(METRICS)})
SELECT 'hour', date_trunc('hour', e.created_at), e.group_id, 'end_user',
       COALESCE(nu.value, '(other)'), count(*), {_EVENT_SUMS}
FROM usage_usageevent e
{_NAME_JOIN.format(alias="nu", dimension="end_user", value="e.end_user")}
WHERE {_RANGE} AND e.end_user IS NOT NULL
GROUP BY 2, 3, 5
UNION ALL
SELECT 'hour', date_trunc('hour', e.created_at), e.group_id, 'tag',
       CASE WHEN nk.value IS NULL THEN '(other)' WHEN np.value IS NULL THEN t.key || '=(other)'
            ELSE np.value END,
       count(*), {_EVENT_SUMS}
FROM usage_usageevent e CROSS JOIN LATERAL jsonb_each_text(e.tags) AS t
{_NAME_JOIN.format(alias="nk", dimension="tag_key", value="t.key")}
{_NAME_JOIN.format(alias="np", dimension="tag", value="t.key || '=' || t.value")}
WHERE {_RANGE} AND e.tags <> '{{}}'::jsonb
GROUP BY 2, 3, 5
"""

DIMENSION_DAYS_SQL = f"""
INSERT INTO usage_usagedimensionrollup (period, start, group_id, dimension, value, {", ".join(METRICS)})
SELECT 'day', date_trunc('day', start), group_id, dimension, value, {", ".join(f"sum({m})" for m in METRICS)}
FROM usage_usagedimensionrollup
WHERE period = 'hour' AND start >= %(since)s AND start < %(until)s
GROUP BY 2, 3, 4, 5
"""

DIMENSION_DELETE_SQL = """
DELETE FROM usage_usagedimensionrollup
WHERE period = %(period)s AND start >= %(since)s AND start < %(until)s
"""


def _dimension_caps() -> dict[str, int]:
    return {
        "end_user": settings.USAGE_END_USERS_PER_DAY,
        "tag_key": settings.USAGE_TAG_KEYS_PER_DAY,
        "tag": settings.USAGE_TAGS_PER_DAY,
    }


def rollup_dimensions(cursor: Any, hours: dict, days: dict) -> None:
    """Admit new names (one rollup at a time: a transaction-level advisory lock), then recompute
    the end-user and tag rows of the hours and days (deleted and written again, so exact)."""
    cursor.execute("SELECT pg_advisory_xact_lock(hashtext('usage_dimension_names'))")
    for dimension, cap in _dimension_caps().items():  # tag keys before tag pairs
        cursor.execute(_names_sql(dimension), {**hours, "cap": cap})
    cursor.execute(DIMENSION_DELETE_SQL, {**hours, "period": "hour"})
    cursor.execute(DIMENSION_HOURS_SQL, hours)
    cursor.execute(DIMENSION_DELETE_SQL, {**days, "period": "day"})
    cursor.execute(DIMENSION_DAYS_SQL, days)


def floor_hour(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def floor_day(moment: datetime) -> datetime:
    return floor_hour(moment).replace(hour=0)


def rollup_range(since: datetime, until: datetime) -> None:
    """Recompute the hourly and daily rollups overlapping [since, until)."""
    # Before raw_from the raw events were dropped (retention): the rollups there are final.
    raw_from = raw_events_from()
    if raw_from is not None:
        since = max(since, raw_from)
        if since >= until:
            return
    hour_from = floor_hour(since)
    hour_to = floor_hour(until - timedelta(microseconds=1)) + timedelta(hours=1)
    day_from = floor_day(since)
    day_to = floor_day(until - timedelta(microseconds=1)) + timedelta(days=1)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(HOURS_SQL, {"since": hour_from, "until": hour_to})
        cursor.execute(TOOL_HOURS_SQL, {"since": hour_from, "until": hour_to})
        cursor.execute(GROUP_HOURS_SQL, {"since": hour_from, "until": hour_to})
        cursor.execute(DAYS_SQL, {"since": day_from, "until": day_to})
        cursor.execute(TOOL_DAYS_SQL, {"since": day_from, "until": day_to})
        rollup_dimensions(
            cursor, {"since": hour_from, "until": hour_to}, {"since": day_from, "until": day_to}
        )


def rollup_recent(now: datetime | None = None) -> datetime:
    """Recompute the last two hours (and their days); return the new `rolled_through`."""
    now = now or timezone.now()
    rolled_through = now - COMMIT_MARGIN
    rollup_range(now - timedelta(hours=2), now)
    state, _ = RollupState.objects.get_or_create(pk=1)
    if state.rolled_through is None or state.rolled_through < rolled_through:
        state.rolled_through = rolled_through
        state.save(update_fields=["rolled_through"])
    return rolled_through


def rolled_through() -> datetime | None:
    return RollupState.objects.filter(pk=1).values_list("rolled_through", flat=True).first()


def raw_events_from() -> datetime | None:
    """Raw usage events created before this were dropped (billing/usage_retention.py); None
    when every raw event is kept."""
    return RollupState.objects.filter(pk=1).values_list("raw_from", flat=True).first()

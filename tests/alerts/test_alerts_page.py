"""The Alerts page: Admins create, edit and delete alerts and endpoints (audited), "Send test"
posts a signed test event; Members read only; the secret is shown once."""

from __future__ import annotations

import pytest
from django.urls import reverse

from alerts.models import Alert, WebhookDelivery, WebhookEndpoint
from alerts.services import AlertInput, alert_create, webhook_endpoint_create
from alerts.webhooks import verify
from audit.models import AuditEvent
from members.models import Membership
from tests.alerts.conftest import budget

pytestmark = pytest.mark.django_db


def url(group, name="page", **kw):  # type: ignore[no-untyped-def]
    return reverse(f"alerts:{name}", kwargs={"group_id": group.public_id, **kw})


def test_admin_creates_a_budget_alert_with_htmx(admin_client, group, member):  # type: ignore[no-untyped-def]
    b = budget(group, 50_000_000)
    them = Membership.objects.get(user=member, group=group)
    response = admin_client.post(url(group, "create"), {
        "name": "Half the budget", "kind": "budget", "budget": b.pk, "percent": "50",
        "members": [them.public_id], "extra_emails": "a@example.com, b@example.com",
        "send_email": "on", "enabled": "on",
    }, HTTP_HX_REQUEST="true")  # fmt: skip
    assert response.status_code == 200
    assert 'id="alerts-panel"' in response.text and "<html" not in response.text
    alert = Alert.objects.get(group=group)
    assert (alert.kind, alert.percent, alert.budget_id) == ("budget", 50, b.pk)
    assert list(alert.members.all()) == [them]
    assert alert.extra_emails == ["a@example.com", "b@example.com"]
    assert "50% of the monthly group budget ($50.00)" in response.text
    assert AuditEvent.objects.filter(group=group, action="alerts.alert_create").count() == 1


def test_bad_alert_input_is_422_and_writes_nothing(admin_client, group):  # type: ignore[no-untyped-def]
    response = admin_client.post(url(group, "create"), {
        "name": "x", "kind": "balance", "balance_threshold": "1e9", "send_email": "on",
    })  # fmt: skip
    assert response.status_code == 422
    response = admin_client.post(url(group, "create"), {
        "name": "x", "kind": "balance", "balance_threshold": "5.00", "send_email": "on",
    })  # fmt: skip
    assert response.status_code == 422 and "Choose who is told" in response.text
    assert not Alert.objects.exists()


def test_admin_edits_and_deletes_an_alert(admin_client, group, user):  # type: ignore[no-untyped-def]
    admin = Membership.objects.get(user=user, group=group)
    alert = alert_create(group=group, data=AlertInput(
        name="Low", kind="balance", balance_threshold_micros=5_000_000, members=[admin]))  # fmt: skip
    page = admin_client.get(url(group, "edit", alert_id=alert.public_id))
    assert page.status_code == 200 and 'value="5.00"' in page.text
    response = admin_client.post(url(group, "edit", alert_id=alert.public_id), {
        "name": "Very low", "kind": "balance", "balance_threshold": "2.00",
        "members": [admin.public_id], "send_email": "on",
    })  # fmt: skip
    assert response.status_code == 302
    alert.refresh_from_db()
    assert (alert.name, alert.balance_threshold_micros, alert.enabled) == (
        "Very low",
        2_000_000,
        False,
    )
    assert admin_client.post(url(group, "delete", alert_id=alert.public_id)).status_code == 302
    assert not Alert.objects.exists()
    actions = set(AuditEvent.objects.filter(group=group).values_list("action", flat=True))
    assert {"alerts.alert_create", "alerts.alert_update", "alerts.alert_delete"} <= actions


def test_webhook_secret_is_shown_once_and_send_test_delivers_a_signed_event(  # type: ignore[no-untyped-def]
    admin_client, group, receiver, django_capture_on_commit_callbacks
):
    response = admin_client.post(url(group, "webhook_create"), {
        "webhook-name": "Ops", "webhook-url": receiver.url, "webhook-payload_format": "json",
    })  # fmt: skip
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    endpoint = WebhookEndpoint.objects.get(group=group)
    assert endpoint.secret in response.text
    assert endpoint.secret not in admin_client.get(url(group)).text  # never again
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(url(group, "webhook_test", endpoint_id=endpoint.public_id))
    assert response.status_code == 302
    delivery = WebhookDelivery.objects.get(endpoint=endpoint)
    assert delivery.status == "succeeded" and delivery.event_type == "test"
    [got] = receiver.received
    assert got.json["type"] == "test" and got.json["id"] == delivery.event_id
    assert verify(endpoint.secret, got.body, got.headers["Portal-Signature"])
    log = admin_client.get(url(group)).text
    assert delivery.event_id in log and "Delivered" in log and "<strong>200</strong>" in log
    assert AuditEvent.objects.filter(group=group, action="alerts.webhook_test").count() == 1


def test_admin_edits_and_deletes_an_endpoint(admin_client, group):  # type: ignore[no-untyped-def]
    endpoint = webhook_endpoint_create(
        group=group, name="A", url="https://a.example.com/h"
    ).endpoint
    response = admin_client.post(url(group, "webhook_edit", endpoint_id=endpoint.public_id), {
        "name": "B", "url": "http://example.com/h", "payload_format": "slack",
    })  # fmt: skip
    assert response.status_code == 422 and "https://" in response.text
    response = admin_client.post(url(group, "webhook_edit", endpoint_id=endpoint.public_id), {
        "name": "B", "url": "https://b.example.com/h", "payload_format": "slack",
    })  # fmt: skip
    assert response.status_code == 302
    endpoint.refresh_from_db()
    assert (endpoint.name, endpoint.payload_format, endpoint.enabled) == ("B", "slack", False)
    response = admin_client.post(
        url(group, "webhook_delete", endpoint_id=endpoint.public_id), HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 200 and not WebhookEndpoint.objects.exists()


def test_members_read_but_do_not_change(member_client, group, member):  # type: ignore[no-untyped-def]
    endpoint = webhook_endpoint_create(
        group=group, name="Ops", url="https://ops.example.com/h"
    ).endpoint
    alert_create(group=group, data=AlertInput(
        name="Low", kind="balance", balance_threshold_micros=5_000_000, webhooks=[endpoint]))  # fmt: skip
    page = member_client.get(url(group))
    assert page.status_code == 200
    assert "Low" in page.text and "Ops" in page.text and endpoint.secret not in page.text
    assert "+ New alert" not in page.text and "Send test" not in page.text
    assert member_client.post(url(group, "create"), {"name": "x"}).status_code == 403
    test_url = url(group, "webhook_test", endpoint_id=endpoint.public_id)
    assert member_client.post(test_url).status_code == 403
    assert not WebhookDelivery.objects.exists()


def test_a_malformed_webhook_url_is_a_form_error(admin_client, group):  # type: ignore[no-untyped-def]
    for bad in ("https://[abc/", "https://ops.example.com/a b"):
        response = admin_client.post(url(group, "webhook_create"), {
            "webhook-name": "Ops", "webhook-url": bad, "webhook-payload_format": "json",
        })  # fmt: skip
        assert response.status_code == 422 and "Enter a full https:// URL" in response.text
    assert not WebhookEndpoint.objects.exists()

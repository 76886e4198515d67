"""Spend alerts of an API group and the webhook endpoints they notify.

An `Alert` watches one threshold: a percentage of a `billing.Budget` (the budget's spend in its
current window) or a balance amount (the group's credit balance falling below it). When crossed
it fires once: an `AlertFiring` row, unique per (alert, window_start), so however many evaluators
see the crossing at the same moment the database lets exactly one insert win. For budget alerts
`window_start` is the budget window's start (the alert re-arms at the next window); for balance
alerts it is `Alert.armed_at`, moved forward when the balance is back at or above the threshold
(a purchase), which re-arms the alert.

A firing is e-mailed to the alert's recipients and posted to its webhook endpoints: one
`WebhookDelivery` per (endpoint, event id), retried with back-off, each try a `WebhookAttempt`.
"""

from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone

from groups.models import new_public_id


def new_event_id() -> str:
    return "evt_" + secrets.token_hex(12)


class AlertKind(models.TextChoices):
    BUDGET = "budget", "Percentage of a budget"
    BALANCE = "balance", "Balance below an amount"


class PayloadFormat(models.TextChoices):
    JSON = "json", "JSON (signed event)"
    SLACK = "slack", 'Slack-compatible ({"text": …})'


class WebhookEndpoint(models.Model):
    """A URL of the group that receives alert events, signed with its own secret."""

    public_id = models.CharField(max_length=24, unique=True, default=new_public_id, editable=False)
    group = models.ForeignKey(
        "groups.APIGroup", on_delete=models.CASCADE, related_name="webhook_endpoints"
    )
    name = models.CharField(max_length=100)
    url = models.URLField(max_length=500)
    # Needed in clear to sign each delivery (HMAC); shown to the Admin once, at creation.
    secret = models.CharField(max_length=100, editable=False)
    payload_format = models.CharField(
        max_length=8, choices=PayloadFormat.choices, default=PayloadFormat.JSON
    )
    enabled = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.url})"

    @property
    def masked_secret(self) -> str:
        return f"whsec_…{self.secret[-4:]}"


class Alert(models.Model):
    public_id = models.CharField(max_length=24, unique=True, default=new_public_id, editable=False)
    group = models.ForeignKey("groups.APIGroup", on_delete=models.CASCADE, related_name="alerts")
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=8, choices=AlertKind.choices)
    budget = models.ForeignKey(
        "billing.Budget", null=True, blank=True, on_delete=models.CASCADE, related_name="alerts"
    )
    percent = models.PositiveSmallIntegerField(null=True, blank=True)
    balance_threshold_micros = models.BigIntegerField(null=True, blank=True)
    # Recipients: chosen members of the group (removed with their membership) and extra addresses.
    members = models.ManyToManyField("members.Membership", blank=True, related_name="+")
    extra_emails = models.JSONField(default=list, blank=True)
    # Channels.
    send_email = models.BooleanField(default=True)
    webhooks = models.ManyToManyField(WebhookEndpoint, blank=True, related_name="alerts")
    enabled = models.BooleanField(default=True)
    # Balance alerts: the start of the current "window" (see the module docstring).
    armed_at = models.DateTimeField(default=timezone.now)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]
        constraints = [
            models.CheckConstraint(
                condition=(
                    models.Q(
                        kind="budget",
                        budget__isnull=False,
                        percent__gte=1,
                        percent__lte=1000,
                        balance_threshold_micros__isnull=True,
                    )
                    | models.Q(
                        kind="balance",
                        budget__isnull=True,
                        percent__isnull=True,
                        balance_threshold_micros__isnull=False,
                    )
                ),
                name="alerts_alert_threshold_matches_kind",
            )
        ]

    def __str__(self) -> str:
        return self.name


class AlertFiring(models.Model):
    """One crossing of an alert's threshold in one window: written once, whoever sees it first."""

    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="firings")
    event_id = models.CharField(max_length=40, unique=True, default=new_event_id)
    window_start = models.DateTimeField()
    window_end = models.DateTimeField(null=True, blank=True)
    threshold_micros = models.BigIntegerField()
    # The spend in the window (budget alerts) or the balance (balance alerts) that crossed it.
    observed_micros = models.BigIntegerField()
    fired_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-fired_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["alert", "window_start"], name="alerts_fire_once_per_window"
            )
        ]


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Retrying"
    SUCCEEDED = "succeeded", "Delivered"
    FAILED = "failed", "Gave up"


class WebhookDelivery(models.Model):
    """One event to one endpoint: the exact body, retried until 2xx or the schedule runs out."""

    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries"
    )
    firing = models.ForeignKey(
        AlertFiring, null=True, blank=True, on_delete=models.CASCADE, related_name="deliveries"
    )
    event_id = models.CharField(max_length=40)
    event_type = models.CharField(max_length=40)
    body = models.TextField()
    status = models.CharField(
        max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True, db_index=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["endpoint", "event_id"], name="alerts_one_delivery_per_event"
            )
        ]


class WebhookAttempt(models.Model):
    delivery = models.ForeignKey(
        WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log"
    )
    number = models.PositiveSmallIntegerField()
    started_at = models.DateTimeField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    response_snippet = models.CharField(max_length=500, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)
    error = models.CharField(max_length=255, blank=True)

    class Meta:
        ordering = ["delivery", "number"]
        constraints = [
            models.UniqueConstraint(
                fields=["delivery", "number"], name="alerts_attempt_number_unique"
            )
        ]

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

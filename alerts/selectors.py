from __future__ import annotations

from typing import Any

from django.db.models import Prefetch, QuerySet
from django.shortcuts import get_object_or_404

from alerts.models import Alert, AlertFiring, WebhookAttempt, WebhookDelivery, WebhookEndpoint
from billing.models import Budget
from members.models import Membership


def alerts_for_group(*, group: Any) -> QuerySet[Alert]:
    return (
        Alert.objects.filter(group=group)
        .select_related("budget__api_key")
        .prefetch_related("members__user", "webhooks")
    )


def alert_get_for_group(*, group: Any, public_id: str) -> Alert:
    """The group's alert with this id; 404 for any other group's."""
    return get_object_or_404(alerts_for_group(group=group), public_id=public_id)


def webhook_endpoints_for_group(*, group: Any) -> QuerySet[WebhookEndpoint]:
    return WebhookEndpoint.objects.filter(group=group)


def webhook_endpoint_get_for_group(*, group: Any, public_id: str) -> WebhookEndpoint:
    """The group's webhook endpoint with this id; 404 for any other group's."""
    return get_object_or_404(webhook_endpoints_for_group(group=group), public_id=public_id)


def deliveries_for_group(*, group: Any, limit: int = 50) -> QuerySet[WebhookDelivery]:
    """The delivery log: the newest deliveries of the group's endpoints with their tries."""
    return (
        WebhookDelivery.objects.filter(endpoint__group=group)
        .select_related("endpoint")
        .prefetch_related(
            Prefetch("attempt_log", queryset=WebhookAttempt.objects.order_by("number"))
        )[:limit]
    )


def deliveries_for_endpoint(*, endpoint: WebhookEndpoint) -> QuerySet[WebhookDelivery]:
    """One endpoint's deliveries with their tries and the alert that fired (none for tests)."""
    return (
        WebhookDelivery.objects.filter(endpoint=endpoint)
        .select_related("endpoint", "firing__alert")
        .prefetch_related(
            Prefetch("attempt_log", queryset=WebhookAttempt.objects.order_by("number"))
        )
    )


def firings_for_group(*, group: Any, limit: int = 20) -> QuerySet[AlertFiring]:
    return AlertFiring.objects.filter(alert__group=group).select_related("alert")[:limit]


def budgets_for_group(*, group: Any) -> QuerySet[Budget]:
    return Budget.objects.filter(group=group).select_related("api_key")


def memberships_for_group(*, group: Any) -> QuerySet[Membership]:
    return Membership.objects.filter(group=group).select_related("user").order_by("user__email")

"""Alerts' Celery tasks: each fetches by id and calls a service (imported in the task body, which
breaks the service ↔ task import circle; see billing/tasks.py)."""

from __future__ import annotations

from celery import shared_task


@shared_task
def alerts_watch() -> int:
    """Evaluate the alerts of every group that has enabled ones (beat, every minute)."""
    from alerts.models import Alert
    from alerts.services import alerts_evaluate
    from groups.models import APIGroup

    fired = 0
    group_ids = Alert.objects.filter(enabled=True).values_list("group_id", flat=True).distinct()
    for group in APIGroup.objects.filter(pk__in=list(group_ids)):
        fired += len(alerts_evaluate(group=group))
    return fired


@shared_task(acks_late=True, reject_on_worker_lost=True)
def deliver_webhook(delivery_id: int) -> str | None:
    """Try a webhook delivery once if due; safe to run twice (the row is locked while posting)."""
    from alerts.services import webhook_attempt

    delivery = webhook_attempt(delivery_id=delivery_id)
    return delivery.status if delivery else None


@shared_task
def webhooks_retry_due() -> int:
    """Queue the deliveries whose back-off has passed (beat, every minute)."""
    from alerts.services import deliveries_due

    due = deliveries_due()
    for delivery_id in due:
        deliver_webhook.delay(delivery_id)
    return len(due)


@shared_task(autoretry_for=(OSError,), retry_backoff=True, max_retries=5)
def email_alert(firing_id: int) -> int:
    from alerts.services import alert_email_send

    return alert_email_send(firing_id=firing_id)

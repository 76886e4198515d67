"""Alerts and webhook endpoints: their changes (audited), evaluation, firing and delivery.

Evaluation (`alerts_evaluate`) runs every minute for each group with enabled alerts (beat,
`alerts.tasks.alerts_watch`) and may run at any other moment too: firing is an INSERT that the
unique (alert, window_start) constraint lets succeed once, so concurrent evaluators cannot
double-fire. The e-mail and the webhook deliveries of a firing are queued after its commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import send_mass_mail
from django.core.validators import validate_email
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from alerts import webhooks
from alerts.models import (
    Alert,
    AlertFiring,
    AlertKind,
    DeliveryStatus,
    PayloadFormat,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    new_event_id,
)
from alerts.tasks import deliver_webhook, email_alert
from audit.services import acting_user, audit_record
from billing.models import Budget, CreditAccount
from billing.selectors import budget_spend
from core.money import MAX_AMOUNT_MICROS, format_usd
from groups.models import APIGroup
from members.models import Membership

# Seconds to wait after each failed try: 1 min, 5 min, 30 min, 2 h, 6 h, 12 h — seven tries over
# 20 h 36 min, then the delivery gives up. The every-minute sweep sends retries that are due.
RETRY_DELAYS = (60, 300, 1800, 7200, 21600, 43200)
MAX_EXTRA_EMAILS = 20


class AlertError(ValueError):
    """An alert or endpoint change that cannot be made; `field` names the input at fault."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


# --- webhook endpoints ------------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedEndpoint:
    endpoint: WebhookEndpoint
    secret: str  # shown once


def _endpoint_fields(*, name: str, url: str, payload_format: str) -> dict[str, str]:
    name = name.strip()
    if not name:
        raise AlertError("Give the endpoint a name.", field="name")
    try:
        url = webhooks.check_url(url)
    except webhooks.WebhookURLError as exc:
        raise AlertError(str(exc), field="url") from exc
    if len(url) > 500:
        raise AlertError("That URL is too long (500 characters at most).", field="url")
    if payload_format not in PayloadFormat.values:
        raise AlertError("Choose JSON or Slack.", field="payload_format")
    return {"name": name[:100], "url": url, "payload_format": payload_format}


@transaction.atomic
def webhook_endpoint_create(
    *, group: APIGroup, name: str, url: str, payload_format: str = PayloadFormat.JSON,
    actor: Any = None, request: Any = None,
) -> IssuedEndpoint:  # fmt: skip
    """Add a webhook endpoint with a new signing secret (returned once)."""
    fields = _endpoint_fields(name=name, url=url, payload_format=payload_format)
    secret = webhooks.new_secret()
    endpoint = WebhookEndpoint.objects.create(
        group=group, secret=secret, created_by=acting_user(actor), **fields
    )
    audit_record(
        group=group, actor=actor, action="alerts.webhook_create", target=endpoint,
        request=request, data={"url": endpoint.url, "payload_format": endpoint.payload_format},
    )  # fmt: skip
    return IssuedEndpoint(endpoint, secret)


@transaction.atomic
def webhook_endpoint_update(
    *, endpoint: WebhookEndpoint, name: str, url: str, payload_format: str, enabled: bool,
    actor: Any = None, request: Any = None,
) -> WebhookEndpoint:  # fmt: skip
    fields = _endpoint_fields(name=name, url=url, payload_format=payload_format)
    changes = {k: v for k, v in {**fields, "enabled": enabled}.items() if getattr(endpoint, k) != v}
    for k, v in changes.items():
        setattr(endpoint, k, v)
    endpoint.save(update_fields=[*changes, "updated_at"])
    audit_record(
        group=endpoint.group, actor=actor, action="alerts.webhook_update", target=endpoint,
        request=request, data=changes,
    )  # fmt: skip
    return endpoint


@transaction.atomic
def webhook_endpoint_delete(
    *, endpoint: WebhookEndpoint, actor: Any = None, request: Any = None
) -> None:
    audit_record(
        group=endpoint.group, actor=actor, action="alerts.webhook_delete", target=endpoint,
        request=request, data={"url": endpoint.url},
    )  # fmt: skip
    endpoint.delete()


@transaction.atomic
def webhook_endpoint_test(
    *, endpoint: WebhookEndpoint, actor: Any = None, request: Any = None
) -> WebhookDelivery:
    """Queue a `test` event to the endpoint (the page's "Send test" button)."""
    group = endpoint.group
    event_id = new_event_id()
    now = timezone.now()
    text = f"Test event from {settings.PORTAL_NAME} for the webhook endpoint “{endpoint.name}” of {group.name}."
    payload = {
        "id": event_id,
        "type": "test",
        "created": int(now.timestamp()),
        "group": {"id": group.public_id, "name": group.name},
        "alert": None,
        "budget": None,
        "balance": None,
        "window": None,
        "text": text,
    }
    delivery = _delivery_create(endpoint=endpoint, firing=None, payload=payload, now=now)
    audit_record(
        group=group, actor=actor, action="alerts.webhook_test", target=endpoint, request=request,
        data={"event_id": event_id},
    )  # fmt: skip
    return delivery


# --- alerts -----------------------------------------------------------------------------------


@dataclass
class AlertInput:
    name: str
    kind: str
    budget: Budget | None = None
    percent: int | None = None
    balance_threshold_micros: int | None = None
    members: list[Membership] | None = None
    extra_emails: list[str] | None = None
    send_email: bool = True
    webhooks: list[WebhookEndpoint] | None = None
    enabled: bool = True

    @classmethod
    def of(cls, alert: Alert) -> AlertInput:
        """The alert as it is: the starting point of a change that names only some fields."""
        return cls(
            name=alert.name, kind=alert.kind, budget=alert.budget, percent=alert.percent,
            balance_threshold_micros=alert.balance_threshold_micros,
            members=list(alert.members.all()), extra_emails=list(alert.extra_emails),
            send_email=alert.send_email, webhooks=list(alert.webhooks.all()),
            enabled=alert.enabled,
        )  # fmt: skip


def _validated(group: APIGroup, data: AlertInput) -> dict[str, Any]:
    name = data.name.strip()
    if not name:
        raise AlertError("Give the alert a name.", field="name")
    fields: dict[str, Any] = {"name": name[:100], "kind": data.kind, "send_email": data.send_email,
                              "enabled": data.enabled}  # fmt: skip
    if data.kind == AlertKind.BUDGET:
        if data.budget is None:
            raise AlertError("Choose the budget this alert watches.", field="budget")
        if data.budget.group_id != group.pk:
            raise AlertError("That budget belongs to another API group.", field="budget")
        if data.percent is None or not 1 <= data.percent <= 1000:
            raise AlertError("The percentage must be between 1 and 1000.", field="percent")
        fields.update(budget=data.budget, percent=data.percent, balance_threshold_micros=None)
    elif data.kind == AlertKind.BALANCE:
        level = data.balance_threshold_micros
        if level is None or not 0 < level <= MAX_AMOUNT_MICROS:
            raise AlertError("The balance level must be more than $0.", field="balance_threshold")
        fields.update(budget=None, percent=None, balance_threshold_micros=level)
    else:
        raise AlertError("Choose a budget percentage or a balance level.", field="kind")
    emails: list[str] = []
    for raw in data.extra_emails or []:
        address = raw.strip()
        if not address:
            continue
        try:
            validate_email(address)
        except ValidationError as exc:
            raise AlertError(
                f"{address!r} is not an e-mail address.", field="extra_emails"
            ) from exc
        if address.lower() not in {e.lower() for e in emails}:
            emails.append(address)
    if len(emails) > MAX_EXTRA_EMAILS:
        raise AlertError(f"At most {MAX_EXTRA_EMAILS} extra addresses.", field="extra_emails")
    fields["extra_emails"] = emails
    for m in data.members or []:
        if m.group_id != group.pk:
            raise AlertError("Recipients must be members of this API group.", field="members")
    for w in data.webhooks or []:
        if w.group_id != group.pk:
            raise AlertError("That webhook endpoint belongs to another group.", field="webhooks")
    if not (fields["send_email"] and (emails or data.members)) and not data.webhooks:
        raise AlertError(
            "Choose who is told: e-mail recipients or a webhook endpoint.", field="members"
        )
    return fields


def _audit_data(alert: Alert) -> dict[str, Any]:
    return {
        "kind": alert.kind, "budget_id": alert.budget_id, "percent": alert.percent,
        "balance_threshold_micros": alert.balance_threshold_micros,
        "members": sorted(m.public_id for m in alert.members.all()),
        "extra_emails": alert.extra_emails, "send_email": alert.send_email,
        "webhooks": sorted(w.public_id for w in alert.webhooks.all()), "enabled": alert.enabled,
    }  # fmt: skip


@transaction.atomic
def alert_create(
    *, group: APIGroup, data: AlertInput, actor: Any = None, request: Any = None
) -> Alert:
    fields = _validated(group, data)
    alert = Alert.objects.create(group=group, created_by=acting_user(actor), **fields)
    alert.members.set(data.members or [])
    alert.webhooks.set(data.webhooks or [])
    audit_record(
        group=group, actor=actor, action="alerts.alert_create", target=alert, request=request,
        data=_audit_data(alert),
    )  # fmt: skip
    return alert


@transaction.atomic
def alert_update(
    *, alert: Alert, data: AlertInput, actor: Any = None, request: Any = None
) -> Alert:
    fields = _validated(alert.group, data)
    rearm = (
        fields["kind"] != alert.kind
        or fields["balance_threshold_micros"] != alert.balance_threshold_micros
    )
    for k, v in fields.items():
        setattr(alert, k, v)
    update = [*fields, "updated_at"]
    if rearm:  # a new balance level is a new alert: it may fire again
        alert.armed_at = max(timezone.now(), alert.armed_at + timedelta(microseconds=1))
        update.append("armed_at")
    alert.save(update_fields=update)
    alert.members.set(data.members or [])
    alert.webhooks.set(data.webhooks or [])
    audit_record(
        group=alert.group, actor=actor, action="alerts.alert_update", target=alert,
        request=request, data=_audit_data(alert),
    )  # fmt: skip
    return alert


@transaction.atomic
def alert_delete(*, alert: Alert, actor: Any = None, request: Any = None) -> None:
    audit_record(
        group=alert.group, actor=actor, action="alerts.alert_delete", target=alert,
        request=request, data=_audit_data(alert),
    )  # fmt: skip
    alert.delete()


# --- evaluation and firing --------------------------------------------------------------------


def _budget_label(budget: Budget) -> str:
    who = f"key “{budget.api_key.name}”" if budget.api_key is not None else "group"
    return (
        f"{budget.get_window_display().lower()} {who} budget of {format_usd(budget.amount_micros)}"
    )


def alerts_evaluate(*, group: APIGroup, now: datetime | None = None) -> list[AlertFiring]:
    """Fire every enabled alert of the group whose threshold is crossed and that has not fired in
    this window; re-arm balance alerts whose balance is back at or above their level. Return the
    firings this call made (another evaluator's firings are not repeated)."""
    now = now or timezone.now()
    alerts = Alert.objects.filter(group=group, enabled=True).select_related(
        "group", "budget__group", "budget__api_key"
    )
    fired: list[AlertFiring] = []
    spends: dict[int, tuple[int, datetime, datetime | None]] = {}
    balance: int | None = None
    for alert in alerts:
        if alert.kind == AlertKind.BUDGET and alert.budget is not None and alert.percent:
            budget = alert.budget
            if budget.pk not in spends:
                spends[budget.pk] = budget_spend(budget, now)
            spent, start, end = spends[budget.pk]
            # The threshold in micros, rounded up: "80 %" of $0.000003 fires at 3 micros, not 2.
            threshold = -(-budget.amount_micros * alert.percent // 100)
            if spent >= threshold:
                firing = _fire(alert, window_start=start, window_end=end,
                               threshold=threshold, observed=spent, now=now)  # fmt: skip
                if firing:
                    fired.append(firing)
        elif alert.kind == AlertKind.BALANCE and alert.balance_threshold_micros is not None:
            if balance is None:
                balance = (
                    CreditAccount.objects.filter(group=group)
                    .values_list("balance_micros", flat=True)
                    .first()
                    or 0
                )
            level = alert.balance_threshold_micros
            if balance < level:
                firing = _fire(alert, window_start=alert.armed_at, window_end=None,
                               threshold=level, observed=balance, now=now)  # fmt: skip
                if firing:
                    fired.append(firing)
            elif AlertFiring.objects.filter(alert=alert, window_start=alert.armed_at).exists():
                # Back at or above the level after firing (a purchase): re-arm, once.
                Alert.objects.filter(pk=alert.pk, armed_at=alert.armed_at).update(
                    armed_at=max(now, alert.armed_at + timedelta(microseconds=1))
                )
    return fired


def _fire(
    alert: Alert, *, window_start: datetime, window_end: datetime | None, threshold: int,
    observed: int, now: datetime,
) -> AlertFiring | None:  # fmt: skip
    try:
        with transaction.atomic():
            firing = AlertFiring.objects.create(
                alert=alert, window_start=window_start, window_end=window_end,
                threshold_micros=threshold, observed_micros=observed, fired_at=now,
            )  # fmt: skip
            payload = firing_payload(firing)
            for endpoint in alert.webhooks.filter(enabled=True):
                _delivery_create(endpoint=endpoint, firing=firing, payload=payload, now=now)
            if alert.send_email:
                email_alert.delay_on_commit(firing.pk)
    except IntegrityError:
        return None  # another evaluator fired it in this window
    return firing


def firing_text(firing: AlertFiring) -> str:
    alert = firing.alert
    group = alert.group
    if alert.kind == AlertKind.BUDGET and alert.budget is not None:
        budget = alert.budget
        return (
            f"{group.name}: alert “{alert.name}”: {format_usd(firing.observed_micros)} spent of the "
            f"{_budget_label(budget)} ({alert.percent}% is {format_usd(firing.threshold_micros)})"
            + (
                f"; the window resets at {firing.window_end.isoformat()}."
                if firing.window_end
                else "."
            )
        )
    return (
        f"{group.name}: alert “{alert.name}”: the credit balance is {format_usd(firing.observed_micros)}, "
        f"below {format_usd(firing.threshold_micros)}."
    )


def firing_payload(firing: AlertFiring) -> dict[str, Any]:
    """The JSON event of a firing (the Slack format sends only its `text`)."""
    alert = firing.alert
    group = alert.group
    budget = alert.budget
    budget_part = None
    if budget is not None:
        key = budget.api_key
        budget_part = {
            "id": budget.pk,
            "scope": "key" if key else "group",
            "key": {"id": key.public_id, "name": key.name} if key else None,
            "amount_micros": budget.amount_micros,
            "spent_micros": firing.observed_micros,
            "window": budget.window,
            "enforcement": budget.enforcement,
        }
    return {
        "id": firing.event_id,
        "type": "alert.budget_threshold"
        if alert.kind == AlertKind.BUDGET
        else "alert.balance_below",
        "created": int(firing.fired_at.timestamp()),
        "group": {"id": group.public_id, "name": group.name},
        "alert": {
            "id": alert.public_id,
            "name": alert.name,
            "kind": alert.kind,
            "percent": alert.percent,
            "threshold_micros": firing.threshold_micros,
        },
        "budget": budget_part,
        "balance": {
            "balance_micros": firing.observed_micros,
            "threshold_micros": firing.threshold_micros,
        }
        if alert.kind == AlertKind.BALANCE
        else None,
        "window": {
            "start": firing.window_start.isoformat(),
            "end": firing.window_end.isoformat() if firing.window_end else None,
        },
        "text": firing_text(firing),
    }


def alerts_page_url(group: APIGroup) -> str:
    return settings.SITE_URL.rstrip("/") + reverse(
        "alerts:page", kwargs={"group_id": group.public_id}
    )


def alert_recipients(alert: Alert) -> list[str]:
    found: list[str] = []
    addresses = [m.user.email for m in alert.members.select_related("user")] + list(
        alert.extra_emails
    )
    for address in addresses:
        if address and address.lower() not in {a.lower() for a in found}:
            found.append(address)
    return found


def alert_email_send(*, firing_id: int) -> int:
    """E-mail a firing to its alert's recipients, one message each (addresses stay private)."""
    firing = AlertFiring.objects.select_related("alert__group", "alert__budget__api_key").get(
        pk=firing_id
    )
    text = firing_text(firing)
    subject = f"Alert: {firing.alert.name} ({firing.alert.group.name})"
    body = f"{text}\n\nAlerts and webhooks of {firing.alert.group.name}:\n{alerts_page_url(firing.alert.group)}\n"
    messages = [(subject, body, None, [to]) for to in alert_recipients(firing.alert)]
    return send_mass_mail(messages) if messages else 0


# --- deliveries -------------------------------------------------------------------------------


def _delivery_create(
    *, endpoint: WebhookEndpoint, firing: AlertFiring | None, payload: dict[str, Any], now: datetime
) -> WebhookDelivery:
    body = (
        payload
        if endpoint.payload_format == PayloadFormat.JSON
        else webhooks.slack_payload(payload["text"])
    )
    delivery = WebhookDelivery.objects.create(
        endpoint=endpoint, firing=firing, event_id=payload["id"], event_type=payload["type"],
        body=webhooks.encode(body), next_attempt_at=now, created_at=now,
    )  # fmt: skip
    deliver_webhook.delay_on_commit(delivery.pk)
    return delivery


def webhook_attempt(*, delivery_id: int, now: datetime | None = None) -> WebhookDelivery | None:
    """Try one delivery if it is pending and due; record the try; schedule the next or stop.

    The row is locked (SKIP LOCKED) while posting, so a task and the sweep that both pick it up
    post once. Returns the delivery, or None if another worker holds it or it is settled."""
    now = now or timezone.now()
    with transaction.atomic():
        delivery = (
            WebhookDelivery.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("endpoint")
            .filter(pk=delivery_id, status=DeliveryStatus.PENDING)
            .first()
        )
        if delivery is None:
            return None
        if delivery.next_attempt_at is not None and delivery.next_attempt_at > now:
            return delivery
        endpoint = delivery.endpoint
        result = webhooks.post(
            url=endpoint.url, secret=endpoint.secret, body=delivery.body,
            event_id=delivery.event_id, event_type=delivery.event_type, now=int(now.timestamp()),
        )  # fmt: skip
        delivery.attempts += 1
        WebhookAttempt.objects.create(
            delivery=delivery, number=delivery.attempts, started_at=now,
            status_code=result.status_code, response_snippet=result.snippet,
            duration_ms=result.duration_ms, error=result.error,
        )  # fmt: skip
        if result.ok:
            delivery.status = DeliveryStatus.SUCCEEDED
            delivery.next_attempt_at = None
        elif delivery.attempts > len(RETRY_DELAYS):
            delivery.status = DeliveryStatus.FAILED
            delivery.next_attempt_at = None
        else:
            delivery.next_attempt_at = now + timedelta(seconds=RETRY_DELAYS[delivery.attempts - 1])
        delivery.save(update_fields=["status", "attempts", "next_attempt_at", "updated_at"])
    return delivery


def deliveries_due(*, now: datetime | None = None, limit: int = 500) -> list[int]:
    """Ids of pending deliveries whose next try is due (the sweep queues them)."""
    now = now or timezone.now()
    return list(
        WebhookDelivery.objects.filter(status=DeliveryStatus.PENDING, next_attempt_at__lte=now)
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )

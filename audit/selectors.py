from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from django.db.models import Q, QuerySet

from audit.models import AuditEvent


def audit_events_for_group(
    *,
    group: Any,
    action: str = "",
    actor: str = "",
    since: date | None = None,
    until: date | None = None,
) -> QuerySet[AuditEvent]:
    """The group's audit events, newest first: of one action, by an actor whose e-mail or
    management key name contains `actor`, from `since` to `until` (whole UTC days)."""
    events = AuditEvent.objects.filter(group=group)
    if action:
        events = events.filter(action=action)
    if actor:
        events = events.filter(
            Q(actor_email__icontains=actor) | Q(actor_management_key__name__icontains=actor)
        )
    if since:
        events = events.filter(created_at__gte=datetime.combine(since, time(0), tzinfo=UTC))
    if until:
        events = events.filter(
            created_at__lt=datetime.combine(until + timedelta(days=1), time(0), tzinfo=UTC)
        )
    return events.select_related("actor", "actor_management_key")


def audit_actions_for_group(*, group: Any) -> QuerySet[AuditEvent, str]:
    """The actions the group's log has, for the filter's choices."""
    return (
        AuditEvent.objects.filter(group=group)
        .values_list("action", flat=True)
        .distinct()
        .order_by("action")
    )

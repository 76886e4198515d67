from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from django.core.paginator import Paginator
from django.db.models import Q
from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from audit.models import AuditEvent
from members.permissions import GroupRequest, admin_required


def _day(value: str) -> date | None:
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


@admin_required
@require_GET
def log(request: GroupRequest) -> HttpResponse:
    """The group's audit log, newest first, filterable by action, actor and dates (Admins)."""
    group = request.group
    events = AuditEvent.objects.filter(group=group)
    action = request.GET.get("action", "")
    actor = request.GET.get("actor", "").strip()
    since, until = request.GET.get("from", ""), request.GET.get("to", "")
    errors = []
    if action:
        events = events.filter(action=action)
    if actor:
        events = events.filter(
            Q(actor_email__icontains=actor) | Q(actor_management_key__name__icontains=actor)
        )
    for label, raw in (("From", since), ("To", until)):
        if raw and _day(raw) is None:
            errors.append(f"{label}: “{raw}” is not a date like 2026-11-25.")
    if since and (d := _day(since)):
        events = events.filter(created_at__gte=datetime.combine(d, time(0), tzinfo=UTC))
    if until and (d := _day(until)):
        events = events.filter(
            created_at__lt=datetime.combine(d + timedelta(days=1), time(0), tzinfo=UTC)
        )
    actions = (
        AuditEvent.objects.filter(group=group)
        .values_list("action", flat=True)
        .distinct()
        .order_by("action")
    )
    page = Paginator(events.select_related("actor", "actor_management_key"), 50).get_page(
        request.GET.get("page")
    )
    return render(
        request,
        "audit/log.html",
        {
            "page": page,
            "actions": list(actions),
            "filters": {"action": action, "actor": actor, "from": since, "to": until},
            "errors": errors,
        },
        status=400 if errors else 200,
    )

"""The group's audit log page (Admins): audit's events, shown where members' permissions are."""

from __future__ import annotations

from datetime import date

from django.core.paginator import Paginator
from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from audit.selectors import audit_actions_for_group, audit_events_for_group
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
    action = request.GET.get("action", "")
    actor = request.GET.get("actor", "").strip()
    since, until = request.GET.get("from", ""), request.GET.get("to", "")
    errors = [
        f"{label}: “{raw}” is not a date like 2026-11-25."
        for label, raw in (("From", since), ("To", until))
        if raw and _day(raw) is None
    ]
    events = audit_events_for_group(
        group=group, action=action, actor=actor, since=_day(since), until=_day(until)
    )
    page = Paginator(events, 50).get_page(request.GET.get("page"))
    actions = audit_actions_for_group(group=group)
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

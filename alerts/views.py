"""The Alerts page: alerts, webhook endpoints and the delivery log. Members read; Admins change."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from alerts.forms import AlertForm, WebhookEndpointEditForm, WebhookEndpointForm
from alerts.models import Alert
from alerts.selectors import (
    alert_get_for_group,
    alerts_for_group,
    deliveries_for_group,
    firings_for_group,
    webhook_endpoint_get_for_group,
    webhook_endpoints_for_group,
)
from alerts.services import (
    AlertError,
    AlertInput,
    alert_create,
    alert_delete,
    alert_update,
    webhook_endpoint_create,
    webhook_endpoint_delete,
    webhook_endpoint_test,
    webhook_endpoint_update,
)
from members.permissions import GroupRequest, admin_required, member_required


def _context(request: GroupRequest, **extra: Any) -> dict[str, Any]:
    group = request.group
    return {
        "alerts": alerts_for_group(group=group),
        "endpoints": webhook_endpoints_for_group(group=group),
        "deliveries": deliveries_for_group(group=group),
        "firings": firings_for_group(group=group),
        "alert_form": AlertForm(group=group),
        "webhook_form": WebhookEndpointForm(prefix="webhook"),
        **extra,
    }


def render_page(request: GroupRequest, status: int = 200, **extra: Any) -> HttpResponse:
    template = "alerts/page.html#alerts-panel" if request.htmx else "alerts/page.html"
    return render(request, template, _context(request, **extra), status=status)


def _to_page(request: GroupRequest) -> HttpResponse:
    if request.htmx:
        return render_page(request)
    return redirect("alerts:page", group_id=request.group.public_id)


def _input(form: AlertForm) -> AlertInput:
    data = form.cleaned_data
    return AlertInput(
        name=data["name"],
        kind=data["kind"],
        budget=data.get("budget"),
        percent=data.get("percent"),
        balance_threshold_micros=data.get("balance_threshold"),
        members=list(data.get("members") or []),
        extra_emails=data.get("extra_emails") or [],
        send_email=bool(data.get("send_email")),
        webhooks=list(data.get("webhooks") or []),
        enabled=bool(data.get("enabled")),
    )


def _add_error(form: Any, exc: AlertError) -> None:
    field = exc.field if exc.field in form.fields else None
    form.add_error(field, str(exc))


@member_required
@require_GET
def page(request: GroupRequest) -> HttpResponse:
    return render_page(request)


@member_required
@require_POST
def create(request: GroupRequest) -> HttpResponse:
    form = AlertForm(request.POST, group=request.group)
    if form.is_valid():
        try:
            alert_create(
                group=request.group, data=_input(form), actor=request.user, request=request
            )
        except AlertError as exc:
            _add_error(form, exc)
        else:
            messages.success(request, f"Alert “{form.cleaned_data['name']}” created.")
            return _to_page(request)
    return render_page(request, status=422, alert_form=form, show_alert_form=True)


@admin_required
@require_http_methods(["GET", "POST"])
def edit(request: GroupRequest, alert_id: str) -> HttpResponse:
    alert = alert_get_for_group(group=request.group, public_id=alert_id)
    form = AlertForm(request.POST or None, group=request.group, initial=_initial(alert))
    if request.method == "POST" and form.is_valid():
        try:
            alert_update(alert=alert, data=_input(form), actor=request.user, request=request)
        except AlertError as exc:
            _add_error(form, exc)
        else:
            messages.success(request, f"Saved “{form.cleaned_data['name']}”.")
            return redirect("alerts:page", group_id=request.group.public_id)
    return render(
        request, "alerts/edit.html", {"object": alert, "form": form, "what": "alert"},
        status=422 if form.errors else 200,
    )  # fmt: skip


def _initial(alert: Alert) -> dict[str, Any]:
    return {
        "name": alert.name,
        "kind": alert.kind,
        "budget": alert.budget_id,
        "percent": alert.percent,
        "balance_threshold": f"{alert.balance_threshold_micros / 1_000_000:.2f}"
        if alert.balance_threshold_micros
        else "",
        "members": [m.public_id for m in alert.members.all()],
        "extra_emails": ", ".join(alert.extra_emails),
        "send_email": alert.send_email,
        "webhooks": [w.public_id for w in alert.webhooks.all()],
        "enabled": alert.enabled,
    }


@admin_required
@require_POST
def delete(request: GroupRequest, alert_id: str) -> HttpResponse:
    alert = alert_get_for_group(group=request.group, public_id=alert_id)
    alert_delete(alert=alert, actor=request.user, request=request)
    messages.success(request, f"Deleted the alert “{alert.name}”.")
    return _to_page(request)


@member_required
@require_POST
def webhook_create(request: GroupRequest) -> HttpResponse:
    form = WebhookEndpointForm(request.POST, prefix="webhook")
    if form.is_valid():
        try:
            issued = webhook_endpoint_create(
                group=request.group, actor=request.user, request=request, **form.cleaned_data
            )
        except AlertError as exc:
            _add_error(form, exc)
        else:
            response = render_page(request, issued=issued)
            response["Cache-Control"] = "no-store"  # the secret is shown once
            return response
    return render_page(request, status=422, webhook_form=form, show_webhook_form=True)


@admin_required
@require_http_methods(["GET", "POST"])
def webhook_edit(request: GroupRequest, endpoint_id: str) -> HttpResponse:
    endpoint = webhook_endpoint_get_for_group(group=request.group, public_id=endpoint_id)
    initial = {"name": endpoint.name, "url": endpoint.url,
               "payload_format": endpoint.payload_format, "enabled": endpoint.enabled}  # fmt: skip
    form = WebhookEndpointEditForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            webhook_endpoint_update(
                endpoint=endpoint, actor=request.user, request=request, **form.cleaned_data
            )
        except AlertError as exc:
            _add_error(form, exc)
        else:
            messages.success(request, f"Saved “{endpoint.name}”.")
            return redirect("alerts:page", group_id=request.group.public_id)
    return render(
        request, "alerts/edit.html", {"object": endpoint, "form": form, "what": "webhook endpoint"},
        status=422 if form.errors else 200,
    )  # fmt: skip


@admin_required
@require_POST
def webhook_delete(request: GroupRequest, endpoint_id: str) -> HttpResponse:
    endpoint = webhook_endpoint_get_for_group(group=request.group, public_id=endpoint_id)
    webhook_endpoint_delete(endpoint=endpoint, actor=request.user, request=request)
    messages.success(request, f"Deleted the webhook endpoint “{endpoint.name}”.")
    return _to_page(request)


@admin_required
@require_POST
def webhook_test(request: GroupRequest, endpoint_id: str) -> HttpResponse:
    endpoint = webhook_endpoint_get_for_group(group=request.group, public_id=endpoint_id)
    delivery = webhook_endpoint_test(endpoint=endpoint, actor=request.user, request=request)
    messages.success(
        request,
        f"Test event {delivery.event_id} queued for “{endpoint.name}”; see the delivery log.",
    )
    return _to_page(request)

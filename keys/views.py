from __future__ import annotations

from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from core.hooks import Hook
from keys.forms import APIKeyForm, RegenerateForm, RestrictionsForm
from keys.selectors import api_key_get_for_group, api_keys_for_group
from keys.services import (
    APIKeyError,
    IssuedKey,
    api_key_create,
    api_key_regenerate,
    api_key_restrict,
    api_key_revoke,
    api_key_update,
)
from members.permissions import GroupRequest, admin_required, member_required

# Sections the apps above keys add to the API Keys page, registered in their AppConfig.ready()
# (see core.hooks): management lists the management keys to Admins. Each step is called with
# request= and returns the context its part of the page needs.
page_sections = Hook("keys_page_sections")


def _list_context(request: GroupRequest, **extra: object) -> dict:
    group = request.group
    context: dict = {"keys": api_keys_for_group(group=group), "form": APIKeyForm()}
    for section in page_sections(request=request):
        context.update(section)
    return {**context, **extra}


def render_list(request: GroupRequest, status: int = 200, **extra: object) -> HttpResponse:
    """Render the API Keys page (or its key panel for htmx) with `extra` context."""
    template = "keys/list.html#key-panel" if request.htmx else "keys/list.html"
    return render(request, template, _list_context(request, **extra), status=status)


def _issued(request: GroupRequest, issued: IssuedKey, *, verb: str) -> HttpResponse:
    """Show a new secret exactly once, in the response to the POST that made it."""
    response = render_list(request, issued=issued, issued_verb=verb)
    response["Cache-Control"] = "no-store"
    return response


@member_required
@require_GET
def list(request: GroupRequest) -> HttpResponse:  # the URL name the sidebar uses
    """API Keys: everyone sees names and last four; Admins create and manage."""
    return render_list(request)


@member_required
@require_POST
def create(request: GroupRequest) -> HttpResponse:
    form = APIKeyForm(request.POST)
    if not form.is_valid():
        return render_list(request, status=422, form=form, show_form=True)
    try:
        issued = api_key_create(
            group=request.group,
            name=form.cleaned_data["name"],
            expires_at=form.cleaned_data["expires_on"],
            monthly_limit_micros=form.cleaned_data["monthly_limit"],
            actor=request.user,
            request=request,
        )
    except APIKeyError as exc:
        form.add_error(None, str(exc))
        return render_list(request, status=422, form=form, show_form=True)
    return _issued(request, issued, verb="created")


@admin_required
@require_http_methods(["GET", "POST"])
def edit(request: GroupRequest, key_id: str) -> HttpResponse:
    key = api_key_get_for_group(group=request.group, public_id=key_id)
    initial = {
        "name": key.name,
        "expires_on": key.expires_at.date() if key.expires_at else None,
        "monthly_limit": f"{key.monthly_limit_micros / 1_000_000:.2f}"
        if key.monthly_limit_micros
        else "",
    }
    form = APIKeyForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            api_key_update(
                key=key,
                name=form.cleaned_data["name"],
                expires_at=form.cleaned_data["expires_on"]
                if form.cleaned_data["expires_on"] or "expires_on" in form.changed_data
                else key.expires_at,
                monthly_limit_micros=form.cleaned_data["monthly_limit"],
                actor=request.user,
                request=request,
            )
        except APIKeyError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Saved “{form.cleaned_data['name']}”.")
            return redirect("keys:list", group_id=request.group.public_id)
    return render(
        request, "keys/edit.html", {"key": key, "form": form}, status=422 if form.errors else 200
    )


@admin_required
@require_http_methods(["GET", "POST"])
def revoke(request: GroupRequest, key_id: str) -> HttpResponse:
    key = api_key_get_for_group(group=request.group, public_id=key_id)
    if request.method == "POST":
        api_key_revoke(key=key, actor=request.user, request=request)
        messages.success(request, f"Revoked “{key.name}” ({key.masked}). It no longer works.")
        return redirect("keys:list", group_id=request.group.public_id)
    return render(request, "keys/confirm.html", {"key": key, "action": "revoke"})


@admin_required
@require_http_methods(["GET", "POST"])
def regenerate(request: GroupRequest, key_id: str) -> HttpResponse:
    key = api_key_get_for_group(group=request.group, public_id=key_id)
    form = RegenerateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            issued = api_key_regenerate(
                key=key,
                actor=request.user,
                request=request,
                grace_seconds=form.cleaned_data["grace_seconds"] or 0,
            )
        except APIKeyError as exc:
            messages.error(request, str(exc))
            return redirect("keys:list", group_id=request.group.public_id)
        return _issued(request, issued, verb="regenerated")
    return render(
        request,
        "keys/confirm.html",
        {"key": key, "action": "regenerate", "form": form},
        status=422 if form.errors else 200,
    )


@admin_required
@require_http_methods(["GET", "POST"])
def restrictions(request: GroupRequest, key_id: str) -> HttpResponse:
    """Edit a key's allowed models, APIs, tools and client IP ranges (htmx: the form swaps in
    place; saved, the page goes back to the list)."""
    key = api_key_get_for_group(group=request.group, public_id=key_id)
    form = RestrictionsForm(request.POST or None, initial=RestrictionsForm.initial_for(key))
    if request.method == "POST" and form.is_valid():
        try:
            api_key_restrict(
                key=key,
                restrictions=form.cleaned_data["restrictions"],
                actor=request.user,
                request=request,
            )
        except APIKeyError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Saved the restrictions of “{key.name}”.")
            url = reverse("keys:list", kwargs={"group_id": request.group.public_id})
            if request.htmx:
                return HttpResponse(headers={"HX-Redirect": url})
            return redirect(url)
    template = (
        "keys/restrictions.html#restrictions-form" if request.htmx else "keys/restrictions.html"
    )
    return render(request, template, {"key": key, "form": form}, status=422 if form.errors else 200)

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.security import reauthentication_required
from groups.forms import APIGroupForm, SecurityForm
from groups.models import APIGroup
from groups.selectors import api_group_for_form
from groups.services import (
    GroupSettingError,
    api_group_create,
    api_group_set_mfa_policy,
    api_group_update,
)
from members.permissions import (
    CURRENT_GROUP_SESSION_KEY,
    GroupRequest,
    HtmxHttpRequest,
    admin_required,
    member_required,
)
from members.selectors import memberships_for_user


@login_required
@require_GET
def home(request: HtmxHttpRequest) -> HttpResponse:
    """Send the user to their current group, or to create their first one."""
    memberships = list(memberships_for_user(user=request.user))
    if not memberships:
        return redirect("group_create")
    current = request.session.get(CURRENT_GROUP_SESSION_KEY)
    chosen = next((m for m in memberships if m.group.public_id == current), memberships[0])
    return redirect("groups:home", group_id=chosen.group.public_id)


@login_required
@require_http_methods(["GET", "POST"])
def create(request: HtmxHttpRequest) -> HttpResponse:
    """Create an API group; the creator becomes its Admin."""
    form = APIGroupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        group = api_group_create(creator=request.user, request=request, **form.cleaned_data)
        request.session[CURRENT_GROUP_SESSION_KEY] = group.public_id
        return redirect("groups:home", group_id=group.public_id)
    first = not memberships_for_user(user=request.user).exists()
    return render(request, "groups/create.html", {"form": form, "first_group": first})


@member_required
@require_GET
def group_home(request: GroupRequest) -> HttpResponse:
    """The group's landing page: its usage."""
    return redirect("usage:dashboard", group_id=request.group.public_id)


@member_required
@require_http_methods(["GET", "POST"])
def details(request: GroupRequest) -> HttpResponse:
    """The API Group page: Admins edit the organization details, Members read them."""
    group = request.group
    form = APIGroupForm(request.POST or None, instance=api_group_for_form(group=group))
    if request.method == "POST":
        if form.is_valid():
            api_group_update(group=group, actor=request.user, request=request, **form.cleaned_data)
            messages.success(request, "Organization details saved.")
            return redirect("groups:details", group_id=group.public_id)
        return render(request, "groups/details.html", _context(group, form), status=422)
    return render(request, "groups/details.html", _context(group, form))


def _context(
    group: APIGroup, form: APIGroupForm, security_form: SecurityForm | None = None
) -> dict:
    initial = {"admins_require_mfa": group.admins_require_mfa}
    return {"form": form, "security_form": security_form or SecurityForm(initial=initial)}


@admin_required
@reauthentication_required
@require_POST
def security(request: GroupRequest) -> HttpResponse:
    """Turn the group's two-factor rule for Admins on or off (Admins only, audited)."""
    group = request.group
    form = SecurityForm(request.POST)
    if form.is_valid():
        try:
            api_group_set_mfa_policy(
                group=group,
                admins_require_mfa=form.cleaned_data["admins_require_mfa"],
                actor=request.user,
                request=request,
            )
        except GroupSettingError as exc:
            form.add_error("admins_require_mfa", str(exc))
        else:
            messages.success(request, "Security settings saved.")
            return redirect("groups:details", group_id=group.public_id)
    details_form = APIGroupForm(instance=api_group_for_form(group=group))
    return render(request, "groups/details.html", _context(group, details_form, form), status=422)

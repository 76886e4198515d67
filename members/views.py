from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import logout
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.security import reauthentication_required
from members import flows
from members.forms import InviteForm, MemberFilterForm, RemoveForm, RoleForm
from members.models import Membership, Role
from members.permissions import GroupRequest, HtmxHttpRequest, group_required, member_required
from members.selectors import (
    invitation_get_for_group,
    membership_get_for_group,
    memberships_for_group,
    pending_invitations,
)
from members.services import (
    InvitationLimitReached,
    MembershipError,
    invitation_create,
    invitation_resend,
    invitation_revoke,
    membership_change_role,
    membership_remove,
)


def _members_url(request: GroupRequest) -> str:
    return reverse("members:list", kwargs={"group_id": request.group.public_id})


def _page(
    request: GroupRequest, invite_form: InviteForm | None = None, status: int = 200
) -> HttpResponse:
    filters = MemberFilterForm(request.GET or None)
    role = q = ""
    if filters.is_valid():
        role, q = filters.cleaned_data["role"], filters.cleaned_data["q"]
    group = request.group
    admins = [*memberships_for_group(group=group, role=Role.ADMIN)]  # `list` is a view here
    context = {
        "memberships": memberships_for_group(group=group, role=role, q=q),
        "invitations": pending_invitations(group=group),
        "filters": filters,
        "role_filter": role,
        "q": q,
        "roles": Role.choices,
        "invite_form": invite_form or InviteForm(),
        "admins": admins,  # for "hand their management keys to …"
        "admin_count": len(admins),
    }
    template = (
        "members/list.html#member-table"
        if request.htmx.target == "member-table"
        else "members/list.html"
    )
    return render(request, template, context, status=status)


@member_required
@require_GET
def list(request: GroupRequest) -> HttpResponse:  # the URL name the sidebar uses
    """Members: everyone sees the list; Admins invite, change roles and remove."""
    return _page(request)


@member_required
@require_POST
def invite(request: GroupRequest) -> HttpResponse:
    form = InviteForm(request.POST)
    if form.is_valid():
        try:
            invitation_create(
                group=request.group,
                email=form.cleaned_data["email"],
                role=form.cleaned_data["role"],
                actor=request.user,
                request=request,
            )
        except InvitationLimitReached as exc:
            form.add_error(None, str(exc))
            return _page(request, invite_form=form, status=429)
        except MembershipError as exc:
            form.add_error(exc.field or None, str(exc))
        else:
            messages.success(request, f"Invitation sent to {form.cleaned_data['email']}.")
            return redirect(_members_url(request))
    return _page(request, invite_form=form, status=422)


def _key_heir(request: GroupRequest, public_id: str) -> Membership | None:
    """The member named in "hand their management keys to …" (404 outside this group)."""
    if not public_id:
        return None
    return membership_get_for_group(group=request.group, public_id=public_id)


@member_required
@require_POST
def invitation_action(request: GroupRequest, invitation_id: str, action: str) -> HttpResponse:
    invitation = invitation_get_for_group(group=request.group, public_id=invitation_id)
    try:
        if action == "resend":
            invitation_resend(invitation=invitation, actor=request.user, request=request)
            messages.success(
                request, f"A new link was sent to {invitation.email}; the old one no longer works."
            )
        else:
            invitation_revoke(invitation=invitation, actor=request.user, request=request)
            messages.success(request, f"The invitation for {invitation.email} was revoked.")
    except MembershipError as exc:
        messages.error(request, str(exc))
    return redirect(_members_url(request))


@member_required
@reauthentication_required
@require_POST
def change_role(request: GroupRequest, member_id: str) -> HttpResponse:
    membership = membership_get_for_group(group=request.group, public_id=member_id)
    form = RoleForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose Admin or Member.")
    else:
        try:
            membership_change_role(
                membership=membership,
                role=form.cleaned_data["role"],
                actor=request.user,
                request=request,
                hand_keys_to=_key_heir(request, form.cleaned_data["hand_keys_to"]),
            )
        except MembershipError as exc:
            messages.error(request, str(exc))
        else:
            messages.success(
                request,
                f"{membership.user.email} is now {dict(Role.choices)[form.cleaned_data['role']]}.",
            )
    return redirect(_members_url(request))


@member_required
@require_POST
def remove(request: GroupRequest, member_id: str) -> HttpResponse:
    membership = membership_get_for_group(group=request.group, public_id=member_id)
    form = RemoveForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose another Admin to hand the management keys to.")
        return redirect(_members_url(request))
    try:
        membership_remove(
            membership=membership,
            actor=request.user,
            request=request,
            hand_keys_to=_key_heir(request, form.cleaned_data["hand_keys_to"]),
        )
    except MembershipError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"{membership.user.email} was removed from the group.")
    return redirect(_members_url(request))


@group_required(write=Role.MEMBER)
@require_POST
def leave(request: GroupRequest) -> HttpResponse:
    """Any member may leave (the last Admin may not); an Admin may hand their keys on."""
    form = RemoveForm(request.POST)
    heir = _key_heir(request, form.cleaned_data["hand_keys_to"]) if form.is_valid() else None
    try:
        membership_remove(
            membership=request.membership,
            actor=request.user,
            request=request,
            hand_keys_to=heir,
        )
    except MembershipError as exc:
        messages.error(request, str(exc))
        return redirect(_members_url(request))
    messages.success(request, f"You left {request.group.name}.")
    return redirect("home")


@require_http_methods(["GET", "POST"])
def accept(request: HtmxHttpRequest, token: str) -> HttpResponse:
    """The link in an invitation e-mail (the steps are `members.flows.invitation_open`)."""
    return flows.invitation_open(request, token)


@require_POST
def switch_user_for_invitation(request: HtmxHttpRequest, token: str) -> HttpResponse:
    """Sign out the current user so the invited person can sign in or sign up."""
    logout(request)
    return redirect("invitation_accept", token=token)

from __future__ import annotations

from allauth.account.adapter import get_adapter
from django.contrib import messages
from django.contrib.auth import logout
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.models import User
from accounts.security import reauthentication_required
from members.forms import InviteForm, MemberFilterForm, RemoveForm, RoleForm
from members.models import Membership, Role
from members.permissions import group_required, member_required
from members.selectors import (
    invitation_get_for_group,
    membership_get_for_group,
    memberships_for_group,
    pending_invitations,
)
from members.services import (
    InvitationLimitReached,
    InvitationProblem,
    MembershipError,
    email_verified,
    invitation_accept,
    invitation_create,
    invitation_for_token,
    invitation_resend,
    invitation_revoke,
    membership_change_role,
    membership_remove,
)

INVITATION_SESSION_KEY = "invitation_token"


def _members_url(request: HttpRequest) -> str:
    return reverse("members:list", kwargs={"group_id": request.group.public_id})  # type: ignore[attr-defined]


def _page(
    request: HttpRequest, invite_form: InviteForm | None = None, status: int = 200
) -> HttpResponse:
    filters = MemberFilterForm(request.GET or None)
    role = q = ""
    if filters.is_valid():
        role, q = filters.cleaned_data["role"], filters.cleaned_data["q"]
    group = request.group  # type: ignore[attr-defined]
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
    htmx_target = request.headers.get("HX-Target") if getattr(request, "htmx", False) else None
    template = (
        "members/list.html#member-table" if htmx_target == "member-table" else "members/list.html"
    )
    return render(request, template, context, status=status)


@member_required
@require_GET
def list(request: HttpRequest) -> HttpResponse:  # the URL name the sidebar uses
    """Members: everyone sees the list; Admins invite, change roles and remove."""
    return _page(request)


@member_required
@require_POST
def invite(request: HttpRequest) -> HttpResponse:
    form = InviteForm(request.POST)
    if form.is_valid():
        try:
            invitation_create(
                group=request.group,  # type: ignore[attr-defined]
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


def _key_heir(request: HttpRequest, public_id: str) -> Membership | None:
    """The member named in "hand their management keys to …" (404 outside this group)."""
    if not public_id:
        return None
    return membership_get_for_group(group=request.group, public_id=public_id)  # type: ignore[attr-defined]


@member_required
@require_POST
def invitation_action(request: HttpRequest, invitation_id: str, action: str) -> HttpResponse:
    invitation = invitation_get_for_group(group=request.group, public_id=invitation_id)  # type: ignore[attr-defined]
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
def change_role(request: HttpRequest, member_id: str) -> HttpResponse:
    membership = membership_get_for_group(group=request.group, public_id=member_id)  # type: ignore[attr-defined]
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
def remove(request: HttpRequest, member_id: str) -> HttpResponse:
    membership = membership_get_for_group(group=request.group, public_id=member_id)  # type: ignore[attr-defined]
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
def leave(request: HttpRequest) -> HttpResponse:
    """Any member may leave (the last Admin may not); an Admin may hand their keys on."""
    form = RemoveForm(request.POST)
    heir = _key_heir(request, form.cleaned_data["hand_keys_to"]) if form.is_valid() else None
    try:
        membership_remove(
            membership=request.membership,  # type: ignore[attr-defined]
            actor=request.user,
            request=request,
            hand_keys_to=heir,
        )
    except MembershipError as exc:
        messages.error(request, str(exc))
        return redirect(_members_url(request))
    messages.success(request, f"You left {request.group.name}.")  # type: ignore[attr-defined]
    return redirect("home")


@require_http_methods(["GET", "POST"])
def accept(request: HttpRequest, token: str) -> HttpResponse:
    """The link in an invitation e-mail."""
    try:
        invitation = invitation_for_token(token)
    except InvitationProblem as problem:
        return render(
            request,
            "members/invitation_problem.html",
            {"problem": problem},
            status=410 if problem.kind != "unknown" else 404,
        )
    user = request.user
    if not user.is_authenticated:
        # Remember the link: after signing up (address verified by the token) or signing in,
        # the user comes back here.
        request.session[INVITATION_SESSION_KEY] = token
        get_adapter(request).stash_verified_email(request, invitation.email)
        has_account = User.objects.filter(email__iexact=invitation.email).exists()
        return render(
            request,
            "members/invitation.html",
            {"invitation": invitation, "has_account": has_account},
        )
    if user.email.lower() != invitation.email.lower() or not email_verified(user, invitation.email):
        refusal = InvitationProblem(
            "wrong_user",
            f"This invitation is for {invitation.email}, but you are signed in as {user.email}.",
        )
        return render(
            request,
            "members/invitation_problem.html",
            {"problem": refusal, "signed_in": True},
            status=403,
        )
    if request.method == "POST":
        try:
            membership = invitation_accept(token=token, user=user, request=request)
        except InvitationProblem as problem:
            return render(
                request, "members/invitation_problem.html", {"problem": problem}, status=410
            )
        request.session.pop(INVITATION_SESSION_KEY, None)
        messages.success(
            request,
            f"Welcome to {membership.group.name}! You joined as {membership.get_role_display()}.",
        )
        return redirect("groups:home", group_id=membership.group.public_id)
    return render(request, "members/invitation.html", {"invitation": invitation})


@require_POST
def switch_user_for_invitation(request: HttpRequest, token: str) -> HttpResponse:
    """Sign out the current user so the invited person can sign in or sign up."""
    logout(request)
    return redirect("invitation_accept", token=token)

"""Flows: one user journey across several requests, as django-allauth writes its own
(`allauth/account/internal/flows`). The view only routes the request to the flow.

Accepting an invitation: the link in the e-mail opens the invitation. A visitor who is not
signed in is remembered (the token in the session, the invited address stashed as verified for
allauth's sign-up) and offered to sign in or create an account; allauth's adapter sends them
back to the link afterwards. A signed-in user must own the invited address (verified) to see
it; they join with a POST.
"""

from __future__ import annotations

from typing import Any

from allauth.account.adapter import get_adapter
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from members.models import Invitation
from members.selectors import user_exists_with_email
from members.services import (
    InvitationProblem,
    email_verified,
    invitation_accept,
    invitation_for_token,
)

INVITATION_SESSION_KEY = "invitation_token"  # read by accounts.adapter after sign-in/sign-up


def invitation_open(request: HttpRequest, token: str) -> HttpResponse:
    """Handle the invitation link: show it, send its visitor to sign in, or join (POST)."""
    try:
        invitation = invitation_for_token(token)
    except InvitationProblem as problem:
        return _problem(request, problem, status=410 if problem.kind != "unknown" else 404)
    if not request.user.is_authenticated:
        return _offer_account(request, token, invitation)
    refusal = _refusal_for(request.user, invitation)
    if refusal is not None:
        return _problem(request, refusal, status=403, signed_in=True)
    if request.method == "POST":
        return _join(request, token)
    return render(request, "members/invitation.html", {"invitation": invitation})


def _offer_account(request: HttpRequest, token: str, invitation: Invitation) -> HttpResponse:
    """Remember the link and offer sign-in (an account exists) or sign-up (the address is
    verified by the token, so allauth does not ask to confirm it again)."""
    request.session[INVITATION_SESSION_KEY] = token
    get_adapter(request).stash_verified_email(request, invitation.email)
    return render(
        request,
        "members/invitation.html",
        {"invitation": invitation, "has_account": user_exists_with_email(email=invitation.email)},
    )


def _refusal_for(user: Any, invitation: Invitation) -> InvitationProblem | None:
    """Why this signed-in user may not use the invitation (it is another address's), or None."""
    if user.email.lower() == invitation.email.lower() and email_verified(user, invitation.email):
        return None
    return InvitationProblem(
        "wrong_user",
        f"This invitation is for {invitation.email}, but you are signed in as {user.email}.",
    )


def _join(request: HttpRequest, token: str) -> HttpResponse:
    try:
        membership = invitation_accept(token=token, user=request.user, request=request)
    except InvitationProblem as problem:
        return _problem(request, problem, status=410)
    request.session.pop(INVITATION_SESSION_KEY, None)
    messages.success(
        request,
        f"Welcome to {membership.group.name}! You joined as {membership.get_role_display()}.",
    )
    return redirect("groups:home", group_id=membership.group.public_id)


def _problem(
    request: HttpRequest, problem: InvitationProblem, *, status: int, signed_in: bool = False
) -> HttpResponse:
    context: dict[str, Any] = {"problem": problem}
    if signed_in:
        context["signed_in"] = True
    return render(request, "members/invitation_problem.html", context, status=status)

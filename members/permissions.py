"""Authorization for group-scoped views: every group page goes through `group_required`.

A group page's URL carries the group's public id. The decorator resolves it for the signed-in
user: not signed in → login redirect; not a member of that group → 404 (we do not reveal that
the group exists); signed in but without the role the method needs → 403.

Secure by default: reading (GET/HEAD/OPTIONS) needs `read` (Member unless said otherwise) and
any other method needs `write` (Admin unless said otherwise).

A group with "Admins must use two-factor authentication" on sends its Admins who have no
authenticator app to set one up (allauth MFA) before any of its pages. Management keys are not
sessions and do not pass through here: the Management API is unaffected by that rule.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django_htmx.middleware import HtmxDetails

from accounts.security import user_has_totp
from groups.models import APIGroup
from members.models import Membership, Role

CURRENT_GROUP_SESSION_KEY = "current_group"


class HtmxHttpRequest(HttpRequest):
    """Every request: django-htmx's middleware sets `htmx` (falsy unless htmx sent it).

    `request.htmx` is the one way a view asks whether htmx made the request, and
    `request.htmx.target` which element it will swap.
    """

    htmx: HtmxDetails


class GroupRequest(HtmxHttpRequest):
    """The request a group view receives: `group_required` has set `group` and `membership`."""

    group: APIGroup
    membership: Membership


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_RANK = {Role.MEMBER: 1, Role.ADMIN: 2}


def membership_for(*, user: Any, public_id: str) -> Membership | None:
    """Return the user's membership in the group with this public id, or None."""
    if not user.is_authenticated:
        return None
    return (
        Membership.objects.select_related("group")
        .filter(user=user, group__public_id=public_id)
        .first()
    )


def has_role(membership: Membership, role: str) -> bool:
    return _RANK[Role(membership.role)] >= _RANK[Role(role)]


def must_set_up_mfa(membership: Membership, user: Any) -> bool:
    """Return whether the group's two-factor rule stops this Admin until they set up TOTP."""
    return membership.is_admin and membership.group.admins_require_mfa and not user_has_totp(user)


def group_required(
    read: str = Role.MEMBER, write: str = Role.ADMIN
) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """Decorate a view whose URL has `<group_id>`; set `request.group` and `request.membership`."""

    def decorator(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def wrapper(
            request: GroupRequest, group_id: str, *args: Any, **kwargs: Any
        ) -> HttpResponse:
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            membership = membership_for(user=request.user, public_id=group_id)
            if membership is None:
                raise Http404("No such API group.")
            needed = read if request.method in SAFE_METHODS else write
            if not has_role(membership, needed):
                raise PermissionDenied("Only Admins of this API group can do this.")
            if must_set_up_mfa(membership, request.user):
                messages.warning(
                    request,
                    f"{membership.group.name} requires Admins to use two-factor authentication. "
                    "Set up an authenticator app to continue.",
                )
                return redirect("mfa_activate_totp")
            request.group = membership.group
            request.membership = membership
            if request.session.get(CURRENT_GROUP_SESSION_KEY) != group_id:
                request.session[CURRENT_GROUP_SESSION_KEY] = group_id
            return view(request, *args, **kwargs)

        wrapper.group_access = {"read": read, "write": write}  # type: ignore[attr-defined]
        return wrapper

    return decorator


def admin_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """A group page only Admins may see or change."""
    return group_required(read=Role.ADMIN, write=Role.ADMIN)(view)


def member_required(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """A group page every member may read; changes need an Admin."""
    return group_required()(view)

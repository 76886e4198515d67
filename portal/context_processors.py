from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest

from members.permissions import CURRENT_GROUP_SESSION_KEY
from members.selectors import memberships_for_user


def portal(request: HttpRequest) -> dict[str, Any]:
    """Layout context: the current group, the user's groups for the switcher, the product name."""
    context: dict[str, Any] = {
        "PORTAL_NAME": settings.PORTAL_NAME,
        "gateway_url": settings.GATEWAY_BASE_URL.rstrip("/"),
    }
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return context
    group = getattr(request, "group", None)
    membership = getattr(request, "membership", None)
    if group is None:
        memberships = list(memberships_for_user(user=user))
        current = request.session.get(CURRENT_GROUP_SESSION_KEY)
        membership = next((m for m in memberships if m.group.public_id == current), None)
        if membership is None and memberships:
            membership = memberships[0]
        group = membership.group if membership else None
        context["user_memberships"] = memberships
    else:
        context["user_memberships"] = lambda: list(memberships_for_user(user=user))
    context["current_group"] = group
    context["current_membership"] = membership
    context["is_group_admin"] = bool(membership and membership.is_admin)
    return context

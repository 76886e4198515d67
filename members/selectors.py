from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from members.models import Membership


def memberships_for_user(*, user: Any) -> QuerySet[Membership]:
    """Return the user's memberships with their groups, ordered by group name."""
    return Membership.objects.filter(user=user).select_related("group").order_by("group__name")

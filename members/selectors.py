from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404

from accounts.models import User
from members.models import Invitation, InvitationStatus, Membership


def memberships_for_user(*, user: Any) -> QuerySet[Membership]:
    """Return the user's memberships with their groups, ordered by group name."""
    return Membership.objects.filter(user=user).select_related("group").order_by("group__name")


def memberships_for_group(*, group: Any, role: str = "", q: str = "") -> QuerySet[Membership]:
    qs = Membership.objects.filter(group=group).select_related("user").order_by("user__email")
    if role:
        qs = qs.filter(role=role)
    if q:
        qs = qs.filter(user__email__icontains=q.strip())
    return qs


def membership_get_for_group(*, group: Any, public_id: str) -> Membership:
    return get_object_or_404(
        Membership.objects.select_related("user", "group"), group=group, public_id=public_id
    )


def pending_invitations(*, group: Any) -> QuerySet[Invitation]:
    return Invitation.objects.filter(group=group, status=InvitationStatus.PENDING).select_related(
        "invited_by"
    )


def invitation_get_for_group(*, group: Any, public_id: str) -> Invitation:
    return get_object_or_404(Invitation, group=group, public_id=public_id)


def user_exists_with_email(*, email: str) -> bool:
    """Whether someone has an account with this address (any case)."""
    return User.objects.filter(email__iexact=email).exists()

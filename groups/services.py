from __future__ import annotations

from typing import Any

from django.db import transaction

from accounts.security import user_has_totp
from audit.services import audit_record
from core.hooks import Hook
from groups.models import APIGroup
from members.models import Role
from members.services import membership_add

# Steps the apps above groups add to these flows, registered in their AppConfig.ready() (see
# core.hooks): billing opens the new group's credit account, and queues the update of the Stripe
# customer when the organization details change.
group_created = Hook("group_created")  # called with group=
group_updated = Hook("group_updated")  # called with group=


@transaction.atomic
def api_group_create(*, creator: Any, name: str, request: Any = None, **details: Any) -> APIGroup:
    """Create an API group with `creator` as its first Admin (and, via `group_created`, its
    credit account)."""
    group = APIGroup.objects.create(name=name, **details)
    membership_add(group=group, user=creator, role=Role.ADMIN)
    group_created(group=group)
    audit_record(group=group, actor=creator, action="group.create", target=group, request=request)
    return group


class GroupSettingError(ValueError):
    """A group setting that cannot be changed as asked; the message says why."""


@transaction.atomic
def api_group_set_mfa_policy(
    *, group: APIGroup, admins_require_mfa: bool, actor: Any, request: Any = None
) -> APIGroup:
    """Turn "Admins must use two-factor authentication" on or off; audited.

    Turning it on needs the acting Admin to have TOTP already, so they do not lock themselves out
    of the page they are on.
    """
    group = APIGroup.objects.select_for_update().get(pk=group.pk)
    if group.admins_require_mfa == admins_require_mfa:
        return group
    if admins_require_mfa and not user_has_totp(actor):
        raise GroupSettingError(
            "Set up two-factor authentication for your own account first "
            "(Account settings → Two-factor authentication), then turn this on."
        )
    group.admins_require_mfa = admins_require_mfa
    group.save(update_fields=["admins_require_mfa", "updated_at"])
    audit_record(
        group=group,
        actor=actor,
        action="group.mfa_policy",
        target=group,
        request=request,
        data={"admins_require_mfa": admins_require_mfa},
    )
    return group


@transaction.atomic
def api_group_update(
    *, group: APIGroup, actor: Any, request: Any = None, **details: Any
) -> APIGroup:
    """Change a group's organization details; audited with what changed."""
    group = APIGroup.objects.select_for_update().get(pk=group.pk)
    changes = {
        f: [str(getattr(group, f)), str(v)] for f, v in details.items() if getattr(group, f) != v
    }
    if not changes:
        return group
    for field in changes:
        setattr(group, field, details[field])
    group.save(update_fields=[*changes, "updated_at"])
    audit_record(
        group=group, actor=actor, action="group.update", target=group, request=request, data=changes
    )
    group_updated(group=group)  # keep Stripe's copy of the customer in step
    return group

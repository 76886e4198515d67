"""Create and revoke management keys. Both are audited; the secret is shown once, never stored."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.services import acting_user, audit_record
from keys import secrets
from keys.models import KeyStatus
from keys.services import APIKeyError, clean_key_name
from management.models import ManagementKey, ManagementRole

# last_used_at is a hint for people ("used 3 minutes ago"), not a log: write it at most this often.
LAST_USED_RESOLUTION = timedelta(seconds=60)


@dataclass(frozen=True)
class IssuedManagementKey:
    key: ManagementKey
    secret: str  # shown to the Admin exactly once


@transaction.atomic
def management_key_create(
    *, group: Any, name: str, role: str, actor: Any, request: Any = None
) -> IssuedManagementKey:
    """Create a management key with `role` and return it with its secret; APIKeyError (with the
    field at fault) for a bad name or role."""
    name = clean_key_name(name)
    if role not in ManagementRole.values:
        raise APIKeyError("Choose Admin or Read-only.", field="role")
    prefix = settings.MANAGEMENT_KEY_PREFIX
    secret = secrets.generate(prefix)
    key = ManagementKey.objects.create(
        group=group,
        name=name,
        role=role,
        prefix=prefix,
        secret_hash=secrets.hash_key(secret),
        last_four=secrets.last_four(secret),
        created_by=acting_user(actor),
    )
    audit_record(
        group=group,
        actor=actor,
        action="management_key.create",
        target=key,
        request=request,
        data={"role": role},
    )
    return IssuedManagementKey(key, secret)


@transaction.atomic
def management_key_revoke(*, key: ManagementKey, actor: Any, request: Any = None) -> ManagementKey:
    """Revoke a management key for good; its next request is refused."""
    key = ManagementKey.objects.select_for_update().select_related("group").get(pk=key.pk)
    if key.status == KeyStatus.REVOKED:
        return key
    key.status = KeyStatus.REVOKED
    key.revoked_at = timezone.now()
    key.revoked_by = acting_user(actor)
    key.save(update_fields=["status", "revoked_at", "revoked_by"])
    audit_record(
        group=key.group, actor=actor, action="management_key.revoke", target=key, request=request
    )
    return key


def management_key_mark_used(*, key: ManagementKey) -> None:
    """Record that the key was just used (at most once per LAST_USED_RESOLUTION)."""
    now = timezone.now()
    if key.last_used_at is not None and now - key.last_used_at < LAST_USED_RESOLUTION:
        return
    ManagementKey.objects.filter(pk=key.pk).update(last_used_at=now)
    key.last_used_at = now


@transaction.atomic
def management_keys_offboard(
    *, group: Any, user: Any, hand_to: Any = None, reason: str, actor: Any, request: Any = None
) -> list[ManagementKey]:
    """Revoke the active management keys `user` created in `group`, or hand them to `hand_to`.

    Called when an Admin is removed, leaves or is demoted (members.services), in that change's
    transaction. A handed-over key keeps its secret and shows its new owner; both are audited.
    """
    keys = list(
        ManagementKey.objects.select_for_update(of=("self",))
        .filter(group=group, created_by=user, status=KeyStatus.ACTIVE)
        .order_by("id")
    )
    now = timezone.now()
    for key in keys:
        if hand_to is not None:
            key.created_by = hand_to
            key.save(update_fields=["created_by"])
            action = "management_key.handover"
            data = {"reason": reason, "from": user.email, "to": hand_to.email}
        else:
            key.status = KeyStatus.REVOKED
            key.revoked_at = now
            key.revoked_by = acting_user(actor)
            key.save(update_fields=["status", "revoked_at", "revoked_by"])
            action = "management_key.revoke"
            data = {"reason": reason, "owner": user.email}
        audit_record(
            group=group, actor=actor, action=action, target=key, request=request, data=data
        )
    return keys

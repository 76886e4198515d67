from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404

from keys import secrets
from keys.models import KeyStatus
from management.models import ManagementKey


def management_keys_for_group(*, group: Any) -> QuerySet[ManagementKey]:
    """Return the group's management keys, active first, newest first."""
    return (
        ManagementKey.objects.filter(group=group)
        .select_related("created_by")
        .order_by("status", "-created_at", "-id")
    )


def management_key_get_for_group(*, group: Any, public_id: str) -> ManagementKey:
    """Return the group's management key with this id; 404 for any other group's key."""
    return get_object_or_404(
        ManagementKey.objects.select_related("group"), group=group, public_id=public_id
    )


def management_key_for_secret(secret: str) -> ManagementKey | None:
    """Return the active management key whose secret this is, with its group, or None."""
    return (
        ManagementKey.objects.select_related("group")
        .filter(secret_hash=secrets.hash_key(secret), status=KeyStatus.ACTIVE)
        .first()
    )

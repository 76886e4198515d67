from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.shortcuts import get_object_or_404

from keys.models import APIKey


def api_keys_for_group(*, group: Any) -> QuerySet[APIKey]:
    """Return the group's keys, active first, newest first."""
    return (
        APIKey.objects.filter(group=group)
        .select_related("created_by")
        .order_by("status", "-created_at", "-id")
    )


def api_key_get_for_group(*, group: Any, public_id: str) -> APIKey:
    """Return the group's key with this id; 404 for any other group's key."""
    return get_object_or_404(
        APIKey.objects.select_related("group"), group=group, public_id=public_id
    )


def api_key_find_for_group(*, group: Any, public_id: str) -> APIKey | None:
    """Return the group's key with this id, or None (a filter naming another group's key)."""
    return APIKey.objects.filter(group=group, public_id=public_id).first()

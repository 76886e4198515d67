from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.forms.models import model_to_dict
from django.shortcuts import get_object_or_404

from billing.models import BillingProfile
from groups.forms import APIGroupForm
from groups.models import APIGroup
from keys import secrets
from keys.models import KeyStatus
from management.models import ManagementKey
from usage.models import AIModel


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


# --- reads the Management API makes that no other app's selector offers ---------------------


def group_details_form(*, group: Any, changes: dict[str, Any]) -> APIGroupForm:
    """The API Group page's form bound to the group's current details with `changes` on top
    (a PATCH sends only what changes; the form validates the whole, tax ID per country)."""
    instance = APIGroup.objects.get(pk=group.pk)
    current = model_to_dict(instance, fields=list(APIGroupForm.Meta.fields))
    current["country"] = str(instance.country or "")
    return APIGroupForm({**current, **changes}, instance=instance)


def billing_profile_for(*, group: Any) -> BillingProfile:
    """The group's billing profile, or an unsaved default one (auto top-up off)."""
    return BillingProfile.objects.filter(group=group).first() or BillingProfile()


def ai_model_by_name(name: str) -> AIModel | None:
    """The model of the catalogue with this name, or None."""
    return AIModel.objects.filter(name=name).first()

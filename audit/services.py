from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db import models
from django.http import HttpRequest

from audit.models import AuditEvent


def client_ip(request: HttpRequest | None) -> str | None:
    """Return the client's IP address (REMOTE_ADDR; the proxy in front must set it correctly)."""
    if request is None:
        return None
    return request.META.get("REMOTE_ADDR") or None


def acting_user(actor: Any | None) -> Any | None:
    """Return `actor` if it is a saved user, else None (a management key, or the operator).

    Services that keep "created by"/"revoked by" users call this, so an action taken through the
    Management API never puts a key where a user belongs.
    """
    return actor if isinstance(actor, get_user_model()) and actor.pk else None


def audit_record(
    *,
    group: Any,
    actor: Any | None,
    action: str,
    target: models.Model | None = None,
    target_repr: str | None = None,
    request: HttpRequest | None = None,
    data: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one audit event. Call inside the transaction of the action it records.

    `actor` is the user who acted, a management key (Management API), or None (the operator).
    """
    key = actor if getattr(actor, "is_management_key", False) else None
    user = acting_user(actor)
    return AuditEvent.objects.create(
        group=group,
        actor=user,
        actor_management_key=key,
        actor_email=getattr(user, "email", "") or "",
        action=action,
        target_type=target._meta.label_lower if target is not None else "",
        target_id=str(target.pk) if target is not None else "",
        target_repr=(target_repr if target_repr is not None else str(target or ""))[:255],
        ip=client_ip(request),
        data=data or {},
    )

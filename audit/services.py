from __future__ import annotations

from typing import Any

from django.db import models
from django.http import HttpRequest

from audit.models import AuditEvent


def client_ip(request: HttpRequest | None) -> str | None:
    """Return the client's IP address (REMOTE_ADDR; the proxy in front must set it correctly)."""
    if request is None:
        return None
    return request.META.get("REMOTE_ADDR") or None


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
    """Append one audit event. Call inside the transaction of the action it records."""
    return AuditEvent.objects.create(
        group=group,
        actor=actor if actor is not None and getattr(actor, "pk", None) else None,
        actor_email=getattr(actor, "email", "") or "",
        action=action,
        target_type=target._meta.label_lower if target is not None else "",
        target_id=str(target.pk) if target is not None else "",
        target_repr=(target_repr if target_repr is not None else str(target or ""))[:255],
        ip=client_ip(request),
        data=data or {},
    )

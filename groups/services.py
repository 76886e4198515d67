from __future__ import annotations

from typing import Any

from django.db import transaction

from audit.services import audit_record
from billing.models import CreditAccount
from groups.models import APIGroup
from members.models import Membership, Role


@transaction.atomic
def api_group_create(*, creator: Any, name: str, request: Any = None, **details: Any) -> APIGroup:
    """Create an API group with `creator` as its first Admin."""
    group = APIGroup.objects.create(name=name, **details)
    Membership.objects.create(group=group, user=creator, role=Role.ADMIN)
    CreditAccount.objects.create(group=group)
    audit_record(group=group, actor=creator, action="group.create", target=group, request=request)
    return group

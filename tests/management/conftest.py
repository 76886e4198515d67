"""Fixtures for Management API tests: a group with keys of every kind, and a JSON client."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from django.test import Client

from keys.services import api_key_create
from management.services import management_key_create
from tests.factories import GroupFactory, MembershipFactory


@dataclass
class Api:
    """Call the Management API as one key."""

    client: Client
    secret: str | None

    def __call__(self, method: str, path: str, body: Any = None, **query: Any) -> Any:
        url = path if path.startswith("/") else f"/v1/management/{path}"
        headers = {"HTTP_AUTHORIZATION": f"Bearer {self.secret}"} if self.secret else {}
        if method.upper() == "GET":
            return self.client.get(url, query, **headers)
        data = json.dumps(body) if body is not None else ""
        return self.client.generic(
            method.upper(), url, data, content_type="application/json", **headers
        )

    def get(self, path: str, **query: Any) -> Any:
        return self("GET", path, **query)


@pytest.fixture
def mgmt(group, user):  # type: ignore[no-untyped-def]
    """Secrets of an admin and a read-only management key of `group` (made by its Admin)."""
    admin = management_key_create(group=group, name="Ops", role="admin", actor=user)
    read = management_key_create(group=group, name="Reports", role="read_only", actor=user)
    return {"admin": admin, "read_only": read}


@pytest.fixture
def api(client, mgmt) -> Api:  # type: ignore[no-untyped-def]
    return Api(client, mgmt["admin"].secret)


@pytest.fixture
def read_api(client, mgmt) -> Api:  # type: ignore[no-untyped-def]
    return Api(Client(), mgmt["read_only"].secret)


@pytest.fixture
def other_world(db):  # type: ignore[no-untyped-def]
    """Another group with its own admin, admin management key and an API key."""
    other = GroupFactory()
    admin = MembershipFactory(group=other, role="admin").user
    return {
        "group": other,
        "admin": admin,
        "mgmt": management_key_create(group=other, name="Theirs", role="admin", actor=admin),
        "key": api_key_create(group=other, name="Their key").key,
    }


def make_invoice(group, number: str = "", period_key: str = "2025-10") -> Any:  # type: ignore[no-untyped-def]
    """A finalized (empty) invoice of `group`, as the invoice run writes them."""
    from django.utils import timezone

    from billing.models import Invoice
    from groups.models import new_public_id

    now = timezone.now()
    return Invoice.objects.create(
        public_id=new_public_id(), number=number or f"INV-T-{new_public_id()}", kind="invoice",
        status="paid", group=group, period_key=period_key, period_start=now,
        period_end=now, issued_at=now, bill_to_name=group.name, issuer_name="Operator",
    )  # fmt: skip


def build_world(group, user) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """One object of each kind in `group`, for endpoints that name objects."""
    from alerts.services import AlertInput, alert_create, webhook_endpoint_create
    from billing.models import Budget
    from billing.services import credits_grant
    from members.services import invitation_create

    credits_grant(
        group=group, amount_micros=5_000_000, reason="Welcome", reference=f"grant-{group.pk}"
    )
    endpoint = webhook_endpoint_create(
        group=group, name="Ops hook", url="https://hooks.example.com/portal"
    ).endpoint
    alert = alert_create(group=group, data=AlertInput(
        name="Low balance", kind="balance", balance_threshold_micros=1_000_000,
        extra_emails=["ops@example.com"], webhooks=[endpoint],
    ))  # fmt: skip
    return {
        "alert": alert,
        "webhook_endpoint": endpoint,
        "group": group,
        "key": api_key_create(group=group, name="Server").key,
        "membership": MembershipFactory(group=group, role="member"),
        "invitation": invitation_create(
            group=group, email=f"invitee{group.pk}@example.com", role="member", actor=user
        ).invitation,
        "invoice": make_invoice(group),
        "budget": Budget.objects.create(group=group, amount_micros=5_000_000, window="monthly"),
    }

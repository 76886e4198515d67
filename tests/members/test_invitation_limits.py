"""Invitation e-mails are limited per sender and per group per day (finding 9)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.core import mail
from django.test import Client
from django.utils import timezone

from management.services import management_key_create
from members.models import Invitation
from members.services import invitation_create
from tests.factories import MembershipFactory

pytestmark = pytest.mark.django_db


def invite(client: Client, group, email: str):  # type: ignore[no-untyped-def]
    return client.post(f"/g/{group.public_id}/members/invite/", {"email": email, "role": "member"})


def test_the_page_stops_at_the_per_user_limit_and_sends_nothing(
    admin_client, group, user, settings, django_capture_on_commit_callbacks, monkeypatch
):
    settings.INVITATIONS_PER_USER_PER_DAY = 3
    with django_capture_on_commit_callbacks(execute=True):
        for i in range(3):
            assert invite(admin_client, group, f"p{i}@example.com").status_code == 302
        response = invite(admin_client, group, "p3@example.com")
    assert response.status_code == 429
    assert "You have sent 3 invitation e-mails in the last 24 hours" in response.content.decode()
    assert not Invitation.objects.filter(email="p3@example.com").exists()
    assert sorted(m.to[0] for m in mail.outbox) == [f"p{i}@example.com" for i in range(3)]
    # Resending is an e-mail too.
    pending = Invitation.objects.filter(email="p0@example.com").get()
    admin_client.post(f"/g/{group.public_id}/members/invitations/{pending.public_id}/resend/")
    assert len(mail.outbox) == 3
    # Another Admin of the same group still has their own allowance.
    other = Client()
    other.force_login(MembershipFactory(group=group, role="admin").user)
    assert invite(other, group, "q@example.com").status_code == 302
    # A day later the allowance is back (the audit log is append-only, so move the clock).
    later = timezone.now() + timedelta(hours=25)
    monkeypatch.setattr("members.services.timezone.now", lambda: later)
    assert invite(admin_client, group, "p3@example.com").status_code == 302


def test_the_group_limit_counts_every_sender(group, user, settings):
    settings.INVITATIONS_PER_GROUP_PER_DAY = 2
    second = MembershipFactory(group=group, role="admin").user
    invitation_create(group=group, email="a@example.com", role="member", actor=user)
    invitation_create(group=group, email="b@example.com", role="member", actor=second)
    client = Client()
    client.force_login(second)
    response = invite(client, group, "c@example.com")
    assert response.status_code == 429
    assert "This group has sent 2 invitation e-mails" in response.content.decode()
    assert Invitation.objects.filter(group=group).count() == 2


def test_the_management_api_has_the_same_limit(group, user, settings):
    settings.INVITATIONS_PER_USER_PER_DAY = 2
    key = management_key_create(group=group, name="Ops", role="admin", actor=user)
    invitation_create(group=group, email="a@example.com", role="member", actor=user)

    def api_invite(email: str):  # type: ignore[no-untyped-def]
        return Client().post(
            "/v1/management/invitations",
            json.dumps({"email": email}),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {key.secret}",
        )

    assert api_invite("b@example.com").status_code == 201
    # The key counts towards its owner's allowance, so it cannot be used to get around it.
    response = api_invite("c@example.com")
    assert response.status_code == 429
    error = response.json()["error"]
    assert error["code"] == "invitation_limit_reached" and "24 hours" in error["message"]
    assert not Invitation.objects.filter(email="c@example.com").exists()

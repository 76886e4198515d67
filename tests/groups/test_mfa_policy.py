"""The group rule "Admins must use two-factor authentication" (finding 12)."""

from __future__ import annotations

import pytest
from allauth.mfa.totp.internal.auth import TOTP, generate_totp_secret
from django.test import Client

from groups.models import APIGroup
from management.services import management_key_create
from members.models import Membership
from tests.factories import MembershipFactory

pytestmark = pytest.mark.django_db


def security_url(group) -> str:  # type: ignore[no-untyped-def]
    return f"/g/{group.public_id}/settings/security/"


def test_only_an_admin_with_totp_can_turn_it_on_and_it_is_audited(admin_client, group, user):
    response = admin_client.post(security_url(group), {"admins_require_mfa": "on"})
    assert response.status_code == 422
    assert "Set up two-factor authentication for your own account first" in (
        response.content.decode()
    )
    assert not APIGroup.objects.get(pk=group.pk).admins_require_mfa

    TOTP.activate(user, generate_totp_secret())
    response = admin_client.post(security_url(group), {"admins_require_mfa": "on"})
    assert response.status_code == 302
    assert APIGroup.objects.get(pk=group.pk).admins_require_mfa
    event = group.audit_events.get(action="group.mfa_policy")
    assert event.actor == user and event.data == {"admins_require_mfa": True}


def test_members_cannot_change_it(group, member):
    client = Client()
    client.force_login(member)
    assert client.post(security_url(group), {}).status_code == 403
    assert client.post(security_url(group), {"admins_require_mfa": "on"}).status_code == 403
    assert not group.audit_events.filter(action="group.mfa_policy").exists()


def test_admins_without_totp_are_sent_to_set_it_up(group, user, member):
    APIGroup.objects.filter(pk=group.pk).update(admins_require_mfa=True)
    TOTP.activate(user, generate_totp_secret())
    newcomer = MembershipFactory(group=group, role="admin").user
    client = Client()
    client.force_login(newcomer)
    for url in ("billing/", "keys/", "members/"):
        response = client.get(f"/g/{group.public_id}/{url}")
        assert (
            response.status_code == 302 and response["Location"] == "/accounts/2fa/totp/activate/"
        )
    response = client.post(f"/g/{group.public_id}/keys/management/new/", {"mk-name": "X"})
    assert response["Location"] == "/accounts/2fa/totp/activate/"
    assert not group.management_keys.exists()
    page = client.get("/accounts/2fa/totp/activate/", follow=True).content.decode()
    assert "requires Admins to use two-factor authentication" in page

    # Admins with TOTP and plain Members are not stopped.
    admin = Client()
    admin.force_login(user)
    assert admin.get(f"/g/{group.public_id}/keys/").status_code == 200
    plain = Client()
    plain.force_login(member)
    assert plain.get(f"/g/{group.public_id}/keys/").status_code == 200
    # Once the newcomer sets up TOTP, the pages open.
    TOTP.activate(newcomer, generate_totp_secret())
    assert client.get(f"/g/{group.public_id}/keys/").status_code == 200


def test_management_keys_are_not_affected(group, user):
    """Keys are not sessions: the rule is about people signing in to the pages."""
    key = management_key_create(group=group, name="Ops", role="read_only", actor=user)
    APIGroup.objects.filter(pk=group.pk).update(admins_require_mfa=True)
    assert Membership.objects.get(user=user).is_admin
    response = Client().get("/v1/management/group", HTTP_AUTHORIZATION=f"Bearer {key.secret}")
    assert response.status_code == 200

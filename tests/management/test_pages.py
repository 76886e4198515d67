"""Management keys on the API Keys page (Admins only) and the reference page."""

from __future__ import annotations

import re

import pytest

from audit.models import AuditEvent
from keys import secrets
from management.models import ManagementKey
from management.services import management_key_create
from tests.management.conftest import Api

pytestmark = pytest.mark.django_db


def test_admin_creates_a_management_key_and_sees_the_secret_once(admin_client, group, user):
    url = f"/g/{group.public_id}/keys/management/new/"
    response = admin_client.post(url, {"mk-name": "Terraform", "mk-role": "admin"})
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    html = response.content.decode()
    secret = re.search(r'id="new-management-secret"[^>]*value="([^"]+)"', html).group(1)
    assert secrets.is_well_formed(secret, "pplx-admin-")
    key = ManagementKey.objects.get()
    assert (key.name, key.role, key.created_by) == ("Terraform", "admin", user)
    assert key.secret_hash == secrets.hash_key(secret)
    event = AuditEvent.objects.get(action="management_key.create")
    assert event.actor == user and event.data == {"role": "admin"}
    page = admin_client.get(f"/g/{group.public_id}/keys/").content.decode()
    assert secret not in page and key.masked in page and "Management keys" in page
    assert "/v1/management/reference" in page
    assert Api(admin_client, secret).get("group").status_code == 200


def test_form_errors_are_shown(admin_client, group):
    response = admin_client.post(
        f"/g/{group.public_id}/keys/management/new/", {"mk-name": " ", "mk-role": "root"}
    )
    assert response.status_code == 422
    assert "Give the key a name." in response.content.decode()
    assert not ManagementKey.objects.exists()


def test_members_never_see_or_make_management_keys(member_client, group, user):
    management_key_create(group=group, name="Hidden", role="read_only", actor=user)
    page = member_client.get(f"/g/{group.public_id}/keys/").content.decode()
    assert "Management keys" not in page and "Hidden" not in page
    response = member_client.post(
        f"/g/{group.public_id}/keys/management/new/", {"mk-name": "X", "mk-role": "admin"}
    )
    assert response.status_code == 403
    assert ManagementKey.objects.count() == 1


def test_revoking_a_management_key_stops_it(admin_client, group, user):
    issued = management_key_create(group=group, name="Old", role="admin", actor=user)
    url = f"/g/{group.public_id}/keys/management/{issued.key.public_id}/revoke/"
    assert "Revoke management key" in admin_client.get(url).content.decode()
    assert admin_client.post(url).status_code == 302
    issued.key.refresh_from_db()
    assert issued.key.status == "revoked" and issued.key.revoked_by == user
    assert AuditEvent.objects.filter(action="management_key.revoke").exists()
    assert Api(admin_client, issued.secret).get("group").status_code == 401


def test_audit_log_names_the_management_key(admin_client, group, user):
    issued = management_key_create(group=group, name="Robot", role="admin", actor=user)
    Api(admin_client, issued.secret)("POST", "keys", {"name": "Made by a robot"})
    html = admin_client.get(f"/g/{group.public_id}/audit/", {"actor": "Robot"}).content.decode()
    assert "management key Robot" in html and "key.create" in html

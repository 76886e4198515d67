"""A removed or demoted Admin loses their management keys and pending invitations (finding 2)."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from management.models import ManagementKey
from management.services import management_key_create
from members.models import Invitation, Membership
from members.services import invitation_create
from tests.factories import MembershipFactory

pytestmark = pytest.mark.django_db


def mgmt_call(secret: str, method: str, path: str, body: dict | None = None):  # type: ignore[no-untyped-def]
    headers = {"HTTP_AUTHORIZATION": f"Bearer {secret}"}
    client = Client()
    if method == "GET":
        return client.get(f"/v1/management/{path}", **headers)
    return client.generic(
        method, f"/v1/management/{path}", json.dumps(body or {}), "application/json", **headers
    )


@pytest.fixture
def leaver(group):  # type: ignore[no-untyped-def]
    """A second Admin with an admin management key and a pending invitation for an alias."""
    membership = MembershipFactory(group=group, role="admin")
    issued = management_key_create(
        group=group, name="Leaver's key", role="admin", actor=membership.user
    )
    invitation_create(group=group, email="alias@example.com", role="admin", actor=membership.user)
    return membership, issued


def test_removed_admins_management_key_stops_working_and_is_audited(
    admin_client, group, user, leaver
):
    membership, issued = leaver
    assert mgmt_call(issued.secret, "GET", "group").status_code == 200
    response = admin_client.post(f"/g/{group.public_id}/members/{membership.public_id}/remove/")
    assert response.status_code == 302
    assert mgmt_call(issued.secret, "GET", "group").status_code == 401
    # …and cannot invite anyone, themselves included.
    invite = mgmt_call(issued.secret, "POST", "invitations", {"email": membership.user.email})
    assert invite.status_code == 401
    key = ManagementKey.objects.get(pk=issued.key.pk)
    assert key.status == "revoked" and key.revoked_by == user
    event = group.audit_events.get(action="management_key.revoke")
    assert event.data == {"reason": "owner_removed", "owner": membership.user.email}
    # The invitation they had sent (to an address of their own, say) is withdrawn too.
    assert Invitation.objects.get(email="alias@example.com").status == "revoked"
    assert group.audit_events.filter(action="invitation.revoke", target_repr="alias@example.com")


def test_removed_admin_cannot_reinvite_themselves_with_the_old_session(group, leaver):
    membership, _ = leaver
    old = Client()
    old.force_login(membership.user)
    MembershipFactory(group=group, role="admin")
    Membership.objects.filter(pk=membership.pk).delete()  # removed elsewhere
    response = old.post(
        f"/g/{group.public_id}/members/invite/", {"email": membership.user.email, "role": "admin"}
    )
    assert response.status_code == 404
    assert not Invitation.objects.filter(email=membership.user.email).exists()


def test_demoted_admins_keys_are_revoked(admin_client, group, leaver):
    membership, issued = leaver
    response = admin_client.post(
        f"/g/{group.public_id}/members/{membership.public_id}/role/", {"role": "member"}
    )
    assert response.status_code == 302
    assert Membership.objects.get(pk=membership.pk).role == "member"
    assert mgmt_call(issued.secret, "GET", "group").status_code == 401
    assert group.audit_events.get(action="management_key.revoke").data["reason"] == "owner_demoted"


def test_handed_over_keys_keep_working_and_show_the_new_owner(admin_client, group, user, leaver):
    membership, issued = leaver
    heir = Membership.objects.get(group=group, user=user)
    page = admin_client.get(f"/g/{group.public_id}/members/").content.decode()
    assert f'<option value="{heir.public_id}">Hand their management keys to {user.email}' in page
    response = admin_client.post(
        f"/g/{group.public_id}/members/{membership.public_id}/remove/",
        {"hand_keys_to": heir.public_id},
    )
    assert response.status_code == 302
    assert not Membership.objects.filter(pk=membership.pk).exists()
    assert mgmt_call(issued.secret, "GET", "group").status_code == 200
    assert ManagementKey.objects.get(pk=issued.key.pk).created_by == user
    event = group.audit_events.get(action="management_key.handover")
    assert event.data == {
        "reason": "owner_removed",
        "from": membership.user.email,
        "to": user.email,
    }
    page = admin_client.get(f"/g/{group.public_id}/keys/").content.decode()
    row = page.split(f'data-key="{issued.key.last_four}"', 1)[1].split("</tr>", 1)[0]
    assert user.email in row and membership.user.email not in row


def test_keys_can_only_be_handed_to_another_admin(admin_client, group, member, leaver):
    membership, issued = leaver
    plain = Membership.objects.get(user=member)
    for heir in (plain.public_id, membership.public_id):
        response = admin_client.post(
            f"/g/{group.public_id}/members/{membership.public_id}/role/",
            {"role": "member", "hand_keys_to": heir},
            follow=True,
        )
        assert "only be handed to another Admin" in response.content.decode()
    assert Membership.objects.get(pk=membership.pk).role == "admin"  # nothing changed
    assert ManagementKey.objects.get(pk=issued.key.pk).status == "active"
    other = MembershipFactory(role="admin")  # another group's Admin: not found here
    response = admin_client.post(
        f"/g/{group.public_id}/members/{membership.public_id}/remove/",
        {"hand_keys_to": other.public_id},
    )
    assert response.status_code == 404
    assert Membership.objects.filter(pk=membership.pk).exists()


def test_removal_through_the_management_api_revokes_the_keys(group, user, leaver):
    membership, issued = leaver
    mine = management_key_create(group=group, name="Mine", role="admin", actor=user)
    response = mgmt_call(mine.secret, "DELETE", f"members/{membership.public_id}")
    assert response.status_code == 200, response.content
    assert mgmt_call(issued.secret, "GET", "group").status_code == 401
    assert mgmt_call(mine.secret, "GET", "group").status_code == 200

from __future__ import annotations

import pytest

from members.models import Invitation, Membership
from members.services import MembershipError, membership_change_role, membership_remove
from tests.factories import MembershipFactory

pytestmark = pytest.mark.django_db


def test_last_admin_cannot_be_demoted_removed_or_leave(group, user):
    admin = Membership.objects.get(group=group, user=user)
    with pytest.raises(MembershipError, match="last Admin"):
        membership_change_role(membership=admin, role="member", actor=user)
    with pytest.raises(MembershipError, match="last Admin"):
        membership_remove(membership=admin, actor=user)
    second = MembershipFactory(group=group, role="admin")
    membership_change_role(membership=admin, role="member", actor=second.user)
    assert Membership.objects.get(pk=admin.pk).role == "member"
    with pytest.raises(MembershipError, match="last Admin"):
        membership_remove(membership=second, actor=second.user)


def test_members_page_filters_by_role_with_and_without_htmx(admin_client, group, member):
    base = f"/g/{group.public_id}/members/"
    admins_only = admin_client.get(base + "?role=admin").content.decode()
    assert member.email not in admins_only
    members_only = admin_client.get(base + "?role=member").content.decode()
    assert member.email in members_only and members_only.count('data-testid="member-row"') == 1
    partial = admin_client.get(
        base + "?role=member", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="member-table"
    )
    html = partial.content.decode()
    assert html.lstrip().startswith('<div id="member-table"') and "<html" not in html
    assert member.email in html
    searched = admin_client.get(base + f"?q={member.email.upper()}").content.decode()
    assert searched.count('data-testid="member-row"') == 1


def test_bad_filter_values_do_not_500(admin_client, group):
    response = admin_client.get(f"/g/{group.public_id}/members/?role=owner&q=" + "x" * 300)
    assert response.status_code == 200


def test_admin_invites_through_the_form(admin_client, group, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            f"/g/{group.public_id}/members/invite/", {"email": "t@example.com", "role": "member"}
        )
    assert response.status_code == 302
    assert Invitation.objects.get().email == "t@example.com"
    again = admin_client.post(
        f"/g/{group.public_id}/members/invite/", {"email": "t@example.com", "role": "member"}
    )
    assert again.status_code == 422 and "pending invitation" in again.content.decode()
    bad = admin_client.post(
        f"/g/{group.public_id}/members/invite/", {"email": "not-an-email", "role": "member"}
    )
    assert bad.status_code == 422 and "Enter a valid email address" in bad.content.decode()


def test_member_sees_list_but_no_admin_controls(member_client, group, member):
    html = member_client.get(f"/g/{group.public_id}/members/").content.decode()
    assert "+ Add Member" not in html and "Make Admin" not in html and "Remove</button>" not in html
    assert "Leave group" in html
    assert (
        member_client.post(
            f"/g/{group.public_id}/members/invite/", {"email": "x@example.com", "role": "admin"}
        ).status_code
        == 403
    )
    assert not Invitation.objects.exists()


def test_role_change_takes_effect_on_the_next_request(client, group, user, member):
    client.force_login(member)
    assert client.post(f"/g/{group.public_id}/settings/", {"name": "Hijack"}).status_code == 403
    membership = Membership.objects.get(user=member)
    membership_change_role(membership=membership, role="admin", actor=user)
    assert client.post(f"/g/{group.public_id}/settings/", {"name": "Renamed"}).status_code == 302
    membership_change_role(
        membership=Membership.objects.get(user=member), role="member", actor=user
    )
    assert client.post(f"/g/{group.public_id}/settings/", {"name": "Again"}).status_code == 403
    membership_remove(membership=Membership.objects.get(user=member), actor=user)
    assert client.get(f"/g/{group.public_id}/members/").status_code == 404


def test_member_can_leave(member_client, group, member):
    response = member_client.post(f"/g/{group.public_id}/members/leave/")
    assert response.status_code == 302
    assert not Membership.objects.filter(user=member).exists()
    assert group.audit_events.filter(action="member.leave").exists()


def test_last_admin_leaving_gets_a_clear_message(admin_client, group):
    response = admin_client.post(f"/g/{group.public_id}/members/leave/", follow=True)
    assert "last Admin" in response.content.decode()
    assert group.memberships.filter(role="admin").count() == 1

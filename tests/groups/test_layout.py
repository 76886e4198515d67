from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


def test_console_layout_for_a_signed_in_member(admin_client, group):
    response = admin_client.get(f"/g/{group.public_id}/settings/")
    assert response.status_code == 200
    html = response.content.decode()
    for label in ["API Group", "Billing", "API Keys", "Members", "Usage Metrics"]:
        assert f">{label}</a>" in html
    assert group.name in html
    assert "/static/vendor/htmx-2.0.11.min.js" in html
    assert 'hx-headers=\'{"X-CSRFToken": "' in html


def test_home_sends_user_to_their_group(admin_client, group):
    response = admin_client.get("/", follow=True)
    assert response.redirect_chain[0][0] == f"/g/{group.public_id}/"


def test_user_without_group_is_guided_to_create_one(client, user):
    client.force_login(user)
    response = client.get("/")
    assert response["Location"] == "/groups/new/"
    response = client.post("/groups/new/", {"name": "Acme AI", "country": "DE"})
    assert response.status_code == 302
    membership = user.memberships.get()
    assert membership.role == "admin"
    assert membership.group.name == "Acme AI"
    assert response["Location"] == f"/g/{membership.group.public_id}/"


def test_anonymous_is_sent_to_login(client, group):
    response = client.get(f"/g/{group.public_id}/settings/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


def test_other_groups_are_404(client, group):
    from tests.factories import MembershipFactory

    outsider = MembershipFactory(role="admin").user
    client.force_login(outsider)
    assert client.get(f"/g/{group.public_id}/settings/").status_code == 404
    assert client.get("/g/doesnotexist/settings/").status_code == 404

"""Admin login through allauth (finding 1) and re-authentication before sensitive actions (12)."""

from __future__ import annotations

import time
from urllib.parse import urlencode

import pytest
from allauth.account.models import EmailAddress
from allauth.mfa.totp.internal.auth import TOTP, generate_totp_secret
from django.test import Client

from accounts.security import LOGGED_IN_AT_SESSION_KEY
from billing.models import BillingProfile
from management.models import ManagementKey
from members.models import Membership
from tests.factories import MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db


def age_sign_in(client: Client, seconds: float) -> None:
    """Pretend the session signed in `seconds` ago."""
    session = client.session
    session[LOGGED_IN_AT_SESSION_KEY] = time.time() - seconds
    session.save()


# --- finding 1: /admin/ goes through allauth (MFA, rate limits) --------------------------------


@pytest.fixture
def staff_with_totp(password):  # type: ignore[no-untyped-def]
    staff = UserFactory(password=password, is_staff=True, is_superuser=True)
    TOTP.activate(staff, generate_totp_secret())
    return staff


def test_admin_login_form_does_not_log_in_with_the_password_alone(
    client, staff_with_totp, password
):
    response = client.post(
        "/admin/login/?next=/admin/",
        {"username": staff_with_totp.email, "password": password, "next": "/admin/"},
    )
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")
    assert "_auth_user_id" not in client.session  # no session was made
    assert client.get("/admin/")["Location"].startswith("/admin/login/")

    # allauth's own form asks for the second factor before there is any session.
    response = client.post(
        "/accounts/login/", {"login": staff_with_totp.email, "password": password}
    )
    assert response["Location"] == "/accounts/2fa/authenticate/"
    assert "_auth_user_id" not in client.session
    assert client.get("/admin/").status_code == 302


def test_signed_in_staff_reaches_admin_and_non_staff_is_refused(client, staff_with_totp, user):
    client.force_login(staff_with_totp)
    assert client.get("/admin/").status_code == 200
    other = Client()
    other.force_login(user)
    assert other.get("/admin/login/").status_code == 403


# --- finding 12: re-authentication before sensitive actions ------------------------------------


def _guarded(group, user) -> list[tuple[str, dict]]:  # type: ignore[no-untyped-def]
    g = f"/g/{group.public_id}"
    target = MembershipFactory(group=group, role="member")
    return [
        (f"{g}/keys/management/new/", {"mk-name": "Ops", "mk-role": "admin"}),
        (f"{g}/members/{target.public_id}/role/", {"role": "admin"}),
        (f"{g}/billing/cards/saved/", {"setup_intent": "seti_x"}),
        (f"{g}/billing/cards/pm_x/default/", {}),
        (f"{g}/billing/cards/pm_x/remove/", {}),
        (
            f"{g}/billing/auto-top-up/",
            {"topup-enabled": "on", "topup-threshold": "5", "topup-amount": "25"},
        ),
        (f"{g}/settings/security/", {"admins_require_mfa": "on"}),
    ]


def test_each_guarded_action_asks_to_reauthenticate_after_the_window(
    admin_client, group, user, settings
):
    settings.ACCOUNT_REAUTHENTICATION_TIMEOUT = 300
    age_sign_in(admin_client, 301)
    cases = _guarded(group, user)
    for url, data in cases:
        response = admin_client.post(url, data)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/accounts/reauthenticate/?next="), url
    # Adding a card starts with the Stripe.js page: asked there already.
    page = admin_client.get(f"/g/{group.public_id}/billing/cards/new/")
    assert page["Location"].startswith("/accounts/reauthenticate/")
    # Nothing happened.
    assert not ManagementKey.objects.filter(group=group).exists()
    assert not Membership.objects.filter(group=group, role="admin").exclude(user=user).exists()
    assert not BillingProfile.objects.filter(group=group, auto_top_up_enabled=True).exists()
    assert not group.audit_events.exclude(action="group.create").exists()


def test_password_reauthentication_replays_the_action(admin_client, group, user, password):
    age_sign_in(admin_client, 3600)
    url = f"/g/{group.public_id}/keys/management/new/"
    response = admin_client.post(url, {"mk-name": "Ops", "mk-role": "read_only"})
    assert response["Location"] == "/accounts/reauthenticate/?" + urlencode({"next": url})
    assert not ManagementKey.objects.exists()
    response = admin_client.post(response["Location"], {"password": password})
    # allauth resumes the suspended POST: the key is created and shown once.
    assert response.status_code == 200
    assert "Management key created: Ops" in response.content.decode()
    assert ManagementKey.objects.get(group=group).name == "Ops"


def test_a_fresh_sign_in_passes_without_asking_again(client, group, user, password):
    EmailAddress.objects.filter(user=user).update(verified=True)
    client.post("/accounts/login/", {"login": user.email, "password": password})
    url = f"/g/{group.public_id}/keys/management/new/"
    response = client.post(url, {"mk-name": "Ops", "mk-role": "read_only"})
    assert response.status_code == 200
    assert ManagementKey.objects.filter(group=group).count() == 1

from __future__ import annotations

import re

import pytest
from allauth.account.models import EmailAddress
from allauth.mfa.models import Authenticator
from allauth.mfa.totp.internal.auth import (
    SECRET_SESSION_KEY,
    format_hotp_value,
    hotp_value,
    yield_hotp_counters_from_time,
)
from django.core import mail

from accounts.models import User
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def totp_now(secret: str) -> str:
    counter = next(iter(yield_hotp_counters_from_time()))
    return format_hotp_value(hotp_value(secret, counter))


def sign_in(client, email: str, password: str):  # type: ignore[no-untyped-def]
    return client.post("/accounts/login/", {"login": email, "password": password})


def test_signup_sends_verification_then_login_works(client):
    response = client.post(
        "/accounts/signup/",
        {
            "email": "Lead@Example.com",
            "name": "Team Lead",
            "password1": "a-long-unique-passphrase",
            "password2": "a-long-unique-passphrase",
        },
    )
    assert response.status_code == 302
    assert response["Location"] == "/accounts/confirm-email/"
    user = User.objects.get(email__iexact="lead@example.com")
    assert user.name == "Team Lead"
    assert not EmailAddress.objects.get(user=user).verified

    # Verification is mandatory: signing in now only re-sends the mail.
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert "lead@example.com" in message.to[0].lower()
    link = re.search(r"https?://testserver(/accounts/confirm-email/[^\s]+)", message.body).group(1)
    response = client.get(link)
    assert response.status_code == 200  # a page with a button: no confirmation on GET
    response = client.post(link)
    assert response.status_code == 302
    assert EmailAddress.objects.get(user=user).verified

    client.logout()
    response = sign_in(client, "lead@example.com", "a-long-unique-passphrase")
    assert response.status_code == 302
    # A new user has no group yet and is guided to create one.
    assert client.get("/", follow=True).redirect_chain[-1][0] == "/groups/new/"


def test_unverified_user_cannot_get_in(client, password):
    user = UserFactory(verified=False)
    EmailAddress.objects.create(user=user, email=user.email, verified=False, primary=True)
    response = sign_in(client, user.email, password)
    assert response.status_code == 302
    assert response["Location"] == "/accounts/confirm-email/"
    assert client.get("/").status_code == 302
    assert "/accounts/login/" in client.get("/")["Location"]


def test_login_does_not_reveal_which_emails_exist(client, user):
    unknown = sign_in(client, "nobody@example.com", "whatever-password")
    wrong = sign_in(client, user.email, "wrong-password-here")
    assert unknown.status_code == wrong.status_code == 200
    error_unknown = re.findall(
        r"The email address and/or password you specified are not correct", unknown.content.decode()
    )
    error_wrong = re.findall(
        r"The email address and/or password you specified are not correct", wrong.content.decode()
    )
    assert error_unknown and error_wrong


def test_password_reset_mail_only_for_real_accounts_but_same_page(client, user):
    a = client.post("/accounts/password/reset/", {"email": user.email})
    b = client.post("/accounts/password/reset/", {"email": "ghost@example.com"})
    assert a.status_code == b.status_code == 302
    assert a["Location"] == b["Location"]
    assert len(mail.outbox) == 2  # the unknown address is told it has no account, privately
    assert "reset" in mail.outbox[0].body.lower()


def test_totp_enrolment_and_login_with_second_factor(client, user, password):
    assert sign_in(client, user.email, password).status_code == 302
    # Turning on MFA asks for the password again first.
    page = client.get("/accounts/2fa/totp/activate/")
    assert page["Location"].startswith("/accounts/reauthenticate/")
    assert client.post("/accounts/reauthenticate/", {"password": password}).status_code == 302
    page = client.get("/accounts/2fa/totp/activate/")
    assert page.status_code == 200
    secret = client.session[SECRET_SESSION_KEY]
    response = client.post("/accounts/2fa/totp/activate/", {"code": totp_now(secret)})
    assert response.status_code == 302
    kinds = set(Authenticator.objects.filter(user=user).values_list("type", flat=True))
    assert kinds == {"totp", "recovery_codes"}

    client.logout()
    response = sign_in(client, user.email, password)
    assert response["Location"] == "/accounts/2fa/authenticate/"
    assert client.get("/accounts/settings/").status_code == 302  # not signed in yet
    response = client.post("/accounts/2fa/authenticate/", {"code": "000000"})
    assert response.status_code == 200  # wrong code: stays on the form
    response = client.post("/accounts/2fa/authenticate/", {"code": totp_now(secret)})
    assert response.status_code == 302
    assert client.get("/accounts/settings/").status_code == 200


def test_login_failures_are_rate_limited(client, user, settings):
    settings.ACCOUNT_RATE_LIMITS = {"login_failed": "3/m/ip"}
    statuses = [sign_in(client, user.email, f"wrong-{i}").status_code for i in range(5)]
    page = sign_in(client, user.email, "wrong-again").content.decode()
    assert statuses[:3] == [200, 200, 200]
    assert "Too many failed login attempts" in page


def test_profile_time_zone_is_validated_and_saved(client, user):
    client.force_login(user)
    bad = client.post("/accounts/settings/", {"name": "A", "time_zone": "Mars/Olympus"})
    assert bad.status_code == 200
    assert "Select a valid choice" in bad.content.decode()
    good = client.post("/accounts/settings/", {"name": "A", "time_zone": "Europe/Berlin"})
    assert good.status_code == 302
    user.refresh_from_db()
    assert user.time_zone == "Europe/Berlin"

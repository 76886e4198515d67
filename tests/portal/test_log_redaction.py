"""Links that carry secrets (invitations, password resets, e-mail confirmations) never reach the log.

The flows run through the real URLs; the log is what the configured console handler writes.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator

import pytest
from django.core import mail

from members.models import Membership
from members.services import invitation_create
from portal.logging import RedactSecretsFilter
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def console_log() -> Iterator[io.StringIO]:
    """What the portal's console handler (settings.LOGGING) writes, captured."""
    handler = next(
        h
        for h in logging.getLogger().handlers
        if any(isinstance(f, RedactSecretsFilter) for f in h.filters)
    )
    assert isinstance(handler, logging.StreamHandler)
    captured = io.StringIO()
    old = handler.setStream(captured)
    try:
        yield captured
    finally:
        handler.setStream(old)


def link(body: str, path: str) -> str:
    found = re.search(rf"https?://testserver({re.escape(path)}[^\s]+)", body)
    assert found, body
    return found.group(1)


def test_invitation_reset_and_confirmation_links_are_redacted_in_the_log(
    client, group, user, console_log
):  # type: ignore[no-untyped-def]
    secrets = []

    # An invitation, opened and accepted by the invitee.
    joiner = UserFactory()
    issued = invitation_create(group=group, email=joiner.email, role="member", actor=user)
    secrets.append(issued.token)
    client.force_login(joiner)
    assert client.get(f"/invitations/{issued.token}/").status_code == 200
    assert client.post(f"/invitations/{issued.token}/").status_code == 302
    assert Membership.objects.filter(group=group, user=joiner).exists()
    client.logout()

    # A password reset, from the e-mailed link to the new password.
    mail.outbox.clear()
    assert client.post("/accounts/password/reset/", {"email": user.email}).status_code == 302
    reset = link(mail.outbox[0].body, "/accounts/password/reset/key/")
    secrets.append(reset.rstrip("/").rsplit("/", 1)[1].split("-", 1)[1])
    form_page = client.get(reset, follow=True)
    assert form_page.status_code == 200
    new_password = "another-long-unique-passphrase"
    done = client.post(
        form_page.redirect_chain[-1][0], {"password1": new_password, "password2": new_password}
    )
    assert done.status_code == 302
    user.refresh_from_db()
    assert user.check_password(new_password)

    # A sign-up's e-mail confirmation.
    mail.outbox.clear()
    signup = {"email": "new@example.com", "name": "New", "password1": new_password,
              "password2": new_password}  # fmt: skip
    assert client.post("/accounts/signup/", signup).status_code == 302
    confirm = link(mail.outbox[0].body, "/accounts/confirm-email/")
    secrets.append(confirm.rstrip("/").rsplit("/", 1)[1])
    assert client.get(confirm).status_code == 200
    assert client.post(confirm).status_code == 302

    # uvicorn's access log, if an operator turns it on, goes through the same handler.
    access = logging.getLogger("uvicorn.access")
    level = access.level
    access.setLevel(logging.INFO)
    try:
        access.info('%s - "%s %s HTTP/%s" %d', "203.0.113.5:4711", "GET", confirm, "1.1", 200)
    finally:
        access.setLevel(level)

    log = console_log.getvalue()
    assert all(len(s) >= 16 for s in secrets), secrets
    assert "/invitations/[redacted]/" in log  # the requests were logged…
    assert "/accounts/password/reset/key/[redacted]/" in log
    assert log.count("/accounts/confirm-email/[redacted]/") >= 3
    for secret in secrets:  # …without their secrets
        assert secret not in log

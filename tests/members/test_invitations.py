from __future__ import annotations

import re
from datetime import timedelta

import pytest
from allauth.account.models import EmailAddress
from django.core import mail
from django.utils import timezone

from members.models import Invitation, Membership
from members.services import (
    InvitationProblem,
    MembershipError,
    invitation_accept,
    invitation_create,
    invitation_resend,
    invitation_revoke,
    token_hash,
)
from members.tasks import send_invitation_email
from tests.factories import MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db


def link_token(message) -> str:  # type: ignore[no-untyped-def]
    return re.search(r"/invitations/([A-Za-z0-9_-]+)/", message.body).group(1)


def test_invite_emails_a_link_after_commit_and_stores_only_a_hash(
    group, user, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        issued = invitation_create(group=group, email="New@Example.com", role="member", actor=user)
    assert len(callbacks) == 1
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["new@example.com"]
    assert group.name in message.subject
    token = link_token(message)
    assert token == issued.token
    invitation = Invitation.objects.get()
    assert invitation.token_hash == token_hash(token) and token not in invitation.token_hash
    assert invitation.expires_at - timezone.now() > timedelta(days=6, hours=23)
    assert group.audit_events.filter(action="invitation.create").exists()


def test_nothing_is_sent_if_the_transaction_rolls_back(
    group, user, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        invitation_create(group=group, email="x@example.com", role="member", actor=user)
    assert len(callbacks) == 1 and mail.outbox == []


def test_inviting_a_member_or_a_pending_address_is_refused(group, user, member):
    with pytest.raises(MembershipError, match="already a member"):
        invitation_create(group=group, email=member.email.upper(), role="member", actor=user)
    invitation_create(group=group, email="pending@example.com", role="member", actor=user)
    with pytest.raises(MembershipError, match="pending invitation"):
        invitation_create(group=group, email="Pending@example.com", role="admin", actor=user)


def test_accept_with_the_invited_verified_address_joins_with_the_role(group, user):
    issued = invitation_create(group=group, email="joiner@example.com", role="admin", actor=user)
    joiner = UserFactory(email="joiner@example.com")
    membership = invitation_accept(token=issued.token, user=joiner)
    assert membership.role == "admin" and membership.group == group
    with pytest.raises(InvitationProblem) as problem:
        invitation_accept(token=issued.token, user=joiner)
    assert problem.value.kind == "used"


def test_accept_refuses_another_or_unverified_address(group, user):
    issued = invitation_create(group=group, email="right@example.com", role="member", actor=user)
    with pytest.raises(InvitationProblem) as problem:
        invitation_accept(token=issued.token, user=UserFactory(email="wrong@example.com"))
    assert problem.value.kind == "wrong_user"
    unverified = UserFactory(email="right@example.com", verified=False)
    with pytest.raises(InvitationProblem):
        invitation_accept(token=issued.token, user=unverified)
    assert not Membership.objects.filter(user=unverified).exists()


def test_expired_revoked_and_unknown_tokens(group, user):
    joiner = UserFactory(email="late@example.com")
    issued = invitation_create(group=group, email="late@example.com", role="member", actor=user)
    Invitation.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(InvitationProblem) as problem:
        invitation_accept(token=issued.token, user=joiner)
    assert problem.value.kind == "expired"
    Invitation.objects.update(expires_at=timezone.now() + timedelta(days=1))
    invitation_revoke(invitation=issued.invitation, actor=user)
    with pytest.raises(InvitationProblem) as problem:
        invitation_accept(token=issued.token, user=joiner)
    assert problem.value.kind == "revoked"
    with pytest.raises(InvitationProblem) as problem:
        invitation_accept(token="made-up-token", user=joiner)
    assert problem.value.kind == "unknown"


def test_resend_kills_the_old_link(group, user, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        first = invitation_create(group=group, email="again@example.com", role="member", actor=user)
    with django_capture_on_commit_callbacks(execute=True):
        second = invitation_resend(invitation=first.invitation, actor=user)
    assert len(mail.outbox) == 2 and link_token(mail.outbox[1]) == second.token
    joiner = UserFactory(email="again@example.com")
    with pytest.raises(InvitationProblem):
        invitation_accept(token=first.token, user=joiner)
    assert invitation_accept(token=second.token, user=joiner).group == group


def test_email_task_skips_replaced_and_revoked_links(group, user):
    first = invitation_create(group=group, email="skip@example.com", role="member", actor=user)
    mail.outbox.clear()
    second = invitation_resend(invitation=first.invitation, actor=user)
    mail.outbox.clear()
    assert send_invitation_email(first.invitation.pk, first.token) is False  # old link
    assert send_invitation_email(second.invitation.pk, second.token) is True
    invitation_revoke(invitation=second.invitation, actor=user)
    assert send_invitation_email(second.invitation.pk, second.token) is False
    assert len(mail.outbox) == 1


def test_signup_through_the_link_is_verified_by_the_token_and_joins(client, group, user):
    issued = invitation_create(group=group, email="fresh@example.com", role="member", actor=user)
    mail.outbox.clear()
    page = client.get(f"/invitations/{issued.token}/")
    assert page.status_code == 200 and "Create account and join" in page.content.decode()
    signup = client.get("/accounts/signup/?email=fresh@example.com")
    assert 'value="fresh@example.com"' in signup.content.decode()
    response = client.post(
        "/accounts/signup/",
        {
            "email": "fresh@example.com",
            "name": "Fresh",
            "password1": "a-long-unique-passphrase",
            "password2": "a-long-unique-passphrase",
        },
    )
    assert response.status_code == 302
    assert response["Location"] == f"/invitations/{issued.token}/"
    assert mail.outbox == []  # no verification mail: the invitation proved the address
    assert EmailAddress.objects.get(email="fresh@example.com").verified
    response = client.post(f"/invitations/{issued.token}/")
    assert response["Location"] == f"/g/{group.public_id}/"
    assert Membership.objects.get(user__email="fresh@example.com").role == "member"


def test_signed_in_with_another_address_gets_a_clear_refusal(client, group, user):
    issued = invitation_create(group=group, email="someone@example.com", role="member", actor=user)
    client.force_login(MembershipFactory().user)
    response = client.get(f"/invitations/{issued.token}/")
    assert response.status_code == 403
    assert "This invitation is for someone@example.com" in response.content.decode()
    assert client.post(f"/invitations/{issued.token}/").status_code == 403


@pytest.mark.parametrize("state", ["unknown", "expired", "revoked", "used"])
def test_bad_links_get_a_clear_page_never_a_500(client, group, user, state):
    issued = invitation_create(group=group, email="p@example.com", role="member", actor=user)
    token = issued.token
    if state == "unknown":
        token = "not-a-real-token"
    elif state == "expired":
        Invitation.objects.update(expires_at=timezone.now() - timedelta(days=1))
    elif state == "revoked":
        invitation_revoke(invitation=issued.invitation, actor=user)
    else:
        invitation_accept(token=token, user=UserFactory(email="p@example.com"))
    response = client.get(f"/invitations/{token}/")
    assert response.status_code in (404, 410)
    assert 'data-testid="invitation-problem"' in response.content.decode()

"""Memberships and invitations. The last-Admin rule is enforced here, under a row lock."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from allauth.account.models import EmailAddress
from django.conf import settings
from django.db import IntegrityError, models, transaction
from django.utils import timezone

from audit.models import AuditEvent
from audit.services import acting_user, audit_record
from core.hooks import Hook
from groups.models import APIGroup
from members.models import Invitation, InvitationStatus, Membership, Role
from members.tasks import send_invitation_email

INVITATION_VALID_FOR = timedelta(days=7)
# Invitation e-mails (new and resent) are counted over this rolling window.
INVITATION_QUOTA_WINDOW = timedelta(days=1)
INVITATION_EMAIL_ACTIONS = ("invitation.create", "invitation.resend")


class MembershipError(ValueError):
    """A change to a group's people that is not allowed; the message says why.

    `field` names the input at fault when there is one (for API errors).
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class InvitationLimitReached(MembershipError):
    """Too many invitation e-mails in the last 24 hours, from one person or one group."""


# What an Admin holds beyond their membership is taken away when they are demoted, removed or
# leave, in that change's transaction: management registers the revocation (or handover to
# `hand_to`) of the management keys they created, in its AppConfig.ready() (see core.hooks).
# Called with group=, user=, hand_to=, reason=, actor=, request=.
admin_offboarded = Hook("admin_offboarded")


@transaction.atomic
def membership_add(*, group: Any, user: Any, role: str) -> Membership:
    """Make `user` a member of `group` with `role`; the caller audits the flow it is part of
    (a new group's first Admin)."""
    return Membership.objects.create(group=group, user=user, role=role)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _lock_admins(group: Any) -> list[Membership]:
    """Lock the group's Admin memberships so two changes cannot both remove 'the other' Admin."""
    return list(
        Membership.objects.select_for_update().filter(group=group, role=Role.ADMIN).order_by("id")
    )


def _ensure_not_last_admin(membership: Membership, admins: list[Membership], doing: str) -> None:
    if membership.role == Role.ADMIN and len(admins) <= 1:
        raise MembershipError(
            f"You can't {doing} the last Admin of this group. Make someone else an Admin first."
        )


def _key_heir(
    hand_keys_to: Membership | None, membership: Membership, admins: list[Membership]
) -> Any | None:
    """Return the user who takes over the leaving Admin's management keys, or None (revoke)."""
    if hand_keys_to is None:
        return None
    heir = next((a for a in admins if a.pk == hand_keys_to.pk and a.pk != membership.pk), None)
    if heir is None:
        raise MembershipError(
            "Management keys can only be handed to another Admin of this group.",
            field="hand_keys_to",
        )
    return heir.user


def _revoke_invitations(
    *, membership: Membership, removed: bool, reason: str, actor: Any, request: Any
) -> None:
    """Withdraw the pending invitations the person sent as Admin (and, when they are removed, the
    ones addressed to them), so they cannot let themselves back in through one."""
    user = membership.user
    mine = models.Q(invited_by=user)
    if removed:
        emails = {user.email.lower()} | {
            e.lower()
            for e in EmailAddress.objects.filter(user=user).values_list("email", flat=True)
        }
        mine |= models.Q(email__in=emails)
    pending = (
        Invitation.objects.select_for_update()
        .filter(mine, group=membership.group, status=InvitationStatus.PENDING)
        .order_by("id")
    )
    for invitation in pending:
        _invitation_mark_revoked(invitation, actor=actor, request=request, data={"reason": reason})


def _invitation_mark_revoked(
    invitation: Invitation, *, actor: Any, request: Any, data: dict[str, Any] | None = None
) -> None:
    """Revoke a locked pending invitation and audit it (the one way an invitation is revoked)."""
    invitation.status = InvitationStatus.REVOKED
    invitation.save(update_fields=["status"])
    audit_record(
        group=invitation.group,
        actor=actor,
        action="invitation.revoke",
        target_repr=invitation.email,
        request=request,
        data=data,
    )


def _offboard_admin(
    *,
    membership: Membership,
    heir: Any | None,
    removed: bool,
    reason: str,
    actor: Any,
    request: Any,
) -> None:
    """Take away what the person held as Admin: their management keys (revoked, or handed to
    `heir`) and their pending invitations."""
    admin_offboarded(
        group=membership.group,
        user=membership.user,
        hand_to=heir,
        reason=reason,
        actor=actor,
        request=request,
    )
    _revoke_invitations(
        membership=membership, removed=removed, reason=reason, actor=actor, request=request
    )


@transaction.atomic
def membership_change_role(
    *,
    membership: Membership,
    role: str,
    actor: Any,
    request: Any = None,
    hand_keys_to: Membership | None = None,
) -> Membership:
    """Make a member an Admin or a Member. A demoted Admin's management keys are revoked, or
    handed to `hand_keys_to` (another Admin), and their pending invitations withdrawn."""
    if role not in Role.values:
        raise MembershipError("Choose Admin or Member.", field="role")
    admins = _lock_admins(membership.group)
    membership = (
        Membership.objects.select_for_update().select_related("user", "group").get(pk=membership.pk)
    )
    if membership.role == role:
        return membership
    heir = None
    if role == Role.MEMBER:
        _ensure_not_last_admin(membership, admins, "demote")
        heir = _key_heir(hand_keys_to, membership, admins)
    old = membership.role
    membership.role = role
    membership.save(update_fields=["role"])
    audit_record(
        group=membership.group,
        actor=actor,
        action="member.role_change",
        target=membership.user,
        request=request,
        data={"from": old, "to": role},
    )
    if role == Role.MEMBER:
        _offboard_admin(
            membership=membership,
            heir=heir,
            removed=False,
            reason="owner_demoted",
            actor=actor,
            request=request,
        )
    return membership


@transaction.atomic
def membership_remove(
    *,
    membership: Membership,
    actor: Any,
    request: Any = None,
    hand_keys_to: Membership | None = None,
) -> None:
    """Remove someone from the group (or let them leave). Their management keys are revoked, or
    handed to `hand_keys_to` (another Admin); pending invitations they sent or that are addressed
    to them are withdrawn."""
    admins = _lock_admins(membership.group)
    membership = (
        Membership.objects.select_for_update().select_related("user", "group").get(pk=membership.pk)
    )
    user = acting_user(actor)  # a management key never "leaves"
    leaving = user is not None and membership.user_id == user.pk
    _ensure_not_last_admin(membership, admins, "remove" if not leaving else "leave as")
    heir = _key_heir(hand_keys_to, membership, admins)
    _offboard_admin(
        membership=membership,
        heir=heir,
        removed=True,
        reason="owner_left" if leaving else "owner_removed",
        actor=actor,
        request=request,
    )
    audit_record(
        group=membership.group,
        actor=actor,
        action="member.leave" if leaving else "member.remove",
        target=membership.user,
        request=request,
        data={"role": membership.role},
    )
    membership.delete()


@dataclass(frozen=True)
class IssuedInvitation:
    invitation: Invitation
    token: str


def _new_token() -> tuple[str, str]:
    token = secrets.token_urlsafe(32)
    return token, token_hash(token)


def _queue_email(invitation: Invitation, token: str) -> None:
    send_invitation_email.delay_on_commit(invitation.pk, token)


def _ensure_invitation_quota(*, group: Any, actor: Any) -> None:
    """Refuse another invitation e-mail when the sender or the group used up today's allowance.

    Every e-mail sent (a new invitation or a resend) is an audit event, so that log is the
    counter. The sender is the signed-in user; for a management key, the Admin who owns it (so a
    key does not add to its owner's allowance), or the key itself when it has no owner. The group
    row is locked first so two requests cannot both take the last place.
    """
    APIGroup.objects.select_for_update().filter(pk=group.pk).first()
    since = timezone.now() - INVITATION_QUOTA_WINDOW
    recent = AuditEvent.objects.filter(action__in=INVITATION_EMAIL_ACTIONS, created_at__gte=since)
    group_limit = settings.INVITATIONS_PER_GROUP_PER_DAY
    if recent.filter(group=group).count() >= group_limit:
        raise InvitationLimitReached(
            f"This group has sent {group_limit} invitation e-mails in the last 24 hours, its daily "
            "limit. Nothing was sent; try again tomorrow."
        )
    user = acting_user(actor) or getattr(actor, "created_by", None)
    if user is not None:
        sender = models.Q(actor=user) | models.Q(actor_management_key__created_by=user)
    else:
        sender = models.Q(actor_management_key=actor)
    user_limit = settings.INVITATIONS_PER_USER_PER_DAY
    if recent.filter(sender).count() >= user_limit:
        raise InvitationLimitReached(
            f"You have sent {user_limit} invitation e-mails in the last 24 hours, the daily limit "
            "per person. Nothing was sent; try again tomorrow."
        )


@transaction.atomic
def invitation_create(
    *, group: Any, email: str, role: str, actor: Any, request: Any = None
) -> IssuedInvitation:
    """Invite `email` and queue the e-mail; InvitationLimitReached past the daily limits."""
    email = email.strip().lower()
    if role not in Role.values:
        raise MembershipError("Choose Admin or Member.", field="role")
    _ensure_invitation_quota(group=group, actor=actor)
    if Membership.objects.filter(group=group, user__email__iexact=email).exists():
        raise MembershipError(f"{email} is already a member of this group.", field="email")
    if Invitation.objects.filter(
        group=group, email__iexact=email, status=InvitationStatus.PENDING
    ).exists():
        raise MembershipError(
            f"{email} already has a pending invitation. Resend it from the list below.",
            field="email",
        )
    token, hashed = _new_token()
    try:
        with transaction.atomic():
            invitation = Invitation.objects.create(
                group=group,
                email=email,
                role=role,
                token_hash=hashed,
                invited_by=acting_user(actor),
                expires_at=timezone.now() + INVITATION_VALID_FOR,
            )
    except IntegrityError:
        raise MembershipError(f"{email} already has a pending invitation.", field="email") from None
    audit_record(
        group=group,
        actor=actor,
        action="invitation.create",
        target_repr=email,
        request=request,
        data={"role": role},
    )
    _queue_email(invitation, token)
    return IssuedInvitation(invitation, token)


@transaction.atomic
def invitation_resend(
    *, invitation: Invitation, actor: Any, request: Any = None
) -> IssuedInvitation:
    """Send a new link; the old one stops working. The 7 days start again. Counts towards the
    daily invitation limits like a new invitation."""
    _ensure_invitation_quota(group=invitation.group, actor=actor)  # locks the group row first
    invitation = Invitation.objects.select_for_update().get(pk=invitation.pk)
    if invitation.status != InvitationStatus.PENDING:
        raise MembershipError("Only pending invitations can be resent.")
    token, hashed = _new_token()
    invitation.token_hash = hashed
    invitation.expires_at = timezone.now() + INVITATION_VALID_FOR
    invitation.save(update_fields=["token_hash", "expires_at"])
    audit_record(
        group=invitation.group,
        actor=actor,
        action="invitation.resend",
        target_repr=invitation.email,
        request=request,
    )
    _queue_email(invitation, token)
    return IssuedInvitation(invitation, token)


@transaction.atomic
def invitation_revoke(*, invitation: Invitation, actor: Any, request: Any = None) -> None:
    invitation = Invitation.objects.select_for_update().get(pk=invitation.pk)
    if invitation.status != InvitationStatus.PENDING:
        raise MembershipError("Only pending invitations can be revoked.")
    _invitation_mark_revoked(invitation, actor=actor, request=request)


class InvitationProblem(ValueError):
    """Why a link cannot be used: unknown, expired, revoked, used or for someone else."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def invitation_for_token(token: str) -> Invitation:
    """Return the pending, unexpired invitation for a link's token, or raise InvitationProblem."""
    invitation = (
        Invitation.objects.select_related("group", "invited_by")
        .filter(token_hash=token_hash(token))
        .first()
    )
    if invitation is None:
        raise InvitationProblem(
            "unknown",
            "This invitation link is not valid. It may have been replaced by a newer one: check your e-mail, or ask an Admin to resend it.",
        )
    if invitation.status == InvitationStatus.ACCEPTED:
        raise InvitationProblem("used", "This invitation has already been used.")
    if invitation.status == InvitationStatus.REVOKED:
        raise InvitationProblem(
            "revoked", "This invitation was withdrawn by an Admin of the group."
        )
    if invitation.expires_at <= timezone.now():
        raise InvitationProblem(
            "expired",
            "This invitation has expired (links are valid for 7 days). Ask an Admin to resend it.",
        )
    return invitation


def email_verified(user: Any, email: str) -> bool:
    return EmailAddress.objects.filter(user=user, email__iexact=email, verified=True).exists()


@transaction.atomic
def invitation_accept(*, token: str, user: Any, request: Any = None) -> Membership:
    """Join the invited group as the invited role, if `user` owns the invited address."""
    invitation = invitation_for_token(token)
    invitation = (
        Invitation.objects.select_for_update().select_related("group").get(pk=invitation.pk)
    )
    if invitation.status != InvitationStatus.PENDING:
        raise InvitationProblem("used", "This invitation has already been used.")
    if user.email.lower() != invitation.email.lower() or not email_verified(user, invitation.email):
        raise InvitationProblem(
            "wrong_user",
            f"This invitation is for {invitation.email}, but you are signed in as {user.email}. "
            "Sign out and open the link again, or ask the Admin to invite this address.",
        )
    membership, created = Membership.objects.get_or_create(
        group=invitation.group, user=user, defaults={"role": invitation.role}
    )
    invitation.status = InvitationStatus.ACCEPTED
    invitation.accepted_by = user
    invitation.accepted_at = timezone.now()
    invitation.save(update_fields=["status", "accepted_by", "accepted_at"])
    audit_record(
        group=invitation.group, actor=user, action="invitation.accept", target=user, request=request,
        data={"role": membership.role, "already_member": not created},
    )  # fmt: skip
    return membership

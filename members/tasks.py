from __future__ import annotations

from celery import shared_task
from django.conf import settings
from django.core.mail import send_mail
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from members.models import Invitation, InvitationStatus


@shared_task(acks_late=True, autoretry_for=(OSError,), retry_backoff=True, max_retries=5)
def send_invitation_email(invitation_id: int, token: str) -> bool:
    """E-mail an invitation link; skip links that were replaced, revoked or used meanwhile."""
    from members.services import token_hash  # services queue this task: see billing/tasks.py

    invitation = (
        Invitation.objects.select_related("group", "invited_by").filter(pk=invitation_id).first()
    )
    if invitation is None or invitation.status != InvitationStatus.PENDING:
        return False
    if invitation.token_hash != token_hash(token):  # resent since: this link is dead anyway
        return False
    url = settings.SITE_URL.rstrip("/") + reverse("invitation_accept", kwargs={"token": token})
    context = {"invitation": invitation, "url": url, "site_name": settings.PORTAL_NAME}
    inviter = invitation.invited_by.display_name if invitation.invited_by else "An Admin"
    send_mail(
        subject=f"{inviter} invited you to {invitation.group.name} on {settings.PORTAL_NAME}",
        message=render_to_string("members/email/invitation.txt", context),
        from_email=None,
        recipient_list=[invitation.email],
    )
    Invitation.objects.filter(pk=invitation.pk).update(sent_at=timezone.now())
    return True

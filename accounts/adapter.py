from __future__ import annotations

from allauth.account.adapter import DefaultAccountAdapter
from django.http import HttpRequest
from django.urls import reverse


class AccountAdapter(DefaultAccountAdapter):
    """Project hooks into allauth's flows."""

    def _invitation_url(self, request: HttpRequest) -> str | None:
        token = request.session.get("invitation_token")
        return reverse("invitation_accept", kwargs={"token": token}) if token else None

    def get_login_redirect_url(self, request: HttpRequest) -> str:
        # Someone who opened an invitation link and then signed in goes back to it.
        return self._invitation_url(request) or super().get_login_redirect_url(request)

    def get_signup_redirect_url(self, request: HttpRequest) -> str:
        return self._invitation_url(request) or super().get_signup_redirect_url(request)

"""Account security helpers: two-factor status, and re-authentication before sensitive actions.

Re-authentication uses allauth's flow.

allauth's `reauthentication_required` counts only an explicit re-authentication (the "confirm
your password" page or an MFA code) as recent, so a person who has just signed in would be asked
for their password again at once. Here signing in counts too: every `django.contrib.auth.login`
stamps the session, and a guarded view passes when that stamp or allauth's last
re-authentication is younger than ACCOUNT_REAUTHENTICATION_TIMEOUT (allauth's default, 300 s).
Otherwise allauth's middleware suspends the request, shows the re-authentication page (password,
or the TOTP code for users with two-factor authentication) and then replays it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from allauth.account import app_settings as allauth_account_settings
from allauth.account.decorators import reauthentication_required as allauth_reauthentication
from allauth.mfa.models import Authenticator
from allauth.mfa.utils import is_mfa_enabled
from django.http import HttpRequest, HttpResponse

LOGGED_IN_AT_SESSION_KEY = "portal_logged_in_at"


def user_has_totp(user: Any) -> bool:
    """Return whether the user has an authenticator app (allauth MFA TOTP) set up."""
    return bool(user.is_authenticated) and is_mfa_enabled(user, [Authenticator.Type.TOTP])


def stamp_login(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    """Remember in the session when this user signed in (receiver of `user_logged_in`)."""
    if request is not None and hasattr(request, "session"):
        request.session[LOGGED_IN_AT_SESSION_KEY] = time.time()


def signed_in_recently(request: HttpRequest) -> bool:
    """Return whether the session's sign-in is younger than the re-authentication window."""
    at = request.session.get(LOGGED_IN_AT_SESSION_KEY) if hasattr(request, "session") else None
    if not isinstance(at, int | float):
        return False
    return time.time() - at < allauth_account_settings.REAUTHENTICATION_TIMEOUT


def _needs_reauthentication(request: HttpRequest) -> bool:
    return not signed_in_recently(request)


def reauthentication_required(
    view: Callable[..., HttpResponse] | None = None, *, allow_get: bool = False
) -> Any:
    """Ask for the password (or TOTP code) again unless the user signed in or re-authenticated
    within the window. `allow_get` lets GET through (a confirmation page)."""
    decorator = allauth_reauthentication(allow_get=allow_get, enabled=_needs_reauthentication)
    return decorator(view) if view is not None else decorator

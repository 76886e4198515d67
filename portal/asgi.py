"""ASGI entry point.

The gateway routes (`/v1/…`, `/chat/completions`) may be served by a lean ASGI app beside
Django (see gateway/); everything else goes to Django.
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

from portal.proxy import TrustedProxyMiddleware

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

django_application = get_asgi_application()


def _build_application():
    try:
        from gateway.asgi import wrap  # noqa: PLC0415 - optional lean gateway route
    except ImportError:
        return django_application
    return wrap(django_application)


# Outermost: every route sees the client's address, not the load balancer's (TRUSTED_PROXIES).
application = TrustedProxyMiddleware(_build_application())

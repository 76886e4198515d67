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

# The gateway's modules use models, so they are imported once Django is set up (as Django's
# documentation does for Channels' routing).
from gateway.asgi import wrap  # noqa: E402

# Outermost: every route sees the client's address, not the load balancer's (TRUSTED_PROXIES).
application = TrustedProxyMiddleware(wrap(django_application))

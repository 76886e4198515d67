"""Trust X-Forwarded-For / X-Forwarded-Proto only from the proxies named in TRUSTED_PROXIES.

Behind a load balancer every connection comes from the balancer. This ASGI middleware, around the
whole application (Django and the gateway), replaces the connecting address with the client's:
X-Forwarded-For is read from the right, past the trusted proxies, and the first untrusted address
is the client (uvicorn's own ProxyHeadersMiddleware does the walk). Django's REMOTE_ADDR — and so
allauth's per-IP rate limits and the audit log's IPs — and the gateway's `scope["client"]` all
see that one address. A peer that is not a trusted proxy cannot forge one: its headers are ignored.

The servers run with `--no-proxy-headers` so that this setting is the only place proxies are
trusted (uvicorn would otherwise trust 127.0.0.1 on its own).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware


class TrustedProxyMiddleware:
    """ASGI middleware: take the client's address from trusted proxies' forwarding headers."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._trusted: tuple[str, ...] | None = None
        self._proxied: Any = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        trusted = tuple(settings.TRUSTED_PROXIES)
        if not trusted or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if trusted != self._trusted:  # settings are fixed in production; tests change them
            self._proxied = ProxyHeadersMiddleware(self.app, trusted_hosts=list(trusted))
            self._trusted = trusted
        await self._proxied(scope, receive, send)

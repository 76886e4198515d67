"""Signing, payloads and the HTTP post of webhook deliveries.

Signed like Stripe's: `Portal-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
A receiver recomputes the HMAC over the timestamp, a dot and the raw body with its endpoint's
secret, compares in constant time, and refuses timestamps older than a few minutes (replays).
`Portal-Event-Id` (also the payload's `id`) is the same on every retry: receivers de-duplicate by it.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
from django.conf import settings

SIGNATURE_HEADER = "Portal-Signature"
EVENT_ID_HEADER = "Portal-Event-Id"
EVENT_TYPE_HEADER = "Portal-Event-Type"
USER_AGENT = "Portal-Webhooks/1.0"
SNIPPET_CHARS = 500
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """Return the `Portal-Signature` header value for `body` sent at `timestamp`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(
    secret: str, body: bytes, header: str, *, tolerance: int = 300, now: int | None = None
) -> bool:
    """Check a `Portal-Signature` header as a receiver would (what the docs show receivers)."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((now if now is not None else int(time.time())) - timestamp) > tolerance:
        return False
    expected = sign(secret, body, timestamp).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


class WebhookURLError(ValueError):
    """A URL we will not post to; the message says why."""


def check_url(url: str) -> str:
    """Return the URL if deliveries may go there: https, or http to this machine in development
    and tests (`ALERTS_WEBHOOK_ALLOW_HTTP`, on unless DJANGO_ENV=production). In production,
    literal private, loopback and link-local addresses are refused too."""
    url = url.strip()
    if any(c.isspace() or not c.isprintable() for c in url):
        raise WebhookURLError("Enter a full https:// URL (no spaces or control characters).")
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
    except ValueError:  # e.g. an unclosed IPv6 bracket: "https://[abc/"
        raise WebhookURLError("Enter a full https:// URL.") from None
    if parts.scheme not in ("https", "http") or not host:
        raise WebhookURLError("Enter a full https:// URL.")
    if parts.username or parts.password:
        raise WebhookURLError("Leave credentials out of the URL; verify the signature instead.")
    allow_http = settings.ALERTS_WEBHOOK_ALLOW_HTTP
    if parts.scheme == "http" and not (allow_http and host in LOCAL_HOSTS):
        raise WebhookURLError("Webhook URLs must use https://.")
    if not allow_http:
        if host in LOCAL_HOSTS:
            raise WebhookURLError("Webhook URLs must be reachable on the internet.")
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            address = None
        if address is not None and not address.is_global:
            raise WebhookURLError("Webhook URLs must be reachable on the internet.")
    return url


def encode(payload: dict[str, Any]) -> str:
    return orjson.dumps(payload).decode()


def slack_payload(text: str) -> dict[str, Any]:
    """Slack's (and Mattermost's, Discord's /slack) incoming-webhook shape."""
    return {"text": text}


@dataclass(frozen=True)
class PostResult:
    status_code: int | None
    snippet: str
    duration_ms: int
    error: str

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def post(
    *, url: str, secret: str, body: str, event_id: str, event_type: str, now: int
) -> PostResult:
    """POST one signed delivery; never raises for network trouble (it is the attempt's result)."""
    data = body.encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        SIGNATURE_HEADER: sign(secret, data, now),
        EVENT_ID_HEADER: event_id,
        EVENT_TYPE_HEADER: event_type,
    }
    started = time.monotonic()
    try:
        check_url(url)
        response = httpx.post(
            url,
            content=data,
            headers=headers,
            timeout=settings.ALERTS_WEBHOOK_TIMEOUT,
            follow_redirects=False,
        )
    except (httpx.HTTPError, WebhookURLError) as exc:
        elapsed = int((time.monotonic() - started) * 1000)
        return PostResult(None, "", elapsed, f"{type(exc).__name__}: {exc}"[:255])
    elapsed = int((time.monotonic() - started) * 1000)
    return PostResult(response.status_code, response.text[:SNIPPET_CHARS], elapsed, "")

"""Fixtures shared by the whole suite.

Real services only: PostgreSQL and Redis come from DATABASE_URL / REDIS_URL (the embedded
ones when run through `make test`), Stripe is localstripe in this process on loopback, e-mail
is Django's locmem outbox in unit tests and a real aiosmtpd SMTP server in browser tests.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
import stripe
from django.core.cache import cache

from billing import payments
from billing.models import PaymentMethod
from portal.devstack import chromium_path
from portal.launcher import free_port, wait_for_port
from tests.factories import GroupFactory, MembershipFactory, UserFactory

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "test-results"


@pytest.fixture(autouse=True)
def _clear_cache() -> Iterator[None]:
    """Each test starts with an empty cache (rate limits, cached keys)."""
    cache.clear()
    yield


# --- People and groups ---------------------------------------------------------------------


@pytest.fixture
def password() -> str:
    return "correct-horse-battery-staple"


@pytest.fixture
def user(db, password):  # type: ignore[no-untyped-def]
    return UserFactory(password=password)


@pytest.fixture
def group(db, user):  # type: ignore[no-untyped-def]
    """A group whose Admin is `user`."""
    g = GroupFactory()
    MembershipFactory(group=g, user=user, role="admin")
    return g


@pytest.fixture
def member(db, group):  # type: ignore[no-untyped-def]
    """A plain Member of `group`."""
    return MembershipFactory(group=group, role="member").user


@pytest.fixture
def admin_client(client, user, group):  # type: ignore[no-untyped-def]
    client.force_login(user)
    return client


@pytest.fixture
def member_client(client, member):  # type: ignore[no-untyped-def]
    client.force_login(member)
    return client


# --- E-mail through a real SMTP server -----------------------------------------------------


@dataclass
class SmtpSink:
    host: str
    port: int
    messages: list[EmailMessage] = field(default_factory=list)

    def wait_for(self, to: str, subject_contains: str = "", timeout: float = 15) -> EmailMessage:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for msg in self.messages:
                if to.lower() in str(msg["To"]).lower() and subject_contains in str(msg["Subject"]):
                    return msg
            time.sleep(0.05)
        raise AssertionError(f"no e-mail to {to} ({subject_contains!r}) within {timeout}s")

    @staticmethod
    def body(msg: EmailMessage) -> str:
        part = msg.get_body(preferencelist=("plain", "html"))
        return part.get_content() if part is not None else ""

    def links(self, msg: EmailMessage) -> list[str]:
        return re.findall(r"https?://[^\s\"'<>]+", self.body(msg))


@pytest.fixture
def smtp_server(settings) -> Iterator[SmtpSink]:  # type: ignore[no-untyped-def]
    """A real SMTP server (aiosmtpd) on loopback; Django sends mail to it."""
    from aiosmtpd.controller import Controller

    sink = SmtpSink(host="127.0.0.1", port=free_port())

    class Handler:
        async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
            sink.messages.append(message_from_bytes(envelope.content, policy=policy.default))
            return "250 OK"

    controller = Controller(Handler(), hostname=sink.host, port=sink.port)
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = sink.host
    settings.EMAIL_PORT = sink.port
    settings.EMAIL_USE_TLS = False
    settings.EMAIL_HOST_USER = ""
    settings.EMAIL_HOST_PASSWORD = ""
    try:
        yield sink
    finally:
        controller.stop()


# --- Stripe: localstripe in this process, on loopback --------------------------------------


@dataclass
class LocalStripe:
    base_url: str

    def reset(self) -> None:
        req = urllib.request.Request(f"{self.base_url}/_config/data", method="DELETE")
        urllib.request.urlopen(req, timeout=5).read()

    def register_webhook(self, url: str, secret: str, name: str = "portal") -> None:
        from urllib.parse import urlencode

        data = urlencode({"url": url, "secret": secret}).encode()
        req = urllib.request.Request(
            f"{self.base_url}/_config/webhooks/{name}", data=data, method="POST"
        )
        urllib.request.urlopen(req, timeout=5).read()


@pytest.fixture(scope="session")
def _localstripe_server() -> Iterator[LocalStripe]:
    from portal.localstripe_server import patch_store

    patch_store(None)  # keep nothing on disk
    from aiohttp import web
    from localstripe.server import app

    port = free_port()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None)

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True, name="localstripe")
    thread.start()
    wait_for_port(port, timeout=10, what="localstripe")
    yield LocalStripe(base_url=f"http://127.0.0.1:{port}")
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)


@pytest.fixture
def localstripe(_localstripe_server, settings) -> Iterator[LocalStripe]:  # type: ignore[no-untyped-def]
    """localstripe with no data from earlier tests; settings point Stripe calls at it."""
    _localstripe_server.reset()
    settings.STRIPE_API_BASE = _localstripe_server.base_url
    settings.STRIPE_SECRET_KEY = "sk_test_localstripe"
    settings.STRIPE_PUBLISHABLE_KEY = "pk_test_localstripe"
    settings.STRIPE_JS_URL = f"{_localstripe_server.base_url}/js.stripe.com/v3/"
    yield _localstripe_server


# --- Browser: Playwright driving Debian's Chromium -----------------------------------------

CHROMIUM = chromium_path()  # Debian's (`make test` installs it when it may), or PORTAL_CHROMIUM
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.fixture(scope="session")
def browser():  # type: ignore[no-untyped-def]
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop on this thread; Django's ORM calls made by
    # fixtures here are still synchronous and safe.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    if not CHROMIUM.exists():
        # Skipped, never passed: `-ra` lists each one with this reason. CI demands a browser.
        message = (
            f"{CHROMIUM} is missing: install Debian's Chromium (sudo apt-get install -y chromium)"
        )
        if os.environ.get("PORTAL_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def output_dir(request) -> Path:  # type: ignore[no-untyped-def]
    """A folder for this test's screenshots and downloads: test-results/<test name>/."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid.split("::", 1)[-1])
    path = RESULTS / name
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def csp_violations() -> list[str]:
    """Content-Security-Policy violations the browser reported in this test's pages."""
    return []


@pytest.fixture
def new_page(browser, output_dir, csp_violations):  # type: ignore[no-untyped-def]
    """Open pages in fresh browser contexts (one per person); closed after the test.

    Any Content-Security-Policy violation (an inline script, a script or frame from an origin the
    policy does not allow) fails the test: the portal must work under its own policy.
    """
    contexts = []

    def make():  # type: ignore[no-untyped-def]
        context = browser.new_context(viewport={"width": 1280, "height": 860})
        context.set_default_timeout(15_000)
        contexts.append(context)
        page = context.new_page()

        def on_console(message) -> None:  # type: ignore[no-untyped-def]
            if message.type == "error" and "Content Security Policy" in message.text:
                csp_violations.append(f"{page.url}: {message.text}")

        page.on("console", on_console)
        return page

    yield make
    for context in contexts:
        context.close()
    assert not csp_violations, "Content-Security-Policy violations:\n" + "\n".join(csp_violations)


# --- Cards saved through localstripe, the way the browser saves them ----------------------


def card(number: str) -> dict:
    return {"number": number, "exp_month": 12, "exp_year": 2030, "cvc": "123"}


@pytest.fixture
def save_card(localstripe):  # type: ignore[no-untyped-def]
    """Save a card the way the browser does: SetupIntent confirmed with the card, then recorded."""

    def save(group, number: str = "4242424242424242", actor=None) -> PaymentMethod:  # type: ignore[no-untyped-def]
        secret = payments.card_setup_start(group=group)
        setup_intent_id = secret.split("_secret_")[0]
        stripe.api_base = localstripe.base_url
        pm = stripe.PaymentMethod.create(
            type="card", card=card(number), api_key="sk_test_localstripe"
        )
        intent = stripe.SetupIntent.confirm(
            setup_intent_id, payment_method=pm.id, api_key="sk_test_localstripe"
        )
        if (
            intent.status == "requires_action"
        ):  # 3-D Secure: what Stripe.js does when the user confirms
            body = json.dumps(
                {"key": "pk_test_localstripe", "use_stripe_sdk": True, "client_secret": secret}
            )
            request = urllib.request.Request(
                f"{localstripe.base_url}/v1/setup_intents/{setup_intent_id}/confirm",
                data=body.encode(),
                method="POST",
            )
            urllib.request.urlopen(request).read()
        return payments.card_setup_complete(
            group=group, setup_intent_id=setup_intent_id, actor=actor
        )

    return save

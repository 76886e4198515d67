"""Behind a load balancer: the client's IP comes from X-Forwarded-For of trusted proxies only.

The portal's ASGI application runs under uvicorn as the Dockerfile runs it (`--no-proxy-headers`);
the test's connections come from 127.0.0.1, which plays the load balancer.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn

from audit.models import AuditEvent
from members.services import invitation_create
from portal.launcher import free_port, web_config
from tests.factories import GroupFactory, MembershipFactory, UserFactory

PASSWORD = "correct-horse-battery-staple"


@pytest.fixture
def web(transactional_db, settings) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """`portal.asgi:application` served by uvicorn on loopback, proxy headers left to the app."""
    from portal.asgi import application

    settings.ACCOUNT_RATE_LIMITS = {"login_failed": "3/m/ip"}
    port = free_port()
    server = uvicorn.Server(web_config(application, port))  # the Dockerfile's flags
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "web server did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def browser(url: str, client_ip: str | None) -> httpx.Client:
    """A client that reaches the portal through the balancer (X-Forwarded-For: its own IP)."""
    headers = {"X-Forwarded-For": client_ip} if client_ip else {}
    return httpx.Client(base_url=url, headers=headers, timeout=30)


def sign_in(c: httpx.Client, email: str, password: str) -> httpx.Response:
    c.get("/accounts/login/")
    return c.post(
        "/accounts/login/",
        data={
            "login": email,
            "password": password,
            "csrfmiddlewaretoken": c.cookies["csrftoken"],
        },
    )


def failed_logins_until_blocked(c: httpx.Client, email: str) -> list[bool]:
    """Fail to sign in 4 times; return for each whether the rate limit answered."""
    blocked = []
    for i in range(4):
        page = sign_in(c, email, f"wrong-{i}").text
        blocked.append("Too many failed login attempts" in page)
    return blocked


def test_clients_behind_a_trusted_proxy_have_their_own_login_limit(web, settings):  # type: ignore[no-untyped-def]
    settings.TRUSTED_PROXIES = ["127.0.0.1/32", "10.0.0.0/8"]
    user = UserFactory(password=PASSWORD)
    # The proxy chain as a balancer writes it: what the client sent, then the address it saw.
    with browser(web, "198.51.100.66, 203.0.113.5, 10.1.2.3") as alice:
        assert failed_logins_until_blocked(alice, user.email) == [False, False, False, True]
    # Another client behind the same balancer is not blocked by alice's failures…
    with browser(web, "203.0.113.6") as bob:
        assert sign_in(bob, user.email, PASSWORD).status_code == 302
    # …and alice forging another address in front of the balancer's entry does not help her.
    with browser(web, "203.0.113.77, 203.0.113.5") as alice_again:
        assert "Too many failed login attempts" in sign_in(alice_again, user.email, "x").text


def test_audit_log_records_the_clients_ip_not_the_balancers(web, settings):  # type: ignore[no-untyped-def]
    settings.TRUSTED_PROXIES = ["127.0.0.1/32"]
    group = GroupFactory()
    admin = MembershipFactory(group=group, role="admin").user
    joiner = UserFactory(password=PASSWORD)
    issued = invitation_create(group=group, email=joiner.email, role="member", actor=admin)
    with browser(web, "203.0.113.5") as c:
        assert sign_in(c, joiner.email, PASSWORD).status_code == 302
        page = c.get(f"/invitations/{issued.token}/").text
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        assert token is not None
        response = c.post(
            f"/invitations/{issued.token}/", data={"csrfmiddlewaretoken": token.group(1)}
        )
        assert response.status_code == 302
    event = AuditEvent.objects.get(group=group, action="invitation.accept")
    assert event.ip == "203.0.113.5"


def test_forwarded_for_from_an_untrusted_peer_is_ignored(web, settings):  # type: ignore[no-untyped-def]
    settings.TRUSTED_PROXIES = ["10.0.0.0/8"]  # the test's loopback connection is not a proxy
    user = UserFactory(password=PASSWORD)
    with browser(web, "203.0.113.5") as mallory:
        assert failed_logins_until_blocked(mallory, user.email) == [False, False, False, True]
    # A fresh made-up address does not reset the limit: it is the peer's IP that counts.
    with browser(web, "203.0.113.99") as mallory_again:
        assert "Too many failed login attempts" in sign_in(mallory_again, user.email, "x").text


def test_gateway_metrics_stay_hidden_from_a_client_behind_a_local_proxy(web, settings):  # type: ignore[no-untyped-def]
    settings.TRUSTED_PROXIES = ["127.0.0.1/32"]  # e.g. nginx beside the portal
    settings.METRICS_TOKEN = ""
    with browser(web, None) as scraper:
        assert scraper.get("/metrics").status_code == 200
    with browser(web, "203.0.113.5") as outsider:
        assert outsider.get("/metrics").status_code == 404


def test_a_malformed_trusted_proxy_stops_the_start_up():  # type: ignore[no-untyped-def]
    from tests.portal.test_settings import PRODUCTION_ENV, run_manage

    result = run_manage("check", env=PRODUCTION_ENV | {"TRUSTED_PROXIES": "10.0.0.0/8, lb.local"})
    assert result.returncode != 0
    assert "TRUSTED_PROXIES: 'lb.local' is not an IP address or a network" in result.stderr
    fine = run_manage("check", env=PRODUCTION_ENV | {"TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.7"})
    assert fine.returncode == 0, fine.stderr

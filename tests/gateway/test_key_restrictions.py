"""Key restrictions (models, APIs, tools, client IP ranges) and rotation with a grace period
(issue 19, parts 3 and 4), through the gateway with the official `openai` SDK.

Every refusal is a 403 that moves no money and writes no usage event; an allowed request is
charged exactly what its response reported.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from billing.models import CreditAccount
from keys import restrictions
from keys.models import APIKey
from keys.services import api_key_create, api_key_grace_sweep, api_key_regenerate, api_key_restrict
from tests.gateway.conftest import Gateway, _serve
from usage.models import UsageEvent

pytestmark = pytest.mark.django_db(transaction=True)

CHAT = [{"role": "user", "content": "What is up?"}]
AGENT_MODEL = "perplexity/sonar"


def balance(group) -> int:  # type: ignore[no-untyped-def]
    return CreditAccount.objects.get(group=group).balance_micros


def micros(dollars: float) -> int:
    return round(dollars * 1_000_000)


def sdk(gateway, key: str, base: str = "/v1") -> openai.OpenAI:  # type: ignore[no-untyped-def]
    return openai.OpenAI(base_url=f"{gateway.url}{base}", api_key=key, max_retries=0)


def restricted(group, **lists) -> str:  # type: ignore[no-untyped-def]
    return api_key_create(
        group=group, name="Restricted", restrictions=restrictions.clean(**lists)
    ).secret


def refused(call, code: str = "model_not_allowed") -> dict:  # type: ignore[no-untyped-def]
    with pytest.raises(openai.PermissionDeniedError) as err:
        call()
    assert err.value.status_code == 403
    body = err.value.body
    assert isinstance(body, dict) and body["code"] == code, body
    return body


def test_each_refusal_is_a_403_not_billed_and_an_allowed_request_is_charged_exactly(
    gateway, funded_group
):  # type: ignore[no-untyped-def]
    key = restricted(
        funded_group, models="sonar, perplexity/sonar", apis="chat agent", tools=["web_search"]
    )
    client = sdk(gateway, key)
    root = sdk(gateway, key, base="")
    before = balance(funded_group)

    # A model the key may not use, plain and streamed.
    body = refused(lambda: client.chat.completions.create(model="sonar-pro", messages=CHAT))
    assert "sonar-pro" in body["message"] and body["param"] == "model"
    refused(lambda: client.chat.completions.create(model="sonar-pro", messages=CHAT, stream=True))
    # An API the key may not use: embeddings, search, async (create and list).
    body = refused(lambda: client.embeddings.create(model="pplx-embed-v1-0.6b", input="hi"))
    assert "embeddings" in body["message"]
    body = refused(lambda: root.post("/search", body={"query": "x"}, cast_to=httpx.Response))
    assert "search" in body["message"]
    job = {"request": {"model": "sonar", "messages": CHAT}}
    refused(lambda: root.post("/async/chat/completions", body=job, cast_to=httpx.Response))
    refused(lambda: root.get("/async/chat/completions", cast_to=httpx.Response))
    # A tool the key may not use (the Agent API).
    body = refused(
        lambda: client.responses.create(
            model=AGENT_MODEL,
            input="Hi",
            tools=[{"type": "fetch_url"}],  # type: ignore[list-item]
        )
    )
    assert "fetch_url" in body["message"] and body["param"] == "tools[0].type"
    # An allowed model on an allowed API with an allowed tool: not refused.
    gateway.settled()
    assert balance(funded_group) == before
    assert not UsageEvent.objects.filter(group=funded_group).exists()

    completion = client.chat.completions.create(model="sonar", messages=CHAT)
    gateway.settled()
    charged = micros(completion.usage.model_extra["cost"]["total_cost"])  # type: ignore[union-attr]
    assert charged > 0 and balance(funded_group) == before - charged

    before = balance(funded_group)
    response = client.responses.create(
        model=AGENT_MODEL,
        input="Hi",
        tools=[{"type": "web_search"}],  # type: ignore[list-item]
    )
    gateway.settled()
    assert response.usage is not None
    charged = micros(response.usage.model_extra["cost"]["total_cost"])
    assert charged > 0 and balance(funded_group) == before - charged
    assert UsageEvent.objects.filter(group=funded_group).count() == 2
    # /v1/models lists only the models the key may use.
    assert sorted(m.id for m in client.models.list()) == ["perplexity/sonar", "sonar"]


def test_ip_ranges_from_the_loopback_address(gateway, funded_group):  # type: ignore[no-untyped-def]
    elsewhere = restricted(funded_group, ip_ranges="10.0.0.0/8")
    here = restricted(funded_group, ip_ranges="10.0.0.0/8 127.0.0.1 ::1/128")
    before = balance(funded_group)

    body = refused(
        lambda: sdk(gateway, elsewhere).chat.completions.create(model="sonar", messages=CHAT),
        code="ip_not_allowed",
    )
    assert "127.0.0.1" in body["message"]
    assert balance(funded_group) == before
    assert not UsageEvent.objects.filter(group=funded_group).exists()

    completion = sdk(gateway, here).chat.completions.create(model="sonar", messages=CHAT)
    gateway.settled()
    charged = micros(completion.usage.model_extra["cost"]["total_cost"])  # type: ignore[union-attr]
    assert balance(funded_group) == before - charged


@pytest.fixture
def proxied(transactional_db, settings) -> Iterator[Gateway]:  # type: ignore[no-untyped-def]
    """The portal as `portal/asgi.py` serves it: behind TrustedProxyMiddleware, with the test's
    loopback connection as a trusted proxy."""
    from django.core.asgi import get_asgi_application

    from gateway.asgi import wrap
    from portal.proxy import TrustedProxyMiddleware
    from usage.catalogue import catalogue_sync

    settings.TRUSTED_PROXIES = ["127.0.0.1/32"]
    catalogue_sync()
    server, thread, port = _serve(TrustedProxyMiddleware(wrap(get_asgi_application())))
    yield Gateway(url=f"http://127.0.0.1:{port}", app=None)
    server.should_exit = True
    thread.join(10)


def test_ip_ranges_behind_a_trusted_proxy(proxied, funded_group):  # type: ignore[no-untyped-def]
    key = restricted(funded_group, ip_ranges=["10.0.0.0/8", "2001:db8::/32"])
    before = balance(funded_group)

    def ask(client_ip: str):  # type: ignore[no-untyped-def]
        client = openai.OpenAI(
            base_url=f"{proxied.url}/v1", api_key=key, max_retries=0,
            default_headers={"X-Forwarded-For": client_ip},
        )  # fmt: skip
        return client.chat.completions.create(model="sonar", messages=CHAT)

    for outsider in ("192.0.2.1", "11.0.0.1", "2001:db9::1"):
        refused(lambda ip=outsider: ask(ip), code="ip_not_allowed")
    assert balance(funded_group) == before
    assert not UsageEvent.objects.filter(group=funded_group).exists()
    charged = 0
    for insider in ("10.1.2.3", "2001:db8::7"):
        charged += micros(ask(insider).usage.model_extra["cost"]["total_cost"])  # type: ignore[union-attr]
    assert balance(funded_group) == before - charged


def test_a_restriction_change_is_in_force_within_a_second(gateway, funded_group):  # type: ignore[no-untyped-def]
    issued = api_key_create(group=funded_group, name="Changing")
    client = sdk(gateway, issued.secret)
    client.chat.completions.create(model="sonar", messages=CHAT)  # now cached in the worker
    api_key_restrict(key=issued.key, restrictions=restrictions.clean(models="sonar-pro"))
    changed = time.monotonic()
    while True:
        try:
            client.chat.completions.create(model="sonar", messages=CHAT)
        except openai.PermissionDeniedError:
            break
        assert time.monotonic() - changed < 1.0
        time.sleep(0.05)
    api_key_restrict(key=issued.key, restrictions=restrictions.Restrictions())
    time.sleep(1.0)
    client.chat.completions.create(model="sonar", messages=CHAT)


def test_rotation_with_grace_the_old_secret_works_until_the_end_then_401(gateway, funded_group):  # type: ignore[no-untyped-def]
    issued = api_key_create(group=funded_group, name="Rotated")
    old = sdk(gateway, issued.secret)
    old.chat.completions.create(model="sonar", messages=CHAT)  # cached in the worker's memory
    rotated = api_key_regenerate(key=issued.key, grace_seconds=2)
    key = APIKey.objects.get(pk=issued.key.pk)
    end = key.previous_expires_at.timestamp()  # type: ignore[union-attr]
    assert key.previous_last_four == issued.secret[-4:]
    new = sdk(gateway, rotated.secret)

    answers: list[tuple[float, str, int]] = []  # (seconds after the end, which, status)
    while time.time() < end + 1.0:
        for name, client in (("old", old), ("new", new)):
            try:
                client.chat.completions.create(model="sonar", messages=CHAT)
                status = 200
            except openai.AuthenticationError:
                status = 401
            answers.append((time.time() - end, name, status))
        time.sleep(0.05)
    assert all(s == 200 for _, n, s in answers if n == "new")
    assert all(s == 200 for t, n, s in answers if n == "old" and t < -0.3)
    assert any(s == 200 for t, n, s in answers if n == "old" and t < 0)
    # Refused from the end (a request at the very end may have been admitted just before it).
    assert all(s == 401 for t, n, s in answers if n == "old" and t > 0.1), answers
    # Usage during the grace period is the key's, whichever secret sent it.
    assert set(UsageEvent.objects.values_list("api_key_id", flat=True)) == {issued.key.pk}

    # The periodic sweep forgets the old secret and audits its end; it stays refused.
    assert api_key_grace_sweep() == 1
    key.refresh_from_db()
    assert key.previous_secret_hash is None
    assert key.group.audit_events.filter(action="key.old_secret_end").count() == 1  # type: ignore[attr-defined]
    with pytest.raises(openai.AuthenticationError):
        old.chat.completions.create(model="sonar", messages=CHAT)
    new.chat.completions.create(model="sonar", messages=CHAT)


def test_rotation_without_grace_and_a_second_rotation_end_old_secrets_at_once(
    gateway, funded_group
):  # type: ignore[no-untyped-def]
    first = api_key_create(group=funded_group, name="Rotated twice")
    sdk(gateway, first.secret).chat.completions.create(model="sonar", messages=CHAT)
    second = api_key_regenerate(key=first.key, grace_seconds=3600)
    sdk(gateway, first.secret).chat.completions.create(model="sonar", messages=CHAT)  # in grace
    third = api_key_regenerate(key=second.key, grace_seconds=0)
    time.sleep(1.0)
    for dead in (first.secret, second.secret):
        with pytest.raises(openai.AuthenticationError):
            sdk(gateway, dead).chat.completions.create(model="sonar", messages=CHAT)
    sdk(gateway, third.secret).chat.completions.create(model="sonar", messages=CHAT)
    # Restrictions apply to the previous secret during its grace period too.
    fourth = api_key_regenerate(key=third.key, grace_seconds=3600)
    api_key_restrict(key=fourth.key, restrictions=restrictions.clean(apis="search"))
    time.sleep(1.0)
    for secret in (third.secret, fourth.secret):
        refused(
            lambda s=secret: sdk(gateway, s).chat.completions.create(model="sonar", messages=CHAT)
        )

"""The key cache fails closed and cannot be filled by strangers (issue #15, findings 5 and 8)."""

from __future__ import annotations

import time

import httpx
import pytest

from core.redis import get_redis
from gateway import keycache
from keys import secrets
from keys.models import KeyChange
from keys.services import api_key_create, api_key_regenerate, api_key_revoke
from portal.launcher import RedisServer

pytestmark = pytest.mark.django_db(transaction=True)

BODY = {"model": "sonar", "messages": [{"role": "user", "content": "Hi"}]}


def post(gateway, key: str, source: str = "127.0.0.1") -> httpx.Response:  # type: ignore[no-untyped-def]
    """One chat request from the given local address (any 127.x address reaches the gateway)."""
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(
        base_url=gateway.url, transport=transport, timeout=30,
        headers={"Authorization": f"Bearer {key}"},
    ) as c:  # fmt: skip
        return c.post("/chat/completions", json=BODY)


def key_entries() -> set[bytes]:
    return set(get_redis().scan_iter("portal:key:*", count=1000))


# --- finding 8: unauthenticated cache filling ------------------------------------------------


def test_random_keys_cost_a_bounded_number_of_lookups_then_429(
    gateway, api_key, settings, monkeypatch
):  # type: ignore[no-untyped-def]
    settings.GATEWAY_INVALID_KEYS_PER_MINUTE = 5
    monkeypatch.setattr(keycache, "UNKNOWN_KEYS_MAX", 8)
    assert post(gateway, api_key).status_code == 200  # the worker's store exists now
    store = gateway.app.gateway._store.keys
    lookups: list[str] = []
    load = store._key_from_db

    async def counting(secret_hash: str):  # type: ignore[no-untyped-def]
        lookups.append(secret_hash)
        return await load(secret_hash)

    monkeypatch.setattr(store, "_key_from_db", counting)
    get_redis().delete(*get_redis().keys("portal:badkey:*") or ["-"])
    store.limiter.blocked.clear()  # earlier tests in this worker (fuzzing) may have blocked 127.0.0.1
    if time.time() % 60 > 45:  # the limit counts per clock minute: don't straddle its end
        time.sleep(61 - time.time() % 60)
    entries = key_entries()

    statuses = [post(gateway, secrets.generate()).status_code for _ in range(40)]

    assert statuses[:5] == [401] * 5
    assert statuses[5:] == [429] * 35
    assert len(lookups) == 5  # one PostgreSQL query per allowed attempt, none after
    assert key_entries() == entries  # no Redis entry for any of them
    assert len(store._unknown) <= 8  # the in-memory negative cache is bounded
    refused = post(gateway, secrets.generate())
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "too_many_invalid_keys"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    # The same address' known key still works (it needs no database look-up)...
    assert post(gateway, api_key).status_code == 200
    # ...and so do other addresses: a valid key, and a wrong one is an ordinary 401.
    assert post(gateway, api_key, source="127.0.0.2").status_code == 200
    assert post(gateway, secrets.generate(), source="127.0.0.2").status_code == 401
    fresh = api_key_create(group=gateway_group(api_key), name="Fresh").secret
    assert post(gateway, fresh, source="127.0.0.3").status_code == 200


def gateway_group(secret: str):  # type: ignore[no-untyped-def]
    from keys.models import APIKey

    return APIKey.objects.get(secret_hash=secrets.hash_key(secret)).group


def test_a_repeated_unknown_key_is_answered_from_memory(gateway, api_key, monkeypatch):  # type: ignore[no-untyped-def]
    assert post(gateway, api_key).status_code == 200
    store = gateway.app.gateway._store.keys
    lookups: list[str] = []
    load = store._key_from_db

    async def counting(secret_hash: str):  # type: ignore[no-untyped-def]
        lookups.append(secret_hash)
        return await load(secret_hash)

    monkeypatch.setattr(store, "_key_from_db", counting)
    stranger = secrets.generate()
    assert [post(gateway, stranger).status_code for _ in range(5)] == [401] * 5
    assert lookups == [secrets.hash_key(stranger)]


def test_client_buckets_group_ipv6_by_64():  # type: ignore[no-untyped-def]
    from gateway.store import client_bucket

    assert client_bucket("203.0.113.9") == "203.0.113.9"
    assert client_bucket("2001:db8:1:2:aaaa::1") == client_bucket("2001:db8:1:2:bbbb::9")
    assert client_bucket("2001:db8:1:2::1") != client_bucket("2001:db8:1:3::1")
    assert client_bucket(None) == "unknown"


# --- finding 5: revocation while Redis is unreachable ----------------------------------------


@pytest.fixture
def own_redis(tmp_path, settings):  # type: ignore[no-untyped-def]
    """A Redis of this test's own (append-only, like production), to stop and start at will.
    Request it before `gateway`, so the gateway uses it."""
    server = RedisServer(tmp_path / "redis", append_only=True)
    server.start()
    settings.REDIS_URL = server.url
    get_redis.cache_clear()
    yield server
    server.stop()
    get_redis.cache_clear()


def test_a_change_made_while_redis_was_down_is_in_force_within_a_second_of_its_return(
    own_redis, gateway, funded_group, caplog
):  # type: ignore[no-untyped-def]
    revoked = api_key_create(group=funded_group, name="Revoked in the dark")
    rotated = api_key_create(group=funded_group, name="Rotated in the dark")
    assert post(gateway, revoked.secret).status_code == 200
    assert post(gateway, rotated.secret).status_code == 200
    time.sleep(1.5)  # appendfsync everysec: Redis' entries for both keys are on disk

    own_redis.crash()  # SIGKILL: only its append-only file survives
    api_key_revoke(key=revoked.key)  # committed; the Redis update after it fails
    new = api_key_regenerate(key=rotated.key)
    assert "could not publish key state" in caplog.text
    time.sleep(1.0)
    own_redis.start()  # with the old entries ("active"), restored from its append-only file
    back = time.monotonic()

    answers: list[tuple[float, str, int]] = []
    while time.monotonic() - back < 4.0:
        for name, secret in (("revoked", revoked.secret), ("rotated", rotated.secret)):
            answers.append((time.monotonic() - back, name, post(gateway, secret).status_code))
        time.sleep(0.05)
    late = [(t, name, status) for t, name, status in answers if t > 1.0]
    assert late and all(status == 401 for _, _, status in late), [a for a in answers if a[2] == 200]
    assert not [a for a in answers if a[2] == 200 and a[0] > 1.0]
    assert post(gateway, new.secret).status_code == 200  # the new secret works
    # What the workers followed: a durable note per changed secret (old and new when rotated).
    assert KeyChange.objects.count() == 5  # 2 creations, 1 revocation, 2 for the rotation

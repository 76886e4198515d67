"""Key restrictions and rotation grace on the API Keys page, in the services and in the
Management API (issue 19, parts 3 and 4). The gateway side: tests/gateway/test_key_restrictions.py."""

from __future__ import annotations

from datetime import timedelta

import orjson
import pytest
from django.utils import timezone

from core.redis import get_redis
from keys import restrictions
from keys.cache import redis_key
from keys.models import APIKey, KeyChange
from keys.services import (
    APIKeyError,
    api_key_create,
    api_key_grace_sweep,
    api_key_regenerate,
    api_key_restrict,
    api_key_revoke,
)
from usage.metrics import APIS

pytestmark = pytest.mark.django_db


def test_the_apis_a_key_may_be_limited_to_are_the_metered_apis():
    assert restrictions.APIS == APIS


@pytest.mark.parametrize(
    ("lists", "field", "message"),
    [
        ({"ip_ranges": "10.0.0.0/33"}, "ip_ranges", "CIDR"),
        ({"ip_ranges": "10.1.2.3/8"}, "ip_ranges", "CIDR"),  # host bits set: a typo
        ({"ip_ranges": "example.com"}, "ip_ranges", "CIDR"),
        ({"apis": ["chat", "images"]}, "apis", "Unknown API"),
        ({"models": "sonar, bad name!"}, "models", "not a valid model"),
        ({"tools": ["x" * 101]}, "tools", "not a valid tool"),
        ({"models": [f"m{i}" for i in range(51)]}, "models", "At most 50"),
    ],
)
def test_bad_restrictions_name_the_field(lists, field, message):  # type: ignore[no-untyped-def]
    with pytest.raises(restrictions.RestrictionError) as err:
        restrictions.clean(**lists)
    assert err.value.field == field and message in str(err.value)


def test_restrictions_are_normalised():
    cleaned = restrictions.clean(
        models="sonar,sonar-pro sonar", apis=["search", "chat"],
        ip_ranges="10.0.0.0/8\n2001:DB8::/32, 192.0.2.7",
    )  # fmt: skip
    assert cleaned.models == ("sonar", "sonar-pro")
    assert cleaned.apis == ("chat", "search")
    assert cleaned.ip_ranges == ("10.0.0.0/8", "2001:db8::/32", "192.0.2.7/32")


def test_restrict_is_audited_cached_and_noted_for_the_gateway(group, user):  # type: ignore[no-untyped-def]
    issued = api_key_create(group=group, name="K")
    notes = KeyChange.objects.count()
    api_key_restrict(
        key=issued.key, restrictions=restrictions.clean(models="sonar", ip_ranges="10.0.0.0/8"),
        actor=user,
    )  # fmt: skip
    event = group.audit_events.get(action="key.restrict")
    assert event.data == {
        "allowed_models": [[], ["sonar"]],
        "allowed_ips": [[], ["10.0.0.0/8"]],
    }
    assert KeyChange.objects.count() == notes + 1
    # Unchanged: nothing audited or noted.
    api_key_restrict(
        key=issued.key, restrictions=restrictions.clean(models="sonar", ip_ranges="10.0.0.0/8")
    )
    assert group.audit_events.filter(action="key.restrict").count() == 1
    api_key_revoke(key=issued.key)
    with pytest.raises(APIKeyError):
        api_key_restrict(key=issued.key, restrictions=restrictions.Restrictions())


def test_grace_is_bounded_audited_and_cached_with_its_end(
    group, user, django_capture_on_commit_callbacks
):  # type: ignore[no-untyped-def]
    issued = api_key_create(group=group, name="K")
    for bad in (-1, 24 * 3600 + 1):
        with pytest.raises(APIKeyError) as err:
            api_key_regenerate(key=issued.key, grace_seconds=bad)
        assert err.value.field == "grace_seconds"
    with django_capture_on_commit_callbacks(execute=True):
        new = api_key_regenerate(key=issued.key, grace_seconds=3600, actor=user)
    key = APIKey.objects.get()
    assert key.previous_secret_active and key.previous_last_four == issued.secret[-4:]
    event = group.audit_events.get(action="key.regenerate")
    assert event.data["old_last_four"] == issued.secret[-4:]
    assert event.data["grace_seconds"] == 3600 and event.data["new_last_four"] == new.secret[-4:]
    # The old secret's cached state: the same key, expiring at the grace end.
    old_state = orjson.loads(get_redis().get(redis_key(issued.key.secret_hash)))  # type: ignore[arg-type]
    assert old_state["active"] and old_state["id"] == key.pk
    assert old_state["expires_at"] == key.previous_expires_at.timestamp()  # type: ignore[union-attr]
    # Not over yet: the sweep leaves it; over: forgotten, its end audited.
    assert api_key_grace_sweep() == 0
    APIKey.objects.update(previous_expires_at=timezone.now() - timedelta(seconds=1))
    assert api_key_grace_sweep() == 1
    assert group.audit_events.filter(action="key.old_secret_end").count() == 1
    assert APIKey.objects.get().previous_secret_hash is None


# --- the page -------------------------------------------------------------------------------


def test_admin_edits_restrictions_and_the_row_shows_them(admin_client, group):  # type: ignore[no-untyped-def]
    issued = api_key_create(group=group, name="Locked down")
    url = f"/g/{group.public_id}/keys/{issued.key.public_id}/restrictions/"
    form = admin_client.get(url).content.decode()
    assert "Allowed models" in form and "Allowed client IP ranges" in form
    data = {"models": "sonar, sonar-pro", "apis": ["chat", "search"], "ip_ranges": "10.0.0.0/8"}
    response = admin_client.post(url, data)
    assert response.status_code == 302
    key = APIKey.objects.get()
    assert key.allowed_models == ["sonar", "sonar-pro"] and key.allowed_apis == ["chat", "search"]
    listing = admin_client.get(f"/g/{group.public_id}/keys/").content.decode()
    assert "Models: sonar, sonar-pro · APIs: chat, search · IPs: 10.0.0.0/8" in listing
    assert group.audit_events.filter(action="key.restrict").exists()


def test_htmx_restrictions_errors_swap_the_form_and_success_redirects(admin_client, group):  # type: ignore[no-untyped-def]
    issued = api_key_create(group=group, name="K")
    url = f"/g/{group.public_id}/keys/{issued.key.public_id}/restrictions/"
    bad = admin_client.post(url, {"ip_ranges": "10.0.0.0/99"}, HTTP_HX_REQUEST="true")
    html = bad.content.decode()
    assert bad.status_code == 422 and html.lstrip().startswith('<form id="restrictions-form"')
    assert "CIDR" in html and APIKey.objects.get().allowed_ips == []
    good = admin_client.post(url, {"tools": "web_search"}, HTTP_HX_REQUEST="true")
    assert good["HX-Redirect"] == f"/g/{group.public_id}/keys/"
    assert APIKey.objects.get().allowed_tools == ["web_search"]


def test_members_see_restrictions_and_grace_but_cannot_change_them(member_client, group):  # type: ignore[no-untyped-def]
    issued = api_key_create(
        group=group, name="Shared", restrictions=restrictions.clean(ip_ranges="10.0.0.0/8")
    )
    api_key_regenerate(key=issued.key, grace_seconds=3600)
    page = member_client.get(f"/g/{group.public_id}/keys/").content.decode()
    assert "IPs: 10.0.0.0/8" in page
    assert f"old key …{issued.secret[-4:]} works until" in page
    assert "/restrictions/" not in page
    url = f"/g/{group.public_id}/keys/{issued.key.public_id}/restrictions/"
    assert member_client.post(url, {"models": "x"}).status_code == 403
    assert APIKey.objects.get().allowed_models == []


def test_regenerate_with_grace_from_the_page(admin_client, group):  # type: ignore[no-untyped-def]
    issued = api_key_create(group=group, name="Rotated")
    url = f"/g/{group.public_id}/keys/{issued.key.public_id}/regenerate/"
    assert "Keep the old secret working for" in admin_client.get(url).content.decode()
    assert admin_client.post(url, {"grace_seconds": "999"}).status_code == 422
    assert APIKey.objects.get().secret_hash == issued.key.secret_hash
    response = admin_client.post(url, {"grace_seconds": "3600"})
    html = response.content.decode()
    assert response.status_code == 200 and "Key regenerated" in html
    key = APIKey.objects.get()
    assert key.previous_last_four == issued.secret[-4:]
    assert f"old key …{issued.secret[-4:]} works until" in html
    left = key.previous_expires_at - timezone.now()  # type: ignore[operator]
    assert timedelta(minutes=59) < left <= timedelta(hours=1)

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from keys import secrets
from keys.models import APIKey
from keys.services import APIKeyError, api_key_create, api_key_regenerate, api_key_revoke

pytestmark = pytest.mark.django_db


def test_key_format_checksum_and_hash():
    key = secrets.generate()
    assert key.startswith("pplx-") and len(key) == 5 + 32 + 6
    assert secrets.is_well_formed(key)
    assert not secrets.is_well_formed(
        key[:-1] + ("x" if key[-1] != "x" else "y")
    )  # typo in checksum
    assert not secrets.is_well_formed(
        key[:10] + ("Q" if key[10] != "Q" else "R") + key[11:]
    )  # typo in body
    assert not secrets.is_well_formed(key[:-2])
    assert not secrets.is_well_formed("sk-" + key[5:])
    assert len({secrets.generate() for _ in range(1000)}) == 1000


def test_prefix_is_configurable(settings, group):
    settings.API_KEY_PREFIX = "acme-"
    issued = api_key_create(group=group, name="Custom")
    assert issued.secret.startswith("acme-") and secrets.is_well_formed(issued.secret)
    assert issued.key.masked == f"acme-…{issued.secret[-4:]}"


def test_the_database_never_holds_a_full_key(group):
    issued = api_key_create(group=group, name="Secret")
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM keys_apikey")
        rows = cursor.fetchall()
        cursor.execute("SELECT * FROM audit_auditevent")
        rows += cursor.fetchall()
    dump = repr(rows)
    assert issued.secret not in dump
    assert issued.secret[5:37] not in dump  # not even the random body
    key = APIKey.objects.get()
    assert (
        key.secret_hash == secrets.hash_key(issued.secret) and key.last_four == issued.secret[-4:]
    )


def test_regenerate_keeps_settings_and_changes_the_secret(group, user):
    issued = api_key_create(group=group, name="Rotate", monthly_limit_micros=5_000_000, actor=user)
    new = api_key_regenerate(key=issued.key, actor=user)
    assert new.secret != issued.secret
    key = APIKey.objects.get()
    assert (key.name, key.monthly_limit_micros) == ("Rotate", 5_000_000)
    assert key.secret_hash == secrets.hash_key(new.secret)
    actions = list(group.audit_events.order_by("id").values_list("action", flat=True))
    assert actions[-2:] == ["key.create", "key.regenerate"]


def test_revoked_keys_cannot_be_regenerated_or_changed(group):
    issued = api_key_create(group=group, name="Gone")
    api_key_revoke(key=issued.key)
    with pytest.raises(APIKeyError, match="revoked"):
        api_key_regenerate(key=issued.key)
    assert APIKey.objects.get().status == "revoked"


def test_create_api_key_command_prints_a_working_key(group):
    out = StringIO()
    call_command("create_api_key", group=group.public_id, name="Ops", stdout=out)
    secret = out.getvalue().strip()
    assert secrets.is_well_formed(secret)
    assert APIKey.objects.get(secret_hash=secrets.hash_key(secret)).name == "Ops"
    with pytest.raises(CommandError, match="No API group"):
        call_command("create_api_key", group="nope", name="x", stdout=out)


def test_admin_creates_a_key_and_sees_it_once(admin_client, group):
    url = f"/g/{group.public_id}/keys/new/"
    response = admin_client.post(url, {"name": "Production", "monthly_limit": "25.50"})
    assert response.status_code == 200
    html = response.content.decode()
    key = APIKey.objects.get()
    secret = html.split('id="new-secret" class="mono" type="text" readonly value="')[1].split('"')[
        0
    ]
    assert secrets.hash_key(secret) == key.secret_hash
    assert "won't be able to see it again" in html
    assert response["Cache-Control"] == "no-store"
    assert key.monthly_limit_micros == 25_500_000
    listing = admin_client.get(f"/g/{group.public_id}/keys/").content.decode()
    assert secret not in listing
    assert f"pplx-…{secret[-4:]}" in listing and "$25.50" in listing


def test_htmx_create_returns_only_the_panel(admin_client, group):
    response = admin_client.post(
        f"/g/{group.public_id}/keys/new/", {"name": "Via htmx"}, HTTP_HX_REQUEST="true"
    )
    html = response.content.decode()
    assert response.status_code == 200
    assert html.lstrip().startswith('<div id="key-panel">') and "<html" not in html


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "  "}, "Give the key a name"),
        ({"name": "x", "monthly_limit": "-5"}, "more than $0"),
        ({"name": "x", "monthly_limit": "lots"}, "not an amount"),
        ({"name": "x", "expires_on": "2001-01-01"}, "must be in the future"),
        ({"name": "x", "expires_on": "soon"}, "Enter a valid date"),
    ],
)
def test_bad_key_forms_explain_and_create_nothing(admin_client, group, data, message):
    response = admin_client.post(f"/g/{group.public_id}/keys/new/", data)
    assert response.status_code == 422
    assert message in response.content.decode()
    assert not APIKey.objects.exists()


def test_members_see_keys_but_cannot_change_them(member_client, group):
    issued = api_key_create(group=group, name="Shared")
    page = member_client.get(f"/g/{group.public_id}/keys/").content.decode()
    assert "Shared" in page and issued.key.masked in page
    assert "+ Create Key" not in page and "Revoke" not in page
    base = f"/g/{group.public_id}/keys/"
    assert member_client.post(f"{base}new/", {"name": "Sneaky"}).status_code == 403
    for action in ("revoke", "regenerate", "edit"):
        assert (
            member_client.post(f"{base}{issued.key.public_id}/{action}/", {"name": "x"}).status_code
            == 403
        )
    assert APIKey.objects.get().status == "active" and APIKey.objects.count() == 1


def test_revoke_needs_confirmation_and_another_groups_key_is_404(admin_client, group):
    from tests.factories import GroupFactory

    issued = api_key_create(group=group, name="Old")
    confirm = admin_client.get(f"/g/{group.public_id}/keys/{issued.key.public_id}/revoke/")
    assert "cannot be undone" in confirm.content.decode()
    assert APIKey.objects.get().status == "active"
    admin_client.post(f"/g/{group.public_id}/keys/{issued.key.public_id}/revoke/")
    assert APIKey.objects.get().status == "revoked"
    foreign = api_key_create(group=GroupFactory(), name="Theirs").key
    for action in ("revoke", "regenerate", "edit"):
        assert (
            admin_client.post(
                f"/g/{group.public_id}/keys/{foreign.public_id}/{action}/"
            ).status_code
            == 404
        )
    foreign.refresh_from_db()
    assert foreign.status == "active"


def test_edit_renames_and_sets_limit(admin_client, group):
    issued = api_key_create(group=group, name="Before")
    url = f"/g/{group.public_id}/keys/{issued.key.public_id}/edit/"
    response = admin_client.post(url, {"name": "After", "monthly_limit": "10"})
    assert response.status_code == 302
    key = APIKey.objects.get()
    assert (key.name, key.monthly_limit_micros) == ("After", 10_000_000)
    assert group.audit_events.filter(action="key.update").exists()

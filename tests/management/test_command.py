"""`manage.py create_api_key --management`: operators bootstrap the Management API without a browser."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from audit.models import AuditEvent
from management.models import ManagementKey
from tests.management.conftest import Api

pytestmark = pytest.mark.django_db


def create(**options: str | bool) -> str:
    out = StringIO()
    call_command("create_api_key", stdout=out, **options)
    return out.getvalue().strip()


def test_printed_management_keys_authenticate_with_their_role(client, group):
    admin = Api(
        client, create(group=group.public_id, name="Bootstrap", management=True, role="admin")
    )
    read = Api(
        client, create(group=group.public_id, name="Reports", management=True, role="read-only")
    )
    assert admin.secret.startswith("pplx-admin-") and read.secret.startswith("pplx-admin-")

    for api in (admin, read):
        response = api.get("group")
        assert response.status_code == 200 and response.json()["id"] == group.public_id

    response = read("PATCH", "group", {"name": "Renamed by a reader"})
    assert response.status_code == 403 and "read-only" in response.json()["error"]["message"]
    response = admin("PATCH", "group", {"name": "Renamed by the operator"})
    assert response.status_code == 200 and response.json()["name"] == "Renamed by the operator"

    keys = dict(ManagementKey.objects.filter(group=group).values_list("name", "role"))
    assert keys == {"Bootstrap": "admin", "Reports": "read_only"}
    events = AuditEvent.objects.filter(group=group, action="management_key.create").order_by("id")
    assert [(e.target_repr, e.data["role"], e.actor_id) for e in events] == [
        (str(ManagementKey.objects.get(name="Bootstrap")), "admin", None),
        (str(ManagementKey.objects.get(name="Reports")), "read_only", None),
    ]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"management": True}, "--role admin or --role read-only"),
        ({"management": True, "role": "owner"}, "--role admin or --role read-only"),
        ({"role": "admin"}, "add --management"),
        ({"management": True, "role": "admin", "name": "   "}, "Give the key a name"),
    ],
)
def test_bad_options_are_refused_and_nothing_is_written(group, options, message):
    with pytest.raises(CommandError, match=message):
        create(**{"group": group.public_id, "name": "Ops", **options})
    assert not ManagementKey.objects.exists()
    assert not AuditEvent.objects.filter(action="management_key.create").exists()


def test_unknown_group_is_refused(db):
    with pytest.raises(CommandError, match="No API group"):
        create(group="nope", name="Ops", management=True, role="admin")
    assert not ManagementKey.objects.exists()

from __future__ import annotations

import pytest
from django.db import transaction
from django.db.utils import ProgrammingError

from audit.models import AuditEvent
from keys.services import api_key_create, api_key_revoke

pytestmark = pytest.mark.django_db


def test_admin_sees_filtered_audit_log(admin_client, group, user):
    issued = api_key_create(group=group, name="Audited", actor=user)
    api_key_revoke(key=issued.key, actor=user)
    base = f"/g/{group.public_id}/audit/"
    html = admin_client.get(base).content.decode()
    assert "key.create" in html and "key.revoke" in html and user.email in html
    only = admin_client.get(base + "?action=key.revoke").content.decode()
    assert only.count("<code>key.") == 1
    nobody = admin_client.get(base + "?actor=nobody@example.com").content.decode()
    assert "No events match" in nobody
    bad = admin_client.get(base + "?from=yesterday")
    assert bad.status_code == 400 and "is not a date" in bad.content.decode()


def test_members_cannot_see_the_audit_log(member_client, group):
    assert member_client.get(f"/g/{group.public_id}/audit/").status_code == 403


def test_audit_records_are_append_only(group, user):
    api_key_create(group=group, name="x", actor=user)
    event = AuditEvent.objects.get(action="key.create")
    with pytest.raises(ProgrammingError), transaction.atomic():
        AuditEvent.objects.filter(pk=event.pk).update(action="forged")
    with pytest.raises(ProgrammingError), transaction.atomic():
        AuditEvent.objects.filter(pk=event.pk).delete()
    assert AuditEvent.objects.get(pk=event.pk).action == "key.create"

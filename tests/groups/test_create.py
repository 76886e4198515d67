"""A group's life cycle spans layers: groups owns the flow, billing adds its steps through the
hooks in groups.services (core.hooks), registered in billing's AppConfig.ready()."""

from __future__ import annotations

import pytest

from billing.models import CreditAccount
from billing.tasks import sync_customer
from groups.models import APIGroup

pytestmark = pytest.mark.django_db


def test_a_new_group_has_its_admin_and_an_empty_credit_account(client, user):
    client.force_login(user)
    response = client.post("/groups/new/", {"name": "Acme AI", "country": "DE"})
    assert response.status_code == 302
    group = APIGroup.objects.get(name="Acme AI")
    assert list(group.memberships.values_list("user", "role")) == [(user.pk, "admin")]
    account = CreditAccount.objects.get(group=group)
    assert (account.balance_micros, account.purchased_micros) == (0, 0)
    assert list(group.audit_events.values_list("action", flat=True)) == ["group.create"]


def test_changing_the_details_queues_the_stripe_customer_update(
    admin_client, group, monkeypatch, django_capture_on_commit_callbacks
):
    queued: list[int] = []
    monkeypatch.setattr(sync_customer, "delay", queued.append)
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            f"/g/{group.public_id}/settings/", {"name": "Renamed Ltd", "country": "GB"}
        )
    assert response.status_code == 302
    assert queued == [group.pk]
    with django_capture_on_commit_callbacks(execute=True):  # nothing changed: nothing to sync
        admin_client.post(
            f"/g/{group.public_id}/settings/", {"name": "Renamed Ltd", "country": "GB"}
        )
    assert queued == [group.pk]

"""Budgets on the Billing and API Keys pages: Admins add, edit and delete them (htmx), Members
read them; every change is audited; the group's time zone is set on its settings page."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.urls import reverse

from audit.models import AuditEvent
from billing.budgets import BudgetError, budget_create
from billing.models import Budget
from keys.services import api_key_create, api_key_revoke
from tests.factories import GroupFactory
from usage.models import AIModel, UsageEvent

pytestmark = pytest.mark.django_db


def url(group, name: str, **kw) -> str:  # type: ignore[no-untyped-def]
    return reverse(f"billing:{name}", kwargs={"group_id": group.public_id, **kw})


def spend(group, key, micros: int) -> None:  # type: ignore[no-untyped-def]
    model = AIModel.objects.create(name=f"m{UsageEvent.objects.count()}")
    UsageEvent.objects.create(
        request_id=f"r{UsageEvent.objects.count()}", group=group, api_key=key, model=model,
        cost_micros=micros, created_at=datetime.now(UTC),
    )  # fmt: skip


def test_admin_adds_edits_and_deletes_a_group_budget_with_htmx(admin_client, group, user):
    key = api_key_create(group=group, name="Srv").key
    spend(group, key, 1_250_000)
    response = admin_client.post(
        url(group, "budget_add"),
        {"scope": "group", "budget-group-amount": "5.00", "budget-group-window": "daily",
         "budget-group-enforcement": "hard"},
        HTTP_HX_REQUEST="true",
    )  # fmt: skip
    assert response.status_code == 200
    budget = Budget.objects.get(group=group)
    assert (budget.amount_micros, budget.window, budget.api_key) == (5_000_000, "daily", None)
    html = response.content.decode()
    assert 'id="budgets-group"' in html and "$5.00" in html and "$1.25" in html and "$3.75" in html
    response = admin_client.post(
        url(group, "budget_edit", budget_id=budget.pk),
        {f"budget-{budget.pk}-amount": "7.50", f"budget-{budget.pk}-enforcement": "soft"},
        HTTP_HX_REQUEST="true",
    )
    budget.refresh_from_db()
    assert (budget.amount_micros, budget.enforcement) == (7_500_000, "soft")
    page = admin_client.get(url(group, "overview")).content.decode()
    assert 'data-testid="budgets-group"' in page and "$7.50" in page and "$6.25" in page
    admin_client.post(url(group, "budget_delete", budget_id=budget.pk), HTTP_HX_REQUEST="true")
    assert not Budget.objects.exists()
    actions = list(AuditEvent.objects.filter(group=group, action__startswith="budget.")
                   .order_by("id").values_list("action", flat=True))  # fmt: skip
    assert actions == ["budget.create", "budget.update", "budget.delete"]


def test_bad_budget_input_is_refused_and_nothing_is_saved(admin_client, group):
    cases = [
        {"budget-group-amount": "0", "budget-group-window": "daily"},
        {"budget-group-amount": "-3", "budget-group-window": "daily"},
        {"budget-group-amount": "1.001", "budget-group-window": "daily"},
        {"budget-group-amount": "5", "budget-group-window": "hourly"},
        {"budget-group-amount": "2000000", "budget-group-window": "daily"},
    ]
    for data in cases:
        response = admin_client.post(
            url(group, "budget_add"),
            {"scope": "group", "budget-group-enforcement": "hard", **data},
            HTTP_HX_REQUEST="true",
        )
        assert response.status_code == 422, data
    assert not Budget.objects.exists()


def test_key_budgets_on_the_api_keys_page_and_members_read_only(client, user, member, group):
    key = api_key_create(group=group, name="Batch job").key
    spend(group, key, 400_000)
    client.force_login(user)  # the Admin
    response = client.post(
        url(group, "budget_add"),
        {"scope": "keys", "budget-keys-key": key.public_id, "budget-keys-amount": "1.00",
         "budget-keys-window": "weekly", "budget-keys-enforcement": "hard"},
    )  # fmt: skip
    assert response.status_code == 302 and response["Location"].endswith("/keys/")
    assert Budget.objects.get().api_key == key
    keys_page = reverse("keys:list", kwargs={"group_id": group.public_id})
    assert "Add budget" in client.get(keys_page).content.decode()
    client.force_login(member)
    page = client.get(keys_page).content.decode()
    assert 'data-testid="budgets-keys"' in page and "Batch job" in page
    assert "$0.40" in page and "$0.60" in page
    assert "Add budget" not in page and "/budgets/" not in page  # read-only for Members
    assert client.post(url(group, "budget_add"), {"scope": "keys"}).status_code == 403


def test_service_validation():
    group, other = GroupFactory(), GroupFactory()
    theirs = api_key_create(group=other, name="Theirs").key
    mine = api_key_create(group=group, name="Mine").key
    with pytest.raises(BudgetError, match="does not belong"):
        budget_create(group=group, api_key=theirs, amount_micros=1, window="daily")
    mine = api_key_revoke(key=mine)
    with pytest.raises(BudgetError, match="revoked"):
        budget_create(group=group, api_key=mine, amount_micros=1, window="daily")
    with pytest.raises(BudgetError, match="enforcement"):
        budget_create(group=group, amount_micros=1, window="daily", enforcement="maybe")
    budget_create(group=group, amount_micros=1, window="daily")
    with pytest.raises(BudgetError, match="already has a daily budget"):
        budget_create(group=group, amount_micros=2, window="daily")


def test_admins_set_the_group_time_zone(admin_client, group):
    details = reverse("groups:details", kwargs={"group_id": group.public_id})
    form = {"name": group.name, "country": "FR", "time_zone": "Mars/Olympus"}
    assert admin_client.post(details, form).status_code == 422
    form["time_zone"] = "Europe/Paris"
    assert admin_client.post(details, form).status_code == 302
    group.refresh_from_db()
    assert group.time_zone == "Europe/Paris"
    event = AuditEvent.objects.filter(group=group, action="group.update").latest("id")
    assert event.data["time_zone"] == ["UTC", "Europe/Paris"]
    del form["time_zone"]  # left out: kept
    assert admin_client.post(details, form).status_code == 302
    group.refresh_from_db()
    assert group.time_zone == "Europe/Paris"

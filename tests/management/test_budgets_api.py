"""Budgets in the Management API: list, create (group or key), get, update, delete; validated
naming the field; another group's budgets and keys are 404; audited with the key as actor."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from audit.models import AuditEvent
from billing.models import Budget
from keys.services import api_key_create
from tests.factories import GroupFactory
from tests.management.conftest import Api
from usage.models import AIModel, UsageEvent

pytestmark = pytest.mark.django_db


def test_budget_lifecycle_with_spend(client, group, mgmt):
    api = Api(client, mgmt["admin"].secret)
    key = api_key_create(group=group, name="Batch").key
    model = AIModel.objects.create(name="m")
    UsageEvent.objects.create(request_id="r1", group=group, api_key=key, model=model,
                              cost_micros=750_000, created_at=datetime.now(UTC))  # fmt: skip
    assert api("PATCH", "/v1/management/group", {"time_zone": "Asia/Tokyo"}).status_code == 200
    made = api("POST", "/v1/management/budgets", {"amount_micros": 2_000_000, "window": "weekly",
                                                  "key_id": key.public_id})  # fmt: skip
    assert made.status_code == 201, made.content
    body = made.json()
    assert body | {"id": None, "window_start": None, "window_end": None, "created_at": None,
                   "updated_at": None} == {
        "object": "budget", "id": None, "scope": "key", "key_id": key.public_id,
        "key_name": "Batch", "amount_micros": 2_000_000, "amount_display": "$2.00",
        "window": "weekly", "enforcement": "hard", "spent_micros": 750_000,
        "spent_display": "$0.75", "remaining_micros": 1_250_000, "remaining_display": "$1.25",
        "window_start": None, "window_end": None, "time_zone": "Asia/Tokyo", "created_at": None,
        "updated_at": None,
    }  # fmt: skip
    start = datetime.fromisoformat(body["window_start"].replace("Z", "+00:00"))
    assert start.weekday() in (6, 0) and start.hour == 15  # Monday 00:00 in Tokyo is 15:00 UTC
    group_budget = api(
        "POST",
        "/v1/management/budgets",
        {"amount_micros": 1_000_000, "window": "lifetime", "enforcement": "soft"},
    )
    assert group_budget.status_code == 201 and group_budget.json()["window_end"] is None
    listed = api("GET", "/v1/management/budgets").json()["data"]
    assert sorted(b["scope"] for b in listed) == ["group", "key"]
    bid = body["id"]
    patched = api("PATCH", f"/v1/management/budgets/{bid}", {"enforcement": "soft"})
    assert patched.json()["enforcement"] == "soft" and patched.json()["amount_micros"] == 2_000_000
    assert api("DELETE", f"/v1/management/budgets/{bid}").status_code == 200
    assert api("GET", f"/v1/management/budgets/{bid}").status_code == 404
    actions = set(AuditEvent.objects.filter(group=group, action__startswith="budget.")
                  .values_list("action", flat=True))  # fmt: skip
    assert actions == {"budget.create", "budget.update", "budget.delete"}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"amount_micros": 0, "window": "daily"}, "amount_micros"),
        ({"amount_micros": -5, "window": "daily"}, "amount_micros"),
        ({"amount_micros": 10**13, "window": "daily"}, "amount_micros"),
        ({"amount_micros": "5", "window": "daily"}, "amount_micros"),
        ({"amount_micros": 1.5, "window": "daily"}, "amount_micros"),
        ({"amount_micros": 5, "window": "hourly"}, "window"),
        ({"amount_micros": 5, "window": "daily", "enforcement": "maybe"}, "enforcement"),
        ({"amount_micros": 5}, "window"),
        ({"amount_micros": 5, "window": "daily", "colour": "red"}, "colour"),
    ],
)
def test_bad_budgets_are_422_naming_the_field(client, group, mgmt, body, param):
    response = Api(client, mgmt["admin"].secret)("POST", "/v1/management/budgets", body)
    assert response.status_code == 422, response.content
    assert response.json()["error"]["param"] == param
    assert not Budget.objects.exists()


def test_another_groups_key_and_budget_are_404_and_duplicates_422(client, group, mgmt):
    api = Api(client, mgmt["admin"].secret)
    other = GroupFactory()
    theirs = api_key_create(group=other, name="Theirs").key
    their_budget = Budget.objects.create(group=other, amount_micros=5, window="daily")
    assert (
        api(
            "POST",
            "/v1/management/budgets",
            {"amount_micros": 5, "window": "daily", "key_id": theirs.public_id},
        ).status_code
        == 404
    )
    for method in ("GET", "PATCH", "DELETE"):
        body = {"amount_micros": 9} if method == "PATCH" else None
        assert api(method, f"/v1/management/budgets/{their_budget.pk}", body).status_code == 404
        assert api(method, "/v1/management/budgets/nope", body).status_code == 404
    assert (
        api("POST", "/v1/management/budgets", {"amount_micros": 5, "window": "daily"}).status_code
        == 201
    )
    again = api("POST", "/v1/management/budgets", {"amount_micros": 7, "window": "daily"})
    assert again.status_code == 422 and again.json()["error"]["param"] == "window"
    bad_zone = api("PATCH", "/v1/management/group", {"time_zone": "Nowhere/Land"})
    assert bad_zone.status_code == 422 and bad_zone.json()["error"]["param"] == "time_zone"

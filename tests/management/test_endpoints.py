"""Every Management API operation × the four kinds of caller.

admin management key → success; read-only key → reads succeed, writes 403 permission_denied;
an inference key → 401 invalid_api_key; the admin key of another group → 404 for this group's
objects, and its own group's data (never this group's) on the other endpoints.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from django.test import Client

from keys.services import api_key_create
from management.api import openapi_document
from tests.management.conftest import Api, build_world

pytestmark = pytest.mark.django_db


@dataclass(frozen=True)
class Case:
    method: str
    path: (
        str  # {key}, {member}, {invitation}, {invoice}, {budget}, {alert}, {endpoint}: the world's
    )
    ok: int = 200
    body: dict[str, Any] | None = None

    @property
    def names_object(self) -> bool:
        return "{" in self.path

    def url(self, world: dict[str, Any]) -> str:
        return "/v1/management/" + self.path.format(
            key=world["key"].public_id,
            member=world["membership"].public_id,
            invitation=world["invitation"].public_id,
            invoice=world["invoice"].public_id,
            budget=world["budget"].pk,
            alert=world["alert"].public_id,
            endpoint=world["webhook_endpoint"].public_id,
        )


CASES: dict[str, Case] = {
    "getGroup": Case("GET", "group"),
    "updateGroup": Case("PATCH", "group", body={"description": "Set through the API"}),
    "getBilling": Case("GET", "billing"),
    "listTransactions": Case("GET", "billing/transactions"),
    "getCreditLots": Case("GET", "billing/credit-lots"),
    "getUsage": Case("GET", "usage?range=7d"),
    "getUsageGrouped": Case("GET", "usage/grouped?by=model"),
    "listKeys": Case("GET", "keys"),
    "createKey": Case("POST", "keys", 201, {"name": "From the API"}),
    "getKey": Case("GET", "keys/{key}"),
    "updateKey": Case("PATCH", "keys/{key}", body={"monthly_limit_micros": 5_000_000}),
    "revokeKey": Case("POST", "keys/{key}/revoke"),
    "regenerateKey": Case("POST", "keys/{key}/regenerate"),
    "listMembers": Case("GET", "members"),
    "getMember": Case("GET", "members/{member}"),
    "updateMember": Case("PATCH", "members/{member}", body={"role": "admin"}),
    "removeMember": Case("DELETE", "members/{member}"),
    "listInvitations": Case("GET", "invitations"),
    "createInvitation": Case("POST", "invitations", 201, {"email": "new@example.com"}),
    "getInvitation": Case("GET", "invitations/{invitation}"),
    "revokeInvitation": Case("POST", "invitations/{invitation}/revoke"),
    "listInvoices": Case("GET", "invoices"),
    "getInvoice": Case("GET", "invoices/{invoice}"),
    "getInvoicePdf": Case("GET", "invoices/{invoice}/pdf"),
    "listBudgets": Case("GET", "budgets"),
    "createBudget": Case("POST", "budgets", 201, {"amount_micros": 2_000_000, "window": "daily"}),
    "getBudget": Case("GET", "budgets/{budget}"),
    "updateBudget": Case("PATCH", "budgets/{budget}", body={"amount_micros": 9_000_000}),
    "deleteBudget": Case("DELETE", "budgets/{budget}"),
    "listAlerts": Case("GET", "alerts"),
    "createAlert": Case(
        "POST",
        "alerts",
        201,
        {
            "name": "Low",
            "kind": "balance",
            "balance_threshold_micros": 2_000_000,
            "extra_emails": ["finance@example.com"],
        },
    ),  # fmt: skip
    "getAlert": Case("GET", "alerts/{alert}"),
    "updateAlert": Case("PATCH", "alerts/{alert}", body={"balance_threshold_micros": 3_000_000}),
    "deleteAlert": Case("DELETE", "alerts/{alert}"),
    "listWebhookEndpoints": Case("GET", "webhook-endpoints"),
    "createWebhookEndpoint": Case(
        "POST", "webhook-endpoints", 201, {"name": "Ops", "url": "https://ops.example.com/h"}
    ),
    "getWebhookEndpoint": Case("GET", "webhook-endpoints/{endpoint}"),
    "updateWebhookEndpoint": Case(
        "PATCH", "webhook-endpoints/{endpoint}", body={"payload_format": "slack"}
    ),
    "deleteWebhookEndpoint": Case("DELETE", "webhook-endpoints/{endpoint}"),
    "listWebhookDeliveries": Case("GET", "webhook-endpoints/{endpoint}/deliveries"),
    "testWebhookEndpoint": Case("POST", "webhook-endpoints/{endpoint}/test", 202),
}
CALLERS = ["admin", "read_only", "inference", "other_group"]


def test_every_operation_is_in_the_matrix():
    document = openapi_document()
    assert set(CASES) == {
        op["operationId"] for ops in document["paths"].values() for op in ops.values()
    }


def _call(client: Client, secret: str, case: Case, url: str) -> Any:
    return Api(client, secret)(case.method, url, case.body)


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize("operation", list(CASES))
def test_access(client, group, user, mgmt, other_world, operation, caller):
    world = build_world(group, user)
    case = CASES[operation]
    url = case.url(world)
    secret = {
        "admin": mgmt["admin"].secret,
        "read_only": mgmt["read_only"].secret,
        "inference": api_key_create(group=group, name="Inference").secret,
        "other_group": other_world["mgmt"].secret,
    }[caller]
    response = _call(client, secret, case, url)
    status = response.status_code
    if caller == "inference":
        assert status == 401
        error = response.json()["error"]
        assert error["code"] == "invalid_api_key" and "management key" in error["message"]
    elif caller == "read_only" and case.method != "GET":
        assert status == 403
        assert response.json()["error"]["code"] == "permission_denied"
    elif caller == "other_group" and case.names_object:
        assert status == 404, response.content
        assert response.json()["error"]["code"] == "not_found"
    else:
        assert status == case.ok, response.content
        if caller == "other_group":
            # Served from the other group: nothing of this group leaks into it.
            text = response.content.decode()
            names = ("group", "key", "membership", "invitation", "invoice", "alert")
            for name in (*names, "webhook_endpoint"):
                assert world[name].public_id not in text, name
    if status >= 400:
        body = response.json()
        assert set(body["error"]) == {"message", "type", "code", "param"}

"""Management API behaviour: keys and errors, pagination, the dashboard's numbers, domain rules,
audit, rate limits."""

from __future__ import annotations

import json
import re
import uuid
from datetime import timedelta

import pytest
from django.urls import URLPattern, get_resolver
from django.utils import timezone

from audit.models import AuditEvent
from keys import secrets
from keys.models import APIKey
from keys.services import api_key_create
from management.models import ManagementKey
from management.services import management_key_revoke
from members.models import Membership
from tests.management.conftest import Api, make_invoice
from usage.catalogue import catalogue_sync
from usage.models import AIModel, RollupState, UsageEvent
from usage.rollups import rollup_range

pytestmark = pytest.mark.django_db


# --- authentication and errors -------------------------------------------------------------


def test_missing_malformed_revoked_and_inference_keys_are_401(client, group, mgmt):
    cases = {
        None: "Missing management key",
        "Basic abc": "Bearer",
        f"Bearer {mgmt['admin'].secret[:-1]}x": "not a valid management key",
        f"Bearer {api_key_create(group=group, name='Inference').secret}": "inference API key",
    }
    for header, message in cases.items():
        extra = {"HTTP_AUTHORIZATION": header} if header else {}
        response = client.get("/v1/management/group", **extra)
        assert response.status_code == 401
        error = response.json()["error"]
        assert error["code"] == "invalid_api_key" and error["type"] == "authentication_error"
        assert message in error["message"], error
    management_key_revoke(key=mgmt["read_only"].key, actor=None)
    response = Api(client, mgmt["read_only"].secret).get("group")
    assert response.status_code == 401 and "revoked" in response.json()["error"]["message"]


def test_management_keys_are_hashed_and_prefixed(group, mgmt):
    secret = mgmt["admin"].secret
    assert secret.startswith("pplx-admin-") and secrets.is_well_formed(secret, "pplx-admin-")
    assert not secrets.is_well_formed(secret)  # never an inference key
    key = ManagementKey.objects.get(pk=mgmt["admin"].key.pk)
    assert key.secret_hash == secrets.hash_key(secret) and key.last_four == secret[-4:]
    assert secret not in repr(list(ManagementKey.objects.values()))


def test_read_only_key_reads_but_cannot_write(read_api):
    assert read_api.get("keys").status_code == 200
    response = read_api("POST", "keys", {"name": "Nope"})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
    assert "read-only" in response.json()["error"]["message"]
    assert not APIKey.objects.filter(name="Nope").exists()


def test_unknown_paths_and_methods_answer_in_json(api):
    response = api.get("no-such-thing")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    response = api("DELETE", "keys")
    assert response.status_code == 405 and response["Allow"] == "GET, POST"
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_last_used_at_is_recorded(api, mgmt):
    assert api.get("group").status_code == 200
    assert ManagementKey.objects.get(pk=mgmt["admin"].key.pk).last_used_at is not None


def test_rate_limit_per_key_answers_429_with_retry_after(api, read_api, settings):
    settings.MANAGEMENT_API_RATE_LIMIT = 3
    for _ in range(3):
        ok = api.get("group")
        assert ok.status_code == 200
    assert ok["X-RateLimit-Remaining-Requests"] == "0"
    refused = api.get("group")
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert read_api.get("group").status_code == 200  # each key has its own counter


# --- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "param"),
    [
        ("POST", "keys", {}, "name"),
        ("POST", "keys", {"name": "   "}, "name"),
        ("POST", "keys", {"name": "x" * 101}, "name"),
        ("POST", "keys", {"name": "K", "expires_at": "2020-01-01T00:00:00Z"}, "expires_at"),
        ("POST", "keys", {"name": "K", "expires_at": "2030-01-01"}, "expires_at"),
        ("POST", "keys", {"name": "K", "monthly_limit_micros": 0}, "monthly_limit_micros"),
        ("POST", "keys", {"name": "K", "monthly_limit_micros": 10**30}, "monthly_limit_micros"),
        ("POST", "keys", {"name": "K", "monthly_limit_micros": "5"}, "monthly_limit_micros"),
        ("POST", "keys", {"name": "K", "colour": "red"}, "colour"),
        ("POST", "keys", {"name": "K\x00"}, "name"),
        ("PATCH", "group", {"name": ""}, "name"),
        ("PATCH", "group", {"tax_id": "!!"}, "tax_id"),
        ("PATCH", "group", {"tax_id": "00-3456789"}, "tax_id"),  # the group is in the US: EIN
        ("PATCH", "group", {"tax_id": "DE136695978"}, "tax_id"),  # EU VAT, bad check digit
        ("PATCH", "group", {"country": "ZZ"}, "country"),
        ("PATCH", "group", {"city": 5}, "city"),
        ("POST", "invitations", {"email": "not-an-address"}, "email"),
        ("POST", "invitations", {"email": "a@example.com", "role": "owner"}, "role"),
    ],
)
def test_validation_errors_are_422_naming_the_field(api, method, path, body, param):
    response = api(method, path, body)
    assert response.status_code == 422, response.content
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert error["message"]


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ({"start": "2026-13-01", "end": "2026-12-01"}, "start"),
        ({"start": "2026-11-20", "end": "2026-11-01"}, "end"),
        ({"range": "forever"}, "range"),
        ({"tz": "Mars/Olympus"}, "tz"),
        ({"model": "gpt-9"}, "model"),
        ({"granularity": "minute"}, "granularity"),
        ({"range": "90d", "granularity": "hour"}, "granularity"),
        ({"range": ""}, "range"),
    ],
)
def test_usage_filters_are_validated(api, query, param):
    response = api.get("usage", **query)
    assert response.status_code == 422, response.content
    assert response.json()["error"]["param"] == param


def test_bad_json_is_400(client, mgmt):
    response = client.post(
        "/v1/management/keys",
        "{not json",
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {mgmt['admin'].secret}",
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_request_error"


def test_another_groups_key_filter_is_404(api, other_world):
    response = api.get("usage", key=other_world["key"].public_id)
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


# --- pagination ----------------------------------------------------------------------------


def _page_through(api: Api, path: str, limit: int, between=None) -> list[str]:  # type: ignore[no-untyped-def]
    seen: list[str] = []
    cursor = None
    while True:
        query = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        body = api.get(path, **query).json()
        seen += [item["id"] for item in body["data"]]
        if not body["has_more"]:
            assert body["next_cursor"] is None
            return seen
        cursor = body["next_cursor"]
        if between:
            between()


def test_pagination_neither_skips_nor_repeats_while_rows_are_inserted(api, group):
    keys = [api_key_create(group=group, name=f"K{i}").key for i in range(9)]
    # Several rows with the very same created_at: the id breaks the tie.
    same = timezone.now() - timedelta(hours=1)
    APIKey.objects.filter(pk__in=[k.pk for k in keys[2:6]]).update(created_at=same)
    expected = list(
        APIKey.objects.filter(group=group)
        .order_by("-created_at", "-id")
        .values_list("public_id", flat=True)
    )
    counter = iter(range(100))

    def insert() -> None:  # another client creating keys between our page requests
        api_key_create(group=group, name=f"New {next(counter)}")

    seen = _page_through(api, "keys", 2, between=insert)
    assert seen == expected  # all of them, once each, in order; none of the new ones
    assert len(set(seen)) == len(seen) == 9
    assert APIKey.objects.filter(group=group).count() == 9 + 4


def test_cursor_and_limit_are_validated(api):
    assert api.get("keys", cursor="garbage!").json()["error"]["param"] == "cursor"
    assert api.get("keys", cursor="WzEsMl0").status_code == 422  # valid base64, wrong content
    for limit in ("0", "101", "ten", "-1"):
        response = api.get("keys", limit=limit)
        assert response.status_code == 422 and response.json()["error"]["param"] == "limit"


def test_every_list_pages(api, group, user):
    from billing.services import credits_grant
    from members.services import invitation_create
    from tests.factories import MembershipFactory

    for i in range(3):
        credits_grant(group=group, amount_micros=1_000_000, reason="r", reference=f"g{i}")
        MembershipFactory(group=group)
        invitation_create(group=group, email=f"p{i}@example.com", role="member", actor=user)
        make_invoice(group, period_key=f"2025-0{i + 1}")
    for path, count in (
        ("billing/transactions", 3),
        ("members", 4),
        ("invitations", 3),
        ("invoices", 3),
    ):
        if path == "billing/transactions":
            bodies = [api.get(path, limit=2).json()]
            assert bodies[0]["has_more"] and len(bodies[0]["data"]) == 2
            rest = api.get(path, limit=2, cursor=bodies[0]["next_cursor"]).json()
            assert len(rest["data"]) == 1 and not rest["has_more"]
        else:
            assert len(_page_through(api, path, 2)) == count


# --- the dashboard's numbers ---------------------------------------------------------------


def _event(group, key, model, at, cost, prompt=10, completion=20):  # type: ignore[no-untyped-def]
    return UsageEvent.objects.create(
        request_id=uuid.uuid4().hex, group=group, api_key=key, model=model, prompt_tokens=prompt,
        completion_tokens=completion, search_queries=1, cost_micros=cost, created_at=at,
    )  # fmt: skip


def test_usage_numbers_equal_the_dashboards_to_the_micro_dollar(api, admin_client, group):
    catalogue_sync()
    sonar, pro = AIModel.objects.get(name="sonar"), AIModel.objects.get(name="sonar-pro")
    k1 = api_key_create(group=group, name="Server").key
    k2 = api_key_create(group=group, name="Laptop").key
    now = timezone.now()
    for i in range(60):  # rolled-up history with awkward micro amounts
        _event(group, k1 if i % 3 else k2, sonar if i % 2 else pro,
               now - timedelta(hours=2 + 7 * i), cost=1_234 + 17 * i, prompt=i)  # fmt: skip
    rollup_range(now - timedelta(days=30), now)
    RollupState.objects.update_or_create(
        pk=1, defaults={"rolled_through": now - timedelta(hours=1, minutes=30)}
    )
    for m in range(1, 6):  # fresh events, not rolled up yet
        _event(group, k2, pro, now - timedelta(minutes=m), cost=5_001)
    for query in ({"range": "7d"}, {"range": "24h"}, {"range": "30d", "key": k1.public_id},
                  {"range": "30d", "model": "sonar-pro"}):  # fmt: skip
        page = admin_client.get(f"/g/{group.public_id}/usage/", query)
        dash = page.context["usage"]
        body = api.get("usage", **query).json()
        totals = body["totals"]
        for metric in ("requests", "prompt_tokens", "completion_tokens", "search_queries",
                       "cost_micros", "tokens"):  # fmt: skip
            assert totals[metric] == getattr(dash.totals, metric), (query, metric)
        assert [b["label"] for b in body["series"]] == dash.labels
        assert [b["requests"] for b in body["series"]] == dash.series["requests"]
        assert [b["tokens"] for b in body["series"]] == dash.series["tokens"]
        assert [b["cost_micros"] for b in body["series"]] == dash.series["cost_micros"]
        by_model = api.get("usage/grouped", by="model", **query).json()["data"]
        assert [(r["model"], r["totals"]["cost_micros"]) for r in by_model] == [
            (b.label, b.totals.cost_micros) for b in dash.by_model
        ]
        by_key = api.get("usage/grouped", by="key", **query).json()["data"]
        assert [(r["key"]["id"], r["totals"]["cost_micros"], r["totals"]["requests"])
                for r in by_key] == [
            (b.obj.public_id, b.totals.cost_micros, b.totals.requests) for b in dash.by_key
        ]  # fmt: skip
        by_day = api.get("usage/grouped", by="day", **query).json()["data"]
        assert sum(r["totals"]["cost_micros"] for r in by_day) == dash.totals.cost_micros
        assert sum(r["totals"]["requests"] for r in by_day) == dash.totals.requests
    by_hour = api.get("usage/grouped", by="hour", range="24h").json()["data"]
    day = api.get("usage", range="24h").json()["totals"]
    assert sum(r["totals"]["cost_micros"] for r in by_hour) == day["cost_micros"] > 0


def test_billing_shows_balance_tier_and_transactions(api, group):
    from billing.services import credits_grant

    credits_grant(group=group, amount_micros=12_345_678, reason="Goodwill", reference="gw-1")
    body = api.get("billing").json()
    assert body["balance_micros"] == 12_345_678 and body["balance_display"] == "$12.35"
    assert body["tier"]["number"] == 0 and body["blocked"] is False
    limits = {row["family"]: row for row in body["limits"]}  # the seeded catalogue's, at tier 0
    assert limits["sonar-deep-research"]["requests_per_minute"] == 5
    # A chat model's family still names its model (the shape before per-family limits).
    assert limits["sonar-deep-research"]["model"] == "sonar-deep-research"
    assert limits["search"] == {
        "family": "search", "model": None, "requests_per_minute": None,
        "requests_per_second": 50, "published": True,
    }  # fmt: skip
    assert limits["embeddings"]["published"] is False
    entry = api.get("billing/transactions").json()["data"][0]
    assert entry["amount_micros"] == 12_345_678 and entry["description"] == "Goodwill"


# --- domain rules and audit ----------------------------------------------------------------


def test_key_lifecycle_through_the_api_is_audited_with_the_key_as_actor(api, group, mgmt):
    created = api("POST", "keys", {"name": "CI", "monthly_limit_micros": 2_500_000})
    assert created.status_code == 201
    body = created.json()
    assert secrets.is_well_formed(body["secret"]) and body["monthly_limit_display"] == "$2.50"
    key_id = body["id"]
    again = api.get(f"keys/{key_id}").json()
    assert "secret" not in again and again["masked"].endswith(body["secret"][-4:])
    updated = api("PATCH", f"keys/{key_id}", {"monthly_limit_micros": None, "name": "CI 2"})
    assert updated.json()["monthly_limit_micros"] is None and updated.json()["name"] == "CI 2"
    regenerated = api("POST", f"keys/{key_id}/regenerate").json()
    assert regenerated["secret"] != body["secret"]
    assert api("POST", f"keys/{key_id}/revoke").json()["status"] == "revoked"
    refused = api("POST", f"keys/{key_id}/regenerate")
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "invalid_state"
    key = APIKey.objects.get(public_id=key_id)
    assert key.created_by is None and key.revoked_by is None
    events = AuditEvent.objects.filter(group=group, target_id=str(key.pk)).order_by("id")
    assert [e.action for e in events] == [
        "key.create",
        "key.update",
        "key.regenerate",
        "key.revoke",
    ]
    for e in events:
        assert e.actor_management_key_id == mgmt["admin"].key.pk and e.actor_id is None
        assert e.actor_label.startswith("management key Ops")


def test_last_admin_can_be_neither_demoted_nor_removed(api, group, user):
    admin = Membership.objects.get(group=group, user=user)
    demote = api("PATCH", f"members/{admin.public_id}", {"role": "member"})
    assert demote.status_code == 422 and "last Admin" in demote.json()["error"]["message"]
    remove = api("DELETE", f"members/{admin.public_id}")
    assert remove.status_code == 422 and "last Admin" in remove.json()["error"]["message"]
    assert Membership.objects.get(pk=admin.pk).role == "admin"


def test_members_and_invitations_through_the_api(
    api, group, mailoutbox, django_capture_on_commit_callbacks
):
    from tests.factories import MembershipFactory

    other = MembershipFactory(group=group, role="member")
    promoted = api("PATCH", f"members/{other.public_id}", {"role": "admin"})
    assert promoted.json()["role"] == "admin"
    assert api("DELETE", f"members/{other.public_id}").json() == {
        "object": "member",
        "id": other.public_id,
        "deleted": True,
    }
    assert not Membership.objects.filter(pk=other.pk).exists()
    with django_capture_on_commit_callbacks(execute=True):
        invited = api("POST", "invitations", {"email": "New@Example.com", "role": "admin"})
    assert invited.status_code == 201 and invited.json()["email"] == "new@example.com"
    assert [m.to for m in mailoutbox] == [["new@example.com"]]
    assert "An Admin invited you" in mailoutbox[0].subject
    twice = api("POST", "invitations", {"email": "new@example.com"})
    assert twice.status_code == 422 and twice.json()["error"]["param"] == "email"
    revoked = api("POST", f"invitations/{invited.json()['id']}/revoke").json()
    assert revoked["status"] == "revoked"
    actions = set(
        AuditEvent.objects.filter(group=group, actor_management_key__isnull=False).values_list(
            "action", flat=True
        )
    )
    assert {"member.role_change", "member.remove", "invitation.create", "invitation.revoke"} <= (
        actions
    )


def test_group_details_update_uses_the_pages_validation_and_is_audited(api, group):
    response = api("PATCH", "group", {"name": "  Acme Inc  ", "tax_id": "de 136 695 976"})
    assert response.status_code == 200
    body = response.json()
    assert body["name"] == "Acme Inc" and body["tax_id"] == "DE 136 695 976"
    assert body["country"] == "US"  # untouched fields keep their values
    event = AuditEvent.objects.get(group=group, action="group.update")
    assert event.actor_management_key is not None and "tax_id" in event.data


def test_invoice_detail_and_pdf(api, group):
    invoice = make_invoice(group, number="INV-2025-0042")
    detail = api.get(f"invoices/{invoice.public_id}").json()
    assert detail["number"] == "INV-2025-0042" and detail["lines"] == []
    assert detail["pdf_url"] == f"/v1/management/invoices/{invoice.public_id}/pdf"
    pdf = api.get(f"invoices/{invoice.public_id}/pdf")
    assert pdf["Content-Type"] == "application/pdf" and pdf.content.startswith(b"%PDF")


# --- the description -----------------------------------------------------------------------


def test_openapi_document_and_reference_page_cover_every_route(client):
    doc = client.get("/v1/management/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    assert doc["components"]["securitySchemes"]["ManagementKeyAuth"]["scheme"] == "bearer"
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert len(documented) == 41  # 24 + five of budgets + five of alerts + seven of webhooks
    routes = {
        "/v1/management/" + str(p.pattern).replace("<key_id>", "{key_id}")
        for p in get_resolver("management.api_urls").url_patterns
        if isinstance(p, URLPattern) and p.name and p.name not in ("openapi", "reference")
    }
    assert {path for path, _ in documented} == {
        r.replace("<member_id>", "{member_id}")
        .replace("<invitation_id>", "{invitation_id}")
        .replace("<invoice_id>", "{invoice_id}")
        .replace("<budget_id>", "{budget_id}")
        .replace("<alert_id>", "{alert_id}")
        .replace("<endpoint_id>", "{endpoint_id}")
        for r in routes
    }
    for path, method in documented:  # each route answers that method (401 without a key)
        url = re.sub(r"\{\w+\}", "abc123", path)
        response = client.generic(method.upper(), url)
        assert response.status_code == 401, (method, path, response.content)
        op = doc["paths"][path][method]
        assert {"401", "404", "422", "429"} <= set(op["responses"]), (method, path)
    page = client.get("/v1/management/reference")
    html = page.content.decode()
    assert page.status_code == 200
    assert all(path in html for path, _ in documented)
    assert "cdn" not in html.lower() and '<script src="http' not in html


@pytest.mark.django_db(transaction=True)
def test_pagination_with_inserts_committed_by_another_thread(client, group, mgmt):
    """A writer commits new keys from its own connection while a client pages through."""
    import threading

    from django.db import connection

    before = [api_key_create(group=group, name=f"Before {i}").key.public_id for i in range(12)]
    stop = threading.Event()
    inserted: list[str] = []

    def writer() -> None:
        try:
            while not stop.is_set() and len(inserted) < 200:
                inserted.append(api_key_create(group=group, name="During").key.public_id)
        finally:
            connection.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        api = Api(client, mgmt["admin"].secret)
        pages, cursor = [], None
        while True:
            body = api.get("keys", limit=3, **({"cursor": cursor} if cursor else {})).json()
            pages += body["data"]
            if not body["has_more"]:
                break
            cursor = body["next_cursor"]
    finally:
        stop.set()
        thread.join()
    seen = [item["id"] for item in pages]
    assert len(seen) == len(set(seen))  # nothing repeated
    assert set(before) <= set(seen)  # nothing that existed when paging began was skipped
    assert set(seen) <= set(before) | set(inserted)
    order = [(item["created_at"], item["id"]) for item in pages]
    assert [t for t, _ in order] == sorted((t for t, _ in order), reverse=True)


# --- malformed amounts ---------------------------------------------------------------------

MALFORMED_AMOUNTS = [
    "1e30",
    "NaN",
    "Infinity",
    "-Infinity",
    "1e-9",
    "0.0000001",
    "2500000.0",  # a float, even a whole one: amounts are integers
    "-0",
    "-5",
    '"2500000"',
    '"abc"',
    "true",
    "[2500000]",
    "9" * 5000,  # longer than any amount (and than Python's int-from-text limit)
]


@pytest.mark.parametrize("literal", MALFORMED_AMOUNTS)
def test_malformed_amounts_are_refused_naming_the_field(api, client, mgmt, group, literal):
    """Sent as raw JSON text: nothing is created or changed, and `param` names the field."""
    headers = {"HTTP_AUTHORIZATION": f"Bearer {mgmt['admin'].secret}"}
    key = api_key_create(group=group, name="Limited", monthly_limit_micros=1_000_000).key
    before = APIKey.objects.count()
    for method, url, body in (
        ("POST", "/v1/management/keys", '{"name": "K", "monthly_limit_micros": %s}'),
        ("PATCH", f"/v1/management/keys/{key.public_id}", '{"monthly_limit_micros": %s}'),
    ):
        response = client.generic(
            method, url, body % literal, content_type="application/json", **headers
        )
        assert response.status_code == 422, (method, response.content)
        error = response.json()["error"]
        assert error["param"] == "monthly_limit_micros", error
        assert error["type"] == "invalid_request_error" and "micro-dollars" in error["message"]
    assert APIKey.objects.count() == before
    assert APIKey.objects.get(pk=key.pk).monthly_limit_micros == 1_000_000


def test_well_formed_amounts_are_stored_to_the_micro_dollar(api, group):
    created = api("POST", "keys", {"name": "K", "monthly_limit_micros": 1_234_567})
    assert created.status_code == 201
    assert created.json()["monthly_limit_micros"] == 1_234_567
    assert created.json()["monthly_limit_display"] == "$1.23"
    key_id = created.json()["id"]
    top = 1_000_000 * 1_000_000
    assert api("PATCH", f"keys/{key_id}", {"monthly_limit_micros": top}).status_code == 200
    assert APIKey.objects.get(public_id=key_id).monthly_limit_micros == top
    too_much = api("PATCH", f"keys/{key_id}", {"monthly_limit_micros": top + 1})
    assert too_much.status_code == 422
    assert too_much.json()["error"]["param"] == "monthly_limit_micros"
    assert APIKey.objects.get(public_id=key_id).monthly_limit_micros == top


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "keys", '{"name": "K", "expires_at": 1893456000}'),  # not a date-time string
        ("POST", "keys", '{"name": 5}'),
        ("PATCH", "group", '{"city": null}'),
        ("PATCH", "members/{member}", '{"role": ["admin"]}'),
    ],
)
def test_wrong_types_are_refused_naming_the_field(client, mgmt, group, user, method, path, body):
    member = Membership.objects.get(group=group, user=user)
    url = "/v1/management/" + path.format(member=member.public_id)
    response = client.generic(
        method, url, body, content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {mgmt['admin'].secret}",
    )  # fmt: skip
    assert response.status_code == 422, response.content
    assert response.json()["error"]["param"] == list(json.loads(body))[-1]


@pytest.mark.parametrize("body", ["[]", '"text"', "5", "null"])
def test_a_body_that_is_not_an_object_is_400(client, mgmt, body):
    response = client.post(
        "/v1/management/keys", body, content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {mgmt['admin'].secret}",
    )  # fmt: skip
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "invalid_request_error"
    assert not APIKey.objects.exists()


def test_scripts_need_no_csrf_token(mgmt):
    """A script has a key, not a session: writes work with Django's CSRF checks enforced."""
    from django.test import Client

    api = Api(Client(enforce_csrf_checks=True), mgmt["admin"].secret)
    assert api("POST", "keys", {"name": "From cron"}).status_code == 201
    assert api("PATCH", "group", {"city": "Berlin"}).status_code == 200


def test_credit_lots_list_each_grant_and_paid_credit(api, group):
    from datetime import timedelta

    from django.utils import timezone

    from billing.services import credits_grant, ledger_post

    ledger_post(group=group, amount_micros=4_000_000, kind="purchase", reference="pi_lots")
    expires = timezone.now() + timedelta(days=14)
    credits_grant(group=group, amount_micros=3_000_000, reason="Beta", reference="beta",
                  kind="promotional", expires_at=expires)  # fmt: skip
    ledger_post(group=group, amount_micros=-1_000_000, kind="usage", reference="usage:lots")
    body = api.get("billing/credit-lots").json()
    assert body["object"] == "credit_lots"
    assert body["paid_remaining_micros"] == 4_000_000
    [grant] = [g for g in body["grants"] if g["reference"] == "beta"]
    assert grant["remaining_micros"] == 2_000_000 and grant["original_display"] == "$3.00"
    assert grant["expires_at"] == expires.isoformat() and grant["description"] == "Beta"

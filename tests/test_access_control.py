"""Access-control proof, generated from the URL configuration.

Every route under /g/<group_id>/ is tried with every method it accepts, as five people:
anonymous, a signed-in non-member, a Member, an Admin, and the Admin of another group.
Expected: anonymous → login redirect; non-member and other group's Admin → 404; a Member →
success on what `group_required(read=…, write=…)` lets Members do, else 403; an Admin → success.
Routes with object ids are also tried with an object of another group (always 404).

Adding a route: add its URL name to ROUTES with the methods it accepts, what a plain Member may
do there, and how to build the URL kwargs that name objects. The table is the specification; the
views' decorators must make it true. A group-scoped route missing from ROUTES fails `test_every_group_route_is_declared`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from keys.services import api_key_create
from management.services import management_key_create
from members.models import Membership
from members.services import invitation_create
from tests.factories import GroupFactory, MembershipFactory
from tests.gateway.conftest import api_key, funded_group, gateway  # noqa: F401 (fixtures)

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _stripe(localstripe):  # type: ignore[no-untyped-def]
    """Billing views talk to Stripe: give them localstripe."""
    return localstripe


def _billing_objects(group) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    from billing.models import Payment, PaymentMethod
    from groups.models import new_public_id

    card = PaymentMethod.objects.create(
        group=group,
        stripe_id=f"pm_{new_public_id()}",
        brand="visa",
        last4="4242",
        exp_month=1,
        exp_year=2030,
    )
    payment = Payment.objects.create(
        public_id=new_public_id(),
        group=group,
        kind="purchase",
        amount_micros=5_000_000,
        status="requires_action",
    )
    paid = Payment.objects.create(
        public_id=new_public_id(),
        group=group,
        kind="purchase",
        amount_micros=10_000_000,
        status="succeeded",
        stripe_payment_intent_id=f"pi_{new_public_id()}",
    )
    from django.utils import timezone

    from billing.models import Invoice

    now = timezone.now()
    invoice = Invoice.objects.create(
        public_id=new_public_id(), number=f"INV-TEST-{new_public_id()}", kind="invoice",
        status="paid", group=group, period_key="2025-10", period_start=now, period_end=now,
        issued_at=now, bill_to_name=group.name, issuer_name="Operator",
    )  # fmt: skip
    from billing.models import Budget

    budget = Budget.objects.create(group=group, amount_micros=5_000_000, window="monthly")
    return {"card": card, "payment": payment, "paid": paid, "invoice": invoice, "budget": budget}


def _alerts_objects(group) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    from alerts.services import AlertInput, alert_create, webhook_endpoint_create

    endpoint = webhook_endpoint_create(
        group=group, name="Hook", url="http://localhost:9/h"
    ).endpoint
    alert = alert_create(group=group, data=AlertInput(
        name="Low", kind="balance", balance_threshold_micros=1_000_000, webhooks=[endpoint],
    ))  # fmt: skip
    return {"alert": alert, "endpoint": endpoint}


Objects = dict[str, Any]


@dataclass(frozen=True)
class Route:
    methods: tuple[str, ...]
    member_can: tuple[str, ...] = ()  # what a plain Member may do here; Admins may do all
    objects: Callable[[Objects], dict[str, str]] | None = None  # URL kwargs naming objects

    def kwargs(self, world: Objects) -> dict[str, str]:
        return self.objects(world) if self.objects else {}


def _key(o: Objects) -> dict[str, str]:
    return {"key_id": o["key"].public_id}


def _management_key(o: Objects) -> dict[str, str]:
    return {"key_id": o["management_key"].public_id}


def _member(o: Objects) -> dict[str, str]:
    return {"member_id": o["membership"].public_id}


def _invitation(o: Objects) -> dict[str, str]:
    return {"invitation_id": o["invitation"].public_id}


def _card(o: Objects) -> dict[str, str]:
    return {"card_id": o["card"].stripe_id}


def _payment(o: Objects) -> dict[str, str]:
    return {"payment_id": o["payment"].public_id}


def _paid(o: Objects) -> dict[str, str]:
    return {"payment_id": o["paid"].public_id}


def _invoice(o: Objects) -> dict[str, str]:
    return {"invoice_id": o["invoice"].public_id}


def _alert(o: Objects) -> dict[str, str]:
    return {"alert_id": o["alert"].public_id}


def _endpoint(o: Objects) -> dict[str, str]:
    return {"endpoint_id": o["endpoint"].public_id}


def _budget(o: Objects) -> dict[str, str]:
    return {"budget_id": o["budget"].pk}


ROUTES: dict[str, Route] = {
    "groups:home": Route(("GET",), member_can=("GET",)),
    "groups:details": Route(("GET", "POST"), member_can=("GET",)),
    "groups:security": Route(("POST",)),
    "members:list": Route(("GET",), member_can=("GET",)),
    "members:invite": Route(("POST",)),
    "members:leave": Route(("POST",), member_can=("POST",)),
    "members:invitation_resend": Route(("POST",), objects=_invitation),
    "members:invitation_revoke": Route(("POST",), objects=_invitation),
    "members:change_role": Route(("POST",), objects=_member),
    "members:remove": Route(("POST",), objects=_member),
    "keys:list": Route(("GET",), member_can=("GET",)),
    "keys:create": Route(("POST",)),
    "keys:edit": Route(("GET", "POST"), objects=_key),
    "keys:revoke": Route(("GET", "POST"), objects=_key),
    "keys:regenerate": Route(("GET", "POST"), objects=_key),
    "keys:restrictions": Route(("GET", "POST"), objects=_key),
    "management:create": Route(("POST",)),
    "management:revoke": Route(("GET", "POST"), objects=_management_key),
    "billing:overview": Route(("GET",), member_can=("GET",)),
    "billing:card_new": Route(("GET",)),
    "billing:card_saved": Route(("POST",)),
    "billing:card_default": Route(("POST",), objects=_card),
    "billing:card_remove": Route(("POST",), objects=_card),
    "billing:buy": Route(("POST",)),
    "billing:payment": Route(("GET",), objects=_payment),
    "billing:complete": Route(("GET", "POST"), objects=_payment),
    "billing:auto_top_up": Route(("POST",)),
    "billing:budget_add": Route(("POST",)),
    "billing:budget_edit": Route(("POST",), objects=_budget),
    "billing:budget_delete": Route(("POST",), objects=_budget),
    "billing:invoices": Route(("GET",), member_can=("GET",)),
    "billing:invoice": Route(("GET",), member_can=("GET",), objects=_invoice),
    "billing:invoice_pdf": Route(("GET",), member_can=("GET",), objects=_invoice),
    "billing:receipt": Route(("GET",), member_can=("GET",), objects=_paid),
    "billing:receipt_pdf": Route(("GET",), member_can=("GET",), objects=_paid),
    "usage:dashboard": Route(("GET",), member_can=("GET",)),
    "usage:export": Route(("GET",), member_can=("GET",)),
    "usage:export_raw": Route(("GET",), member_can=("GET",)),
    "usage:key": Route(("GET",), member_can=("GET",), objects=_key),
    "audit:log": Route(("GET",)),
    "alerts:page": Route(("GET",), member_can=("GET",)),
    "alerts:create": Route(("POST",)),
    "alerts:edit": Route(("GET", "POST"), objects=_alert),
    "alerts:delete": Route(("POST",), objects=_alert),
    "alerts:webhook_create": Route(("POST",)),
    "alerts:webhook_edit": Route(("GET", "POST"), objects=_endpoint),
    "alerts:webhook_delete": Route(("POST",), objects=_endpoint),
    "alerts:webhook_test": Route(("POST",), objects=_endpoint),
}


def group_routes() -> dict[str, Any]:
    """Map every URL name under g/<group_id>/ to its view."""
    found: dict[str, Any] = {}

    def walk(patterns: list, prefix: str, namespace: str | None) -> None:
        for p in patterns:
            route = prefix + str(p.pattern)
            if isinstance(p, URLResolver):
                ns = p.namespace or namespace
                walk(p.url_patterns, route, ns)
            elif isinstance(p, URLPattern) and route.startswith("g/<str:group_id>/") and p.name:
                found[f"{namespace}:{p.name}" if namespace else p.name] = p.callback

    walk(get_resolver().url_patterns, "", None)
    return found


def test_every_group_route_is_declared():
    routes = group_routes()
    undeclared = sorted(set(routes) - set(ROUTES))
    assert not undeclared, f"declare the expected access for: {undeclared}"
    stale = sorted(set(ROUTES) - set(routes))
    assert not stale, f"ROUTES names routes that no longer exist: {stale}"
    for name, view in routes.items():
        assert hasattr(view, "group_access"), f"{name} is not guarded by group_required"


def build_world() -> Objects:
    group = GroupFactory()
    admin = MembershipFactory(group=group, role="admin").user
    member = MembershipFactory(group=group, role="member").user
    target = MembershipFactory(group=group, role="member")  # someone to act on
    other = GroupFactory()
    other_admin = MembershipFactory(group=other, role="admin").user
    return {
        "group": group,
        "admin": admin,
        "member": member,
        "outsider": MembershipFactory(role="member").user,
        "other_admin": other_admin,
        "membership": target,
        "key": api_key_create(group=group, name="K").key,
        "management_key": management_key_create(
            group=group, name="M", role="read_only", actor=admin
        ).key,
        "invitation": invitation_create(
            group=group, email="i@example.com", role="member", actor=admin
        ).invitation,
        **_billing_objects(group),
        **_alerts_objects(group),
        "other": {
            "group": other,
            "membership": Membership.objects.get(user=other_admin),
            "key": api_key_create(group=other, name="Theirs").key,
            "management_key": management_key_create(
                group=other, name="Their M", role="admin", actor=other_admin
            ).key,
            "invitation": invitation_create(
                group=other, email="j@example.com", role="member", actor=other_admin
            ).invitation,
            **_billing_objects(other),
            **_alerts_objects(other),
        },
    }


CASES = [(name, method) for name, route in ROUTES.items() for method in route.methods]
PEOPLE = ["anonymous", "outsider", "other_admin", "member", "admin"]


@pytest.mark.parametrize("person", PEOPLE)
@pytest.mark.parametrize(("name", "method"), CASES)
def test_access(client, name, method, person):
    world = build_world()
    url = reverse(name, kwargs={"group_id": world["group"].public_id, **ROUTES[name].kwargs(world)})
    if person != "anonymous":
        client.force_login(world[person])
    response = client.get(url) if method == "GET" else client.post(url, {})
    status, location = response.status_code, response.get("Location", "")
    if person == "anonymous":
        assert status == 302 and location.startswith("/accounts/login/"), (status, location)
    elif person in ("outsider", "other_admin"):
        assert status == 404
    else:
        if person == "admin" or method in ROUTES[name].member_can:
            assert status in (200, 302, 422), status
            assert not location.startswith("/accounts/login/")
        else:
            assert status == 403, status


OBJECT_ROUTES = [(n, m) for n, m in CASES if ROUTES[n].objects is not None]


@pytest.mark.parametrize(("name", "method"), OBJECT_ROUTES)
def test_another_groups_objects_are_404(client, name, method):
    world = build_world()
    client.force_login(world["admin"])
    url = reverse(
        name, kwargs={"group_id": world["group"].public_id, **ROUTES[name].kwargs(world["other"])}
    )
    response = client.get(url) if method == "GET" else client.post(url, {"role": "admin"})
    assert response.status_code == 404


# --- the gateway's stored responses (API keys, not sessions) -----------------------------------
# Who may read or cancel a stored Agent API response: a key of the group that created it. No key
# → 401; a key of another group → 404 (as for an id that does not exist); the owner's key → the
# route's answer (a finished response cannot be cancelled: 400, after the access check).

GATEWAY_ROUTES = {
    ("GET", "/v1/responses/{id}"): 200,
    ("GET", "/v1/agent/{id}"): 200,
    ("POST", "/v1/responses/{id}/cancel"): 400,
    ("POST", "/v1/agent/{id}/cancel"): 400,
}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("method", "path"), list(GATEWAY_ROUTES))
def test_gateway_stored_responses_belong_to_their_group(gateway, api_key, method, path):  # type: ignore[no-untyped-def]  # noqa: F811
    import httpx

    from billing.services import ledger_post

    with httpx.Client(base_url=gateway.url, timeout=30) as c:
        created = c.post("/v1/responses", headers={"Authorization": f"Bearer {api_key}"},
                         json={"model": "perplexity/sonar", "input": "hi"})  # fmt: skip
        assert created.status_code == 200, created.text
        url = path.format(id=created.json()["id"])
        other = GroupFactory()
        ledger_post(group=other, amount_micros=1_000_000, kind="purchase", reference="pi_ac")
        theirs = api_key_create(group=other, name="Theirs").secret
        for key, expected in ((None, 401), (theirs, 404), (api_key, GATEWAY_ROUTES[method, path])):
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            assert c.request(method, url, headers=headers).status_code == expected, (key, url)

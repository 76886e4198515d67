"""Hypothesis-generated POSTs to every form view of the access-control table.

For each route that accepts POST (tests/test_access_control.py: ROUTES), an Admin of the group
sends generated form data: known field names of the portal's forms (also as the pages name them,
with their prefixes, e.g. `buy-amount`) and random ones, with text, numbers, huge and negative
amounts, malformed amounts (exponents, NaN, Infinity, sub-micro-dollar, thousands of digits),
empty and odd values. Never a 500; and a refusal (any 4xx)
leaves every table exactly as it was (compared row by row through a checksum of each table).
"""

from __future__ import annotations

import importlib
import json
import re

import pytest
from django import forms
from django.db import connection
from django.urls import reverse
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from billing import payments
from tests.conftest import RESULTS
from tests.test_access_control import ROUTES, build_world

pytestmark = [pytest.mark.slow, pytest.mark.django_db]

POST_ROUTES = sorted(name for name, route in ROUTES.items() if "POST" in route.methods)
# Rows that change on any request (the session of the signed-in Admin) are not "written".
IGNORED_TABLES = {"django_session"}
TRIED: dict[str, dict[str, int]] = {}


def form_field_names() -> list[str]:
    names: set[str] = set()
    for app in (
        "accounts",
        "groups",
        "members",
        "keys",
        "billing",
        "usage",
        "alerts",
        "management",
    ):
        try:
            module = importlib.import_module(f"{app}.forms")
        except ModuleNotFoundError:
            continue
        for obj in vars(module).values():
            if (
                isinstance(obj, type)
                and issubclass(obj, forms.BaseForm)
                and obj.__module__ == module.__name__
            ):
                names.update(obj.base_fields)
    return sorted(names)


FIELDS = form_field_names()
ODD = ["", " ", "on", "off", "true", "admin", "member", "owner", "0", "-1", "1e309", "NaN",
       "Infinity", "0.000001", "99999999999999999999", "-5.5", "x" * 300, "<script>", "' OR 1=1--",
       "US", "ZZ", "2030", "13", "pm_missing", "\u202e", "😀"]  # fmt: skip
# Amounts that Decimal() or float() would read but that are no price (security finding 13).
MONEY_ODD = ["1e30", "1E3", "1e-9", "-0", "-0.00", "0.0000001", "1e999999999", "1e-999999999",
             "9" * 5000, "9" * 40, "-Infinity", "inf", "sNaN", "\u0661\u0662", "1_000", "0x10",
             "$-0", "12.5.3", "--5", "1" + "0" * 30 + ".5"]  # fmt: skip
money_text = st.builds(
    lambda sign, whole, frac, exp: f"{sign}{whole}{frac}{exp}",
    st.sampled_from(["", "-", "+", "$", "-$"]),
    st.integers(min_value=0, max_value=10**40).map(str),
    st.one_of(st.just(""), st.integers(min_value=0, max_value=10**12).map(lambda n: f".{n}")),
    st.sampled_from(["", "", "e3", "e-9", "E30", "e999999"]),
)
values = st.one_of(
    st.sampled_from(ODD),
    st.sampled_from(MONEY_ODD),
    money_text,
    st.text(max_size=60),
    st.integers(min_value=-(10**15), max_value=10**15).map(str),
    st.decimals(allow_nan=False, allow_infinity=False, places=4).map(str),
    st.emails(),
)
PAGE_FIELDS: dict[str, list[str]] = {}
_INPUT = re.compile(r"<(?:input|select|textarea)\b[^>]*>")


def page_field_names(client, world) -> dict[str, list[str]]:  # type: ignore[no-untyped-def]
    """The names of the inputs on the group's pages, as posted (with the forms' prefixes):
    "all" of them, and "money", the amount fields (`inputmode="decimal"`)."""
    if not PAGE_FIELDS:
        names: set[str] = set()
        money: set[str] = set()
        for name, route in ROUTES.items():
            if "GET" in route.methods:
                kwargs = {"group_id": world["group"].public_id, **route.kwargs(world)}
                response = client.get(reverse(name, kwargs=kwargs))
                if not response.get("Content-Type", "").startswith("text/html"):
                    continue  # PDFs
                for tag in _INPUT.findall(response.content.decode()):
                    field = re.search(r'\bname="([^"]+)"', tag)
                    if field and field.group(1) != "csrfmiddlewaretoken":
                        names.add(field.group(1))
                        if 'inputmode="decimal"' in tag:
                            money.add(field.group(1))
        assert money, "no amount fields found on the group's pages"
        PAGE_FIELDS.update(all=sorted(names), money=sorted(money))
    return PAGE_FIELDS


def form_data(names: list[str], money: list[str]) -> st.SearchStrategy[dict[str, str]]:
    """Any fields with any values, or (as often) the amount fields with malformed amounts."""
    anything = st.dictionaries(
        st.one_of(st.sampled_from(names), st.text(min_size=1, max_size=12)), values, max_size=8
    )
    amounts = st.dictionaries(
        st.sampled_from(money), st.one_of(st.sampled_from(MONEY_ODD), money_text), min_size=1
    )
    return st.one_of(anything, amounts)


def snapshot() -> dict[str, str]:
    """A checksum of every table's rows: any insert, update or delete changes it."""
    tables = [t for t in connection.introspection.table_names() if t not in IGNORED_TABLES]
    sql = " UNION ALL ".join(
        f"SELECT '{t}', md5(coalesce(string_agg(r::text, ',' ORDER BY r::text), '')) FROM \"{t}\" r"
        for t in tables
    )
    with connection.cursor() as c:
        c.execute(sql)
        return dict(c.fetchall())


@pytest.fixture(scope="module", autouse=True)
def _report():  # type: ignore[no-untyped-def]
    yield
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "form-fuzz.json").write_text(json.dumps(TRIED, indent=1, sort_keys=True))


@pytest.mark.parametrize("name", POST_ROUTES)
def test_generated_posts_never_fail_and_refusals_write_nothing(name, client, localstripe):  # type: ignore[no-untyped-def]
    world = build_world()
    # The billing profile (and its Stripe customer) is created on the first visit of any billing
    # page, GET or POST: create it first, so that the check sees only what the POST wrote.
    payments.profile_for(group=world["group"])
    client.force_login(world["admin"])
    url = reverse(name, kwargs={"group_id": world["group"].public_id, **ROUTES[name].kwargs(world)})
    tried = TRIED.setdefault(name, {})

    pages = page_field_names(client, world)

    @given(data=form_data(sorted({*FIELDS, *pages["all"]}), pages["money"]))
    @hypothesis_settings(
        max_examples=25, deadline=None, derandomize=True, database=None,
        suppress_health_check=list(HealthCheck),
    )  # fmt: skip
    def post(data: dict[str, str]) -> None:
        before = snapshot()
        response = client.post(url, data)
        status = response.status_code
        tried[str(status)] = tried.get(str(status), 0) + 1
        assert status < 500, (name, data, status)
        if 400 <= status < 500:
            after = snapshot()
            changed = sorted(t for t in after if after[t] != before.get(t))
            assert not changed, f"{name} refused {data!r} with {status} but wrote to {changed}"

    post()

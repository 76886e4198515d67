"""Hypothesis-generated POSTs to every form view of the access-control table.

For each route that accepts POST (tests/test_access_control.py: ROUTES), an Admin of the group
sends generated form data: known field names of the portal's forms and random ones, with text,
numbers, huge and negative amounts, empty and odd values. Never a 500; and a refusal (any 4xx)
leaves every table exactly as it was (compared row by row through a checksum of each table).
"""

from __future__ import annotations

import importlib
import json

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
    for app in ("accounts", "groups", "members", "keys", "billing", "usage", "management"):
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
values = st.one_of(
    st.sampled_from(ODD),
    st.text(max_size=60),
    st.integers(min_value=-(10**15), max_value=10**15).map(str),
    st.decimals(allow_nan=False, allow_infinity=False, places=4).map(str),
    st.emails(),
)
form_data = st.dictionaries(
    st.one_of(st.sampled_from(FIELDS), st.text(min_size=1, max_size=12)), values, max_size=8
)


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

    @given(data=form_data)
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

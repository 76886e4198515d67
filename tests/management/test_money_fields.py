"""Malformed amounts in the Management API's money fields: a 4xx naming the field (`param`),
never a 500, nothing written. Plain HTTP, so the test holds for any implementation of the API.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from keys.models import APIKey

pytestmark = pytest.mark.django_db

MALFORMED_JSON = [
    "1e30",
    "1e-9",
    "NaN",
    "Infinity",
    "-Infinity",
    "-0.0",
    "0.0000001",
    "10.5",
    "1" + "0" * 30,
    "9" * 5000,
    '"10"',
    '"1e30"',
    "true",
    "[5]",
    "{}",
    "-0",
    "0",
    "-5",
]


@pytest.mark.parametrize("raw", MALFORMED_JSON)
def test_management_api_refuses_malformed_money_naming_the_field(client, mgmt, group, raw):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {mgmt['admin'].secret}"}
    body = '{"name": "Server", "monthly_limit_micros": ' + raw + "}"
    response = client.post("/v1/management/keys", body, content_type="application/json", **headers)
    assert response.status_code in (400, 422), (raw, response.status_code)
    assert response.json()["error"]["param"] == "monthly_limit_micros", response.content
    assert not APIKey.objects.exists()
    key = client.post(
        "/v1/management/keys", json.dumps({"name": "Kept"}), content_type="application/json",
        **headers,
    ).json()  # fmt: skip
    patched = client.generic(
        "PATCH", f"/v1/management/keys/{key['id']}", '{"monthly_limit_micros": ' + raw + "}",
        content_type="application/json", **headers,
    )  # fmt: skip
    assert patched.status_code in (400, 422), (raw, patched.status_code)
    assert patched.json()["error"]["param"] == "monthly_limit_micros"
    assert APIKey.objects.get().monthly_limit_micros is None


# Every money field of the Management API that takes a value (all of them `*_micros` integers).
MONEY_FIELDS = [
    ("POST", "keys", "monthly_limit_micros"),
    ("PATCH", "keys/{key}", "monthly_limit_micros"),
]
json_numbers = st.one_of(
    st.integers(min_value=-(10**40), max_value=10**40).map(str),
    st.integers(min_value=31, max_value=6000).map(lambda n: "9" * n),
    st.floats(allow_nan=True, allow_infinity=True).map(
        lambda f: json.dumps(f)  # NaN, Infinity and -Infinity as Python's json writes them
    ),
    st.sampled_from(["1e30", "1E-9", "-0", "-0.0", "1e999999", "0.0000001", "5e0"]),
    st.text(max_size=20).map(json.dumps),
)


@pytest.mark.slow
@pytest.mark.parametrize(("method", "path", "field"), MONEY_FIELDS)
def test_generated_money_values_are_never_a_500(client, mgmt, method, path, field):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {mgmt['admin'].secret}"}
    key = client.post(
        "/v1/management/keys", json.dumps({"name": "Kept"}), content_type="application/json",
        **headers,
    ).json()  # fmt: skip
    url = "/v1/management/" + path.format(key=key["id"])

    @given(raw=json_numbers)
    @hypothesis_settings(
        max_examples=60, deadline=None, derandomize=True, database=None,
        suppress_health_check=list(HealthCheck),
    )  # fmt: skip
    def send(raw: str) -> None:
        body = '{"name": "Fuzzed", "' + field + '": ' + raw + "}"
        before = APIKey.objects.count()
        response = client.generic(method, url, body, content_type="application/json", **headers)
        assert response.status_code < 500, (raw, response.status_code)
        if response.status_code >= 400:
            assert response.json()["error"]["param"] == field, (raw, response.content)
            assert APIKey.objects.count() == before
        else:
            value = response.json()[field]
            assert isinstance(value, int) and 1 <= value <= 10**12

    send()

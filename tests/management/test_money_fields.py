"""Malformed amounts in the Management API's money fields: a 4xx naming the field (`param`),
never a 500, nothing written. Plain HTTP, so the test holds for any implementation of the API.
"""

from __future__ import annotations

import json

import pytest

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

"""Key restrictions and rotation grace in the Management API (issue 19, parts 3 and 4)."""

from __future__ import annotations

import pytest

from keys.models import APIKey
from tests.management.conftest import Api

pytestmark = pytest.mark.django_db


def test_management_api_restrictions_and_grace(api: Api, group):  # type: ignore[no-untyped-def]
    created = api(
        "POST", "keys",
        {"name": "CI", "restrictions": {"models": ["sonar"], "ip_ranges": ["10.0.0.0/8"]}},
    )  # fmt: skip
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["restrictions"] == {
        "models": ["sonar"], "apis": [], "tools": [], "ip_ranges": ["10.0.0.0/8"],
    }  # fmt: skip
    assert body["previous_secret"] is None
    key_id = body["id"]

    bad = api("PATCH", f"keys/{key_id}", {"restrictions": {"ip_ranges": ["nope"]}})
    assert bad.status_code == 422 and bad.json()["error"]["param"] == "restrictions.ip_ranges"
    bad = api("PATCH", f"keys/{key_id}", {"restrictions": {"apis": ["images"]}})
    assert bad.status_code == 422
    # All or nothing: a bad name leaves the restrictions as they were.
    bad = api("PATCH", f"keys/{key_id}", {"name": " ", "restrictions": {"apis": ["chat"]}})
    assert bad.status_code == 422 and APIKey.objects.get().allowed_apis == []

    updated = api("PATCH", f"keys/{key_id}", {"restrictions": {"apis": ["chat", "agent"]}})
    assert updated.json()["restrictions"]["apis"] == ["chat", "agent"]
    assert updated.json()["restrictions"]["models"] == []  # the lists are replaced as a whole
    cleared = api("PATCH", f"keys/{key_id}", {"restrictions": None}).json()
    assert cleared["restrictions"]["apis"] == []

    too_long = api("POST", f"keys/{key_id}/regenerate", {"grace_seconds": 86401})
    assert too_long.status_code == 422
    rotated = api("POST", f"keys/{key_id}/regenerate", {"grace_seconds": 600}).json()
    previous = rotated["previous_secret"]
    assert previous["last_four"] == body["last_four"] and previous["masked"].endswith(
        body["last_four"]
    )
    assert api.get(f"keys/{key_id}").json()["previous_secret"] == previous
    at_once = api("POST", f"keys/{key_id}/regenerate").json()  # no body: no grace
    assert at_once["previous_secret"] is None
    actions = list(group.audit_events.order_by("id").values_list("action", flat=True))
    assert actions.count("key.restrict") == 2 and actions.count("key.regenerate") == 2

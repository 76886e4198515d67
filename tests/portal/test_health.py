from __future__ import annotations

import pytest


@pytest.mark.django_db
def test_healthz_reports_database_and_redis_up(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"]["ok"] is True
    assert body["redis"]["ok"] is True


@pytest.mark.django_db
def test_healthz_is_503_when_redis_is_unreachable(client, settings):
    from tests.conftest import free_port

    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",
            "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
        }
    }
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["redis"]["ok"] is False
    assert body["database"]["ok"] is True


@pytest.mark.django_db
def test_every_response_carries_a_request_id(client):
    response = client.get("/healthz", HTTP_X_REQUEST_ID="abc12345-client-id")
    assert response["X-Request-Id"] == "abc12345-client-id"
    generated = client.get("/healthz")["X-Request-Id"]
    assert len(generated) == 32 and generated != "abc12345-client-id"


@pytest.mark.django_db
def test_request_log_line_has_id_and_timing(client, caplog):
    with caplog.at_level("INFO", logger="portal.request"):
        response = client.get("/healthz")
    records = [r for r in caplog.records if r.name == "portal.request"]
    assert len(records) == 1
    record = records[0]
    assert record.request_id == response["X-Request-Id"]
    assert record.status == 200 and record.path == "/healthz"
    assert isinstance(record.duration_ms, float)


def test_json_log_format_is_one_object_per_line():
    import json
    import logging

    from portal.logging import JsonFormatter

    record = logging.makeLogRecord(
        {"msg": "GET /x 200", "levelname": "INFO", "name": "portal.request", "request_id": "r1"}
    )
    line = JsonFormatter().format(record)
    assert "\n" not in line
    data = json.loads(line)
    assert data["msg"] == "GET /x 200" and data["request_id"] == "r1"

"""Prometheus metrics at /metrics: what the gateway did, readable only by the operator."""

from __future__ import annotations

import re

import httpx
import pytest

pytestmark = pytest.mark.django_db(transaction=True)


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus' text format (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        m = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line)
        if m and m.group(1) == name:
            have = ",".join(sorted((m.group(2) or "").split(","))) if m.group(2) else ""
            if have == want:
                return float(m.group(3))
    return 0.0


def scrape(gateway, **kw) -> httpx.Response:  # type: ignore[no-untyped-def]
    with httpx.Client(base_url=gateway.url, timeout=10) as c:
        return c.get("/metrics", **kw)


def test_requests_latency_and_metering_are_counted_by_model_and_status(
    gateway, upstream, upstream_model, api_key
):  # type: ignore[no-untyped-def]
    before = scrape(gateway).text
    ok = sample(before, "portal_gateway_requests_total", model="fake-pro", status="200")
    bad = sample(before, "portal_gateway_requests_total", model="", status="401")
    for _ in range(3):
        assert gateway.chat(api_key, model="fake-pro").status_code == 200
    assert gateway.chat("pplx-nope", model="fake-pro").status_code == 401

    response = scrape(gateway)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert sample(text, "portal_gateway_requests_total", model="fake-pro", status="200") == ok + 3
    assert sample(text, "portal_gateway_requests_total", model="", status="401") == bad + 1
    assert (
        sample(
            text, "portal_gateway_request_duration_seconds_count", model="fake-pro", status="200"
        )
        >= 3
    )
    assert sample(text, "portal_gateway_upstream_duration_seconds_count", model="fake-pro") >= 3
    assert sample(text, "portal_gateway_metering_lag_seconds_count") >= 3
    assert sample(text, "portal_gateway_meter_batch_size_count") >= 1


def test_metrics_need_the_token_when_one_is_set(gateway, settings):  # type: ignore[no-untyped-def]
    # Even from loopback (a reverse proxy on the same host): with a token, only the token counts.
    settings.METRICS_TOKEN = "s3cret-scraper"
    missing = scrape(gateway)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert "portal_gateway" not in missing.text
    assert scrape(gateway, headers={"Authorization": "Bearer wrong"}).status_code == 401
    good = scrape(gateway, headers={"Authorization": "Bearer s3cret-scraper"})
    assert good.status_code == 200
    assert "portal_gateway_requests_total" in good.text


def test_metrics_are_hidden_from_remote_clients_without_a_token(gateway):  # type: ignore[no-untyped-def]
    # Behind a reverse proxy, uvicorn sees the public client's address (X-Forwarded-For).
    from gateway.metrics import allowed

    assert allowed({"client": ("127.0.0.1", 5000), "headers": []})
    assert not allowed({"client": ("203.0.113.9", 5000), "headers": []})
    assert not allowed({"client": None, "headers": []})
    assert scrape(gateway).status_code == 200  # this test client is on loopback

"""Calls through the gateway show up on Usage Metrics: chart, totals and the per-key table."""

from __future__ import annotations

import openai
import pytest
from playwright.sync_api import expect

from billing.services import ledger_post
from keys.services import api_key_create
from tests.factories import GroupFactory, MembershipFactory

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_gateway_calls_appear_on_the_usage_page(gateway, new_page, output_dir, password):
    group = GroupFactory(name="Metrics Co")
    admin = MembershipFactory(group=group, role="admin").user
    ledger_post(group=group, amount_micros=10_000_000, kind="purchase", reference="pi_metrics")
    server = api_key_create(group=group, name="Server")
    laptop = api_key_create(group=group, name="Laptop")

    page = new_page()
    page.goto(f"{gateway.url}/accounts/login/")
    page.get_by_label("Email").fill(admin.email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign In").click()
    page.goto(f"{gateway.url}/g/{group.public_id}/usage/?range=24h")
    assert page.get_by_test_id("usage-empty").is_visible()

    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=server.secret, max_retries=0)
    for _ in range(3):
        client.chat.completions.create(model="sonar", messages=[{"role": "user", "content": "hi"}])
    page.reload()
    assert page.get_by_test_id("total-requests").inner_text() == "3"
    assert page.locator("#usage-chart").is_visible()
    # Polled with evaluate(): wait_for_function() evals its predicate, which the page's CSP refuses.
    drawn = "!!(window.Chart && Chart.getChart(document.getElementById('usage-chart')))"
    for _ in range(300):
        if page.evaluate(drawn):
            break
        page.wait_for_timeout(50)
    assert page.evaluate(drawn)
    table = page.get_by_test_id("by-key")
    assert "Server" in table.inner_text() and server.key.masked in table.inner_text()
    assert "Laptop" not in table.inner_text()

    other = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=laptop.secret, max_retries=0)
    other.chat.completions.create(
        model="sonar-pro", messages=[{"role": "user", "content": "hello"}]
    )
    page.get_by_label("Chart").select_option("cost_micros")  # htmx swaps the body in place
    expect(page.get_by_test_id("total-requests")).to_have_text("4")
    assert "metric=cost_micros" in page.url
    table = page.get_by_test_id("by-key")
    assert "Laptop" in table.inner_text() and laptop.key.masked in table.inner_text()
    assert "sonar-pro" in page.get_by_test_id("by-model").inner_text()
    page.screenshot(path=output_dir / "usage.png", full_page=True)
    # The CSV export streams under ASGI too (an async iterator, not a buffered list).
    export = page.request.get(f"{gateway.url}/g/{group.public_id}/usage/events.csv?range=24h")
    assert export.status == 200 and export.headers["content-type"].startswith("text/csv")
    lines = export.text().strip().splitlines()
    assert len(lines) == 5 and lines[0].startswith("request_id,time,key")

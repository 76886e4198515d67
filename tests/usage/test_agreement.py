"""Billing everywhere: one month of chat and Agent API usage over two keys, partly rolled up.

The Usage Metrics page (by API, by tool, by key, by model, filtered by tool), both CSV exports,
the invoice for the month (lines per model and key, per tool and key) and the Management API's
usage endpoints (grouped by API, tool, key and model) all agree with the raw usage events to the
micro-dollar.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from datetime import timedelta
from decimal import Decimal

import pytest

from billing.invoicing.generation import invoice_generate
from billing.invoicing.periods import period_from_key
from keys.services import api_key_create
from management.services import management_key_create
from tests.billing.invoice_world import OCT, agent_usage, credit, usage
from tests.management.conftest import Api
from usage.catalogue import catalogue_sync
from usage.models import AIModel, RollupState, UsageEvent
from usage.rollups import rollup_range

pytestmark = pytest.mark.django_db

RANGE = {"start": "2025-10-01", "end": "2025-10-31"}  # October 2025, UTC


def micros(usd: str) -> int:
    return int(Decimal(usd) * 1_000_000)


def csv_rows(client, url: str, **query: str) -> list[dict[str, str]]:  # type: ignore[no-untyped-def]
    response = client.get(url, {**RANGE, **query})
    assert response.status_code == 200
    body = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(body)))


@pytest.fixture
def month(group, user):  # type: ignore[no-untyped-def]
    """42 requests in October: chat (sonar) and Agent API (perplexity/sonar, some calling
    web_search and fetch_url, some with cached input) over two keys; the first 20 days rolled
    up, the rest read from the raw events."""
    catalogue_sync()
    sonar = AIModel.objects.get(name="sonar")
    agent = AIModel.objects.get(name="perplexity/sonar")
    k1 = api_key_create(group=group, name="Server").key
    k2 = api_key_create(group=group, name="Laptop").key
    credit(group, 50_000_000, OCT)
    for i in range(42):
        key = k1 if i % 3 else k2
        at = OCT + timedelta(hours=17 * i + 1, minutes=i)
        if i % 2:
            event = usage(group, key, sonar, at, cost=1_234 + 97 * i, prompt=i + 3,
                          completion=2 * i)  # fmt: skip
        else:
            tools = {}
            if i % 4 == 0:
                tools["web_search"] = 1 + i % 3
            if i % 6 == 0:
                tools["fetch_url"] = 1 + i % 5
            event = agent_usage(group, key, agent, at, prompt=1_000 + 37 * i,
                                completion=211 + i, cached=(i * 13) % 400, tools=tools)  # fmt: skip
        # End users and tags (issue 19, part 7): some requests have neither, some several tags.
        tags = {"team": ("search", "ads", "infra")[i % 3]} if i % 4 else {}
        if i % 7 == 0:
            tags["env"] = "prod"
        UsageEvent.objects.filter(pk=event.pk).update(
            end_user=f"user-{i % 5}" if i % 6 else None, tags=tags
        )
    rolled = OCT + timedelta(days=20)
    rollup_range(OCT, rolled)
    RollupState.objects.update_or_create(pk=1, defaults={"rolled_through": rolled})
    mgmt = management_key_create(group=group, name="Ops", role="admin", actor=user)
    return {"group": group, "k1": k1, "k2": k2, "sonar": sonar, "agent": agent, "mgmt": mgmt}


def raw_sums(group):  # type: ignore[no-untyped-def]
    """What the raw events add up to, in Python."""
    events = list(UsageEvent.objects.filter(group=group))
    by_api: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])  # requests, cache reads, cost
    by_key: dict[int, int] = defaultdict(int)
    by_model_key: dict[tuple[str, int], int] = defaultdict(int)  # tokens' cost, tools' excluded
    by_tool: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # invocations, fees
    by_tool_key: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0])
    for e in events:
        by_api[e.api][0] += 1
        by_api[e.api][1] += e.cache_read_tokens
        by_api[e.api][2] += e.cost_micros
        by_key[e.api_key_id] += e.cost_micros
        by_model_key[(e.model.name, e.api_key_id)] += e.cost_micros - e.tools_cost_micros
        assert e.tools_cost_micros == sum(c["cost_micros"] for c in e.tool_calls.values())
        for tool, c in e.tool_calls.items():
            for acc in (by_tool[tool], by_tool_key[(tool, e.api_key_id)]):
                acc[0] += c["invocations"]
                acc[1] += c["cost_micros"]
    return {
        "events": events,
        "total": sum(e.cost_micros for e in events),
        "by_api": dict(by_api),
        "by_key": dict(by_key),
        "by_model_key": dict(by_model_key),
        "by_tool": dict(by_tool),
        "by_tool_key": dict(by_tool_key),
    }


# Over 60 lines on purpose: one set of events read through all four surfaces side by side, so a
# disagreement shows next to the numbers it disagrees with.
def test_page_csv_invoice_and_management_api_agree_to_the_micro_dollar(month, admin_client):
    g, k1, k2 = month["group"], month["k1"], month["k2"]
    raw = raw_sums(g)
    # The fixture really mixes everything the test is about.
    assert set(raw["by_api"]) == {"chat", "agent"} and set(raw["by_tool"]) == {
        "web_search",
        "fetch_url",
    }
    assert raw["by_api"]["agent"][1] > 0 and raw["by_tool"]["web_search"][1] > 0
    total = raw["total"]
    tool_fees = sum(fee for _, fee in raw["by_tool"].values())
    # Chat 68,691 + agent tokens 20,626 (half-up per part) + web_search 21 × 2,500 + fetch_url
    # 18 × 500: worked out by hand from the catalogue's prices, independently of the code.
    assert (total, tool_fees) == (68_691 + 20_626 + 52_500 + 9_000, 61_500)

    # Usage Metrics
    page = admin_client.get(f"/g/{g.public_id}/usage/", RANGE)
    assert page.status_code == 200
    dash = page.context["usage"]
    assert dash.totals.cost_micros == total and dash.totals.requests == 42
    assert {b.obj: (b.totals.requests, b.totals.cache_read_tokens, b.totals.cost_micros)
            for b in dash.by_api} == {a: tuple(v) for a, v in raw["by_api"].items()}  # fmt: skip
    assert {t.tool: [t.invocations, t.cost_micros] for t in dash.by_tool} == raw["by_tool"]
    assert {b.obj.pk: b.totals.cost_micros for b in dash.by_key} == raw["by_key"]

    # The CSV exports
    view = csv_rows(admin_client, f"/g/{g.public_id}/usage/export.csv")
    assert sum(micros(r["cost_usd"]) for r in view) == total
    assert sum(micros(r["tool_fees_usd"]) for r in view) == tool_fees
    assert sum(int(r["requests"]) for r in view) == 42
    for api, (requests, cache_reads, cost) in raw["by_api"].items():
        rows = [r for r in view if r["api"] == api]
        assert sum(int(r["requests"]) for r in rows) == requests
        assert sum(int(r["cache_read_tokens"]) for r in rows) == cache_reads
        assert sum(micros(r["cost_usd"]) for r in rows) == cost
    per_tool: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for r in view:
        for part in filter(None, r["tool_calls"].split("; ")):
            tool, rest = part.split("=")
            invocations, fee = rest.split(":")
            per_tool[tool][0] += int(invocations)
            per_tool[tool][1] += micros(fee)
    assert dict(per_tool) == raw["by_tool"]
    events = csv_rows(admin_client, f"/g/{g.public_id}/usage/events.csv")
    assert len(events) == 42
    assert sum(micros(r["cost_usd"]) for r in events) == total
    assert sum(micros(r["tool_fees_usd"]) for r in events) == tool_fees
    assert sum(int(r["tool_invocations"]) for r in events) == sum(
        n for n, _ in raw["by_tool"].values()
    )

    # The invoice for October
    inv = invoice_generate(group=g, period=period_from_key("2025-10")).invoice
    assert inv is not None and inv.usage_micros == total
    lines = list(inv.lines.filter(section="usage"))
    assert {(ln.model_name, ln.api_key_id): ln.amount_micros for ln in lines if not ln.tool} == (
        raw["by_model_key"]
    )
    assert {(ln.tool, ln.api_key_id): [ln.invocations, ln.amount_micros]
            for ln in lines if ln.tool} == raw["by_tool_key"]  # fmt: skip
    assert {f"web_search ({k1.last_four})", f"web_search ({k2.last_four})"} <= {
        ln.label for ln in lines
    }

    # The Management API
    api = Api(admin_client, month["mgmt"].secret)
    assert api.get("usage", **RANGE).json()["totals"]["cost_micros"] == total
    by_api = api.get("usage/grouped", by="api", **RANGE).json()["data"]
    assert {r["api"]: (r["totals"]["requests"], r["totals"]["cache_read_tokens"],
                       r["totals"]["cost_micros"]) for r in by_api} == {
        a: tuple(v) for a, v in raw["by_api"].items()
    }  # fmt: skip
    by_tool = api.get("usage/grouped", by="tool", **RANGE).json()["data"]
    assert {r["tool"]["name"]: [r["tool"]["invocations"], r["tool"]["cost_micros"]]
            for r in by_tool} == raw["by_tool"]  # fmt: skip
    by_key = api.get("usage/grouped", by="key", **RANGE).json()["data"]
    assert {r["key"]["id"]: r["totals"]["cost_micros"] for r in by_key} == {
        k1.public_id: raw["by_key"][k1.pk],
        k2.public_id: raw["by_key"][k2.pk],
    }
    by_day = api.get("usage/grouped", by="day", **RANGE).json()["data"]
    assert sum(r["totals"]["cost_micros"] for r in by_day) == total
    api_lines = api.get(f"invoices/{inv.public_id}").json()["lines"]
    keys = {k1.last_four: k1.pk, k2.last_four: k2.pk}
    assert {(r["tool"], keys[r["key_last_four"]]): [r["invocations"], r["amount_micros"]]
            for r in api_lines if r["tool"]} == raw["by_tool_key"]  # fmt: skip


def test_a_tool_filter_shows_the_requests_that_called_it_everywhere(month, admin_client):
    g = month["group"]
    called = [e for e in UsageEvent.objects.filter(group=g) if "web_search" in e.tool_calls]
    cost = sum(e.cost_micros for e in called)
    searches = sum(e.tool_calls["web_search"]["invocations"] for e in called)
    fetches = sum(e.tool_calls.get("fetch_url", {}).get("invocations", 0) for e in called)
    assert 0 < len(called) < 21 and fetches > 0

    page = admin_client.get(f"/g/{g.public_id}/usage/", {**RANGE, "tool": "web_search"})
    assert page.status_code == 200
    dash = page.context["usage"]
    assert (dash.totals.requests, dash.totals.cost_micros) == (len(called), cost)
    assert sum(dash.series["cost_micros"]) == cost
    assert {t.tool: t.invocations for t in dash.by_tool} == {
        "web_search": searches,
        "fetch_url": fetches,
    }
    html = page.content.decode()
    assert '<option value="web_search" selected>' in html
    # Each tool of the breakdown links to the view filtered by it (no JavaScript needed).
    assert "tool=fetch_url" in html

    rows = csv_rows(admin_client, f"/g/{g.public_id}/usage/events.csv", tool="web_search")
    assert len(rows) == len(called) and all("web_search=" in r["tool_calls"] for r in rows)
    view = csv_rows(admin_client, f"/g/{g.public_id}/usage/export.csv", tool="web_search")
    assert sum(micros(r["cost_usd"]) for r in view) == cost

    api = Api(admin_client, month["mgmt"].secret)
    body = api.get("usage", tool="web_search", **RANGE).json()
    assert (body["totals"]["requests"], body["totals"]["cost_micros"]) == (len(called), cost)
    assert body["period"]["tool"] == "web_search"
    agent_only = api.get("usage/grouped", by="api", tool="web_search", **RANGE).json()["data"]
    assert [(r["api"], r["totals"]["cost_micros"]) for r in agent_only] == [("agent", cost)]


def test_unknown_tools_and_apis_are_refused_clearly(month, admin_client):
    g = month["group"]
    page = admin_client.get(f"/g/{g.public_id}/usage/", {**RANGE, "tool": "image_search"})
    assert page.status_code == 400
    assert "There is no tool “image_search”; showing all tools." in page.content.decode()
    assert page.context["usage"].totals.requests == 42  # unfiltered, not empty
    api = Api(admin_client, month["mgmt"].secret)
    for query in ({"tool": "image_search"}, {"tool": ""}, {"api": "images"}):
        response = api.get("usage/grouped", by="tool", **query)
        assert response.status_code == 422, query
        assert response.json()["error"]["param"] == next(iter(query)), query
    assert api.get("usage/grouped", by="tools").status_code == 422


def test_end_user_and_tag_breakdowns_and_filters_agree_to_the_micro_dollar(month, admin_client):
    """Page, CSV and Management API by end user and by tag (key) add up to the unfiltered totals,
    and each filter's numbers are the raw events' of that end user or tag."""
    g = month["group"]
    events = list(UsageEvent.objects.filter(group=g))
    total = sum(e.cost_micros for e in events)
    by_user: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    by_team: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for e in events:
        for acc in (by_user[e.end_user or "(none)"],
                    by_team[f"team={e.tags['team']}" if "team" in e.tags else "(none)"]):  # fmt: skip
            acc[0] += 1
            acc[1] += e.cost_micros
    assert len(by_user) == 6 and len(by_team) == 4 and "(none)" in by_user

    page = admin_client.get(f"/g/{g.public_id}/usage/", {**RANGE, "tag_key": "team"})
    assert page.status_code == 200
    dash = page.context["usage"]
    assert {b.label: [b.totals.requests, b.totals.cost_micros] for b in dash.by_end_user} == by_user
    assert {b.label: [b.totals.requests, b.totals.cost_micros] for b in dash.by_tag} == by_team
    assert sum(b.totals.cost_micros for b in dash.by_end_user) == total
    html = page.content.decode()
    assert "end_user=user-1" in html and "tag=team%3Dads" in html  # rows link to their filter

    api = Api(admin_client, month["mgmt"].secret)
    rows = api.get("usage/grouped", by="end_user", **RANGE).json()["data"]
    assert {r["end_user"]: [r["totals"]["requests"], r["totals"]["cost_micros"]]
            for r in rows} == by_user  # fmt: skip
    rows = api.get("usage/grouped", by="tag", tag_key="team", **RANGE).json()["data"]
    assert {r["tag"]: [r["totals"]["requests"], r["totals"]["cost_micros"]]
            for r in rows} == by_team  # fmt: skip
    pairs = api.get("usage/grouped", by="tag", **RANGE).json()["data"]
    prod = [e for e in events if e.tags.get("env") == "prod"]
    assert {r["tag"]: r["totals"]["cost_micros"] for r in pairs}["env=prod"] == sum(
        e.cost_micros for e in prod
    )

    # Filters: page, both CSVs and the Management API give the raw events' numbers.
    for query, chosen in (
        ({"end_user": "user-2"}, [e for e in events if e.end_user == "user-2"]),
        ({"tag": "team=ads"}, [e for e in events if e.tags.get("team") == "ads"]),
        ({"tag": "env=prod", "end_user": "user-0"},
         [e for e in prod if e.end_user == "user-0"]),
    ):  # fmt: skip
        cost = sum(e.cost_micros for e in chosen)
        assert chosen, query
        dash = admin_client.get(f"/g/{g.public_id}/usage/", {**RANGE, **query}).context["usage"]
        assert (dash.totals.requests, dash.totals.cost_micros) == (len(chosen), cost)
        assert sum(dash.series["cost_micros"]) == cost
        view = csv_rows(admin_client, f"/g/{g.public_id}/usage/export.csv", **query)
        assert sum(micros(r["cost_usd"]) for r in view) == cost
        assert {r["end_user"] for r in view} == {query.get("end_user", "")}
        assert {r["tag"] for r in view} == {query.get("tag", "")}
        raw = csv_rows(admin_client, f"/g/{g.public_id}/usage/events.csv", **query)
        assert sorted(r["request_id"] for r in raw) == sorted(e.request_id for e in chosen)
        body = api.get("usage", **query, **RANGE).json()
        assert (body["totals"]["requests"], body["totals"]["cost_micros"]) == (len(chosen), cost)
        assert body["period"]["end_user"] == query.get("end_user")
        by_key = api.get("usage/grouped", by="key", **query, **RANGE).json()["data"]
        assert sum(r["totals"]["cost_micros"] for r in by_key) == cost
    raw = csv_rows(admin_client, f"/g/{g.public_id}/usage/events.csv")
    assert {(r["end_user"], r["tags"]) for r in raw} >= {
        ("", ""),
        ("user-0", "env=prod,team=infra"),
    }

    bad = api.get("usage", tag="team", **RANGE)
    assert bad.status_code == 422 and bad.json()["error"]["param"] == "tag"
    page = admin_client.get(f"/g/{g.public_id}/usage/", {**RANGE, "tag": "no spaces=x"})
    assert page.status_code == 400 and page.context["usage"].totals.requests == 42

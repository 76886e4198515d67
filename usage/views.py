from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from django.http import HttpResponse
from django.shortcuts import render
from django.utils.text import slugify
from django.views.decorators.http import require_GET

from core.csv_export import csv_response
from core.replica import read_alias, reading_from_replica
from keys.models import APIKey
from keys.selectors import api_key_find_for_group, api_key_get_for_group, api_keys_for_group
from members.permissions import GroupRequest, member_required
from usage.attribution import (
    MAX_END_USER,
    MAX_TAG_KEY,
    OTHER,
    AttributionError,
    parse_tag_filter,
    valid_tag_part,
)
from usage.metrics import API_LABELS, APIS, COUNTS, SUMS
from usage.periods import DEFAULT_PRESET, PRESETS, PeriodError, resolve_period
from usage.selectors import (
    ai_model_named,
    ai_model_names,
    bucket_label,
    tool_names,
    tool_rows,
    usage_events_for,
    usage_for,
    usage_rows,
)

METRIC_CHOICES = {"requests": "Requests", "tokens": "Tokens", "cost_micros": "Spend"}


def _filters(request: GroupRequest, fixed_key: APIKey | None = None) -> dict[str, Any]:
    """Read the filters from the query string; a bad value becomes a message, not an error."""
    q = request.GET
    errors: list[str] = []
    tz = getattr(request.user, "time_zone", "UTC")
    try:
        period = resolve_period(
            preset=q.get("range") or None, start=q.get("start"), end=q.get("end"), tz=tz
        )
    except PeriodError as exc:
        errors.append(str(exc))
        period = resolve_period(preset=DEFAULT_PRESET, tz=tz)
    key = fixed_key
    if key is None and q.get("key"):
        key = api_key_find_for_group(group=request.group, public_id=q["key"])
        if key is None:
            errors.append("That API key is not in this group; showing all keys.")
    model = None
    if q.get("model"):
        model = ai_model_named(q["model"])
        if model is None:
            errors.append(f"There is no model “{q['model']}”; showing all models.")
    api = q.get("api") or None
    if api is not None and api not in APIS:
        errors.append(f"There is no API “{api}”; showing all APIs.")
        api = None
    tool = q.get("tool") or None
    if tool is not None and tool not in tool_names():
        errors.append(f"There is no tool “{tool[:50]}”; showing all tools.")
        tool = None
    end_user = q.get("end_user") or None
    if end_user is not None and (len(end_user) > MAX_END_USER or not end_user.isprintable()):
        errors.append("That is not an end user (“user”); showing all end users.")
        end_user = None
    tag = None
    if q.get("tag"):
        try:
            tag = parse_tag_filter(q["tag"])
        except AttributionError as exc:
            errors.append(f"{exc.message} Showing all tags.")
    tag_key = q.get("tag_key") or None
    if tag_key is not None and not valid_tag_part(tag_key, MAX_TAG_KEY):
        errors.append("That is not a tag key; listing every tag.")
        tag_key = None
    metric = q.get("metric") if q.get("metric") in METRIC_CHOICES else "requests"
    return {
        "period": period, "key": key, "model": model, "api": api, "tool": tool,
        "end_user": end_user, "tag": tag, "tag_key": tag_key,
        "tag_text": f"{tag[0]}={tag[1]}" if tag else "", "metric": metric, "errors": errors,
    }  # fmt: skip


def _usage_context(request: GroupRequest, fixed_key: APIKey | None = None) -> dict[str, Any]:
    f = _filters(request, fixed_key)
    usage = usage_for(
        group=request.group,
        period=f["period"],
        key_id=f["key"].pk if f["key"] else None,
        model_id=f["model"].pk if f["model"] else None,
        api=f["api"],
        tool=f["tool"],
        end_user=f["end_user"],
        tag=f["tag"],
        tag_key=f["tag_key"],
    )
    by_tool_links = []
    for t in usage.by_tool:  # each tool's row opens the view filtered by it (a plain link)
        query = request.GET.copy()
        query["tool"] = t.tool
        by_tool_links.append((t, query.urlencode()))
    by_end_user = [(b, _link(request, "end_user", b.obj)) for b in usage.by_end_user]
    by_tag = [(b, _link(request, "tag", b.obj)) for b in usage.by_tag]
    return {
        **f,
        "usage": usage,
        "by_tool": by_tool_links,
        "by_end_user": by_end_user,
        "by_tag": by_tag,
        "chart": {
            "labels": usage.labels,
            "series": {
                "requests": usage.series["requests"],
                "tokens": usage.series["tokens"],
                "cost": [c / 1e6 for c in usage.series["cost_micros"]],
            },
            "metric": {"cost_micros": "cost"}.get(f["metric"], f["metric"]),
        },
        "presets": PRESETS,
        "metrics": METRIC_CHOICES,
        "keys": api_keys_for_group(group=request.group),
        "models": sorted(ai_model_names().values()),
        "apis": API_LABELS,
        "tools": tool_names(),
        "fixed_key": fixed_key,
        "query": request.GET.urlencode(),
    }


def _link(request: GroupRequest, name: str, value: str | None) -> str | None:
    """The query string of the view filtered by this end user or tag (none for the buckets)."""
    if value is None or value == OTHER or value.endswith("=" + OTHER):
        return None
    query = request.GET.copy()
    query[name] = value
    return query.urlencode()


def _render(request: GroupRequest, context: dict[str, Any]) -> HttpResponse:
    template = "usage/dashboard.html#usage-body" if request.htmx else "usage/dashboard.html"
    return render(request, template, context, status=400 if context["errors"] else 200)


@member_required
@require_GET
@reading_from_replica()
def dashboard(request: GroupRequest) -> HttpResponse:
    """Usage Metrics: totals, trend, breakdowns by model and key; every member may see it."""
    return _render(request, _usage_context(request))


@member_required
@require_GET
@reading_from_replica()
def key_usage(request: GroupRequest, key_id: str) -> HttpResponse:
    """Spend per API key: one key's usage over time and by model."""
    key = api_key_get_for_group(group=request.group, public_id=key_id)
    return _render(request, _usage_context(request, fixed_key=key))


@member_required
@require_GET
@reading_from_replica()
def export(request: GroupRequest) -> HttpResponse:
    """CSV of the filtered view: one row per bucket × key × model × API; `cost_usd` includes
    the tool fees, `tool_calls` details them per tool (tool=invocations:fee_usd; …),
    `tool_invocations` and `tool_fees_usd` sum them."""
    f = _filters(request)
    period = f["period"]
    filters = {
        "group": request.group, "period": period, "key_id": f["key"].pk if f["key"] else None,
        "model_id": f["model"].pk if f["model"] else None, "api": f["api"], "tool": f["tool"],
        "end_user": f["end_user"], "tag": f["tag"],
    }  # fmt: skip
    data = usage_rows(**filters)
    tools: dict[tuple, list[str]] = {}
    tool_sums: dict[tuple, list[int]] = {}
    for *row, tool, invocations, cost in sorted(tool_rows(**filters), key=lambda r: r[4]):
        tools.setdefault(tuple(row), []).append(f"{tool}={int(invocations)}:{_usd(int(cost))}")
        sums = tool_sums.setdefault(tuple(row), [0, 0])
        sums[0] += int(invocations)
        sums[1] += int(cost)
    keys = {k.pk: k for k in api_keys_for_group(group=request.group)}
    models = ai_model_names()
    header = [
        "bucket", "api_key", "key", "model", "api", *SUMS[:-1], "cost_usd", "tool_calls",
        "tool_invocations", "tool_fees_usd", "end_user", "tag",
    ]  # fmt: skip

    def rows() -> Iterator[list[Any]]:
        yield header
        for bucket, key_id, model_id, api, *values in sorted(
            data, key=lambda r: (str(r[0]), r[1], r[2], r[3])
        ):
            m = dict(zip(SUMS, (int(v or 0) for v in values), strict=True))
            key = keys.get(key_id)
            invocations, fees = tool_sums.get((bucket, key_id, model_id, api), (0, 0))
            yield [
                bucket_label(bucket, period), key.name if key else key_id, key.masked if key else "",
                models.get(model_id, model_id), api, *(m[x] for x in SUMS[:-1]),
                _usd(m["cost_micros"]), "; ".join(tools.get((bucket, key_id, model_id, api), [])),
                invocations, _usd(fees), f["end_user"] or "", f["tag_text"],
            ]  # fmt: skip

    return csv_response(
        rows(), f"usage-{slugify(request.group.name)}-{period.local_start:%Y%m%d}.csv", request
    )


@member_required
@require_GET
@reading_from_replica()
def export_raw(request: GroupRequest) -> HttpResponse:
    """Every usage event of the range as CSV, streamed from a server-side cursor; the last
    columns are the tool calls (tool=invocations:fee_usd; …), their invocations and fees."""
    f = _filters(request)
    period = f["period"]
    events = usage_events_for(
        group=request.group, period=period, key=f["key"], model=f["model"], api=f["api"],
        tool=f["tool"], end_user=f["end_user"], tag=f["tag"],
    )  # fmt: skip
    events = events.using(read_alias())  # streamed after the view returns: pin the database now
    keys = {k.pk: k for k in api_keys_for_group(group=request.group)}
    models = ai_model_names()
    fields = [
        "request_id", "created_at", "api_key_id", "model_id", "api", *COUNTS,
        "search_context_size", "cost_micros", "streamed", "latency_ms", "end_user", "tags",
        "tools_cost_micros", "tool_calls",
    ]  # fmt: skip
    counts = slice(4, 6 + len(COUNTS))  # the API, the counts and the context size, as they are
    cost = counts.stop

    def rows() -> Iterator[list[Any]]:
        yield ["request_id", "time", "key", "api_key", "model", *fields[counts], "cost_usd",
               *fields[cost + 1 : -2], "tool_calls", "tool_invocations", "tool_fees_usd"]  # fmt: skip
        for e in events.order_by("created_at", "id").values_list(*fields).iterator(chunk_size=5000):
            key = keys.get(e[2])
            tool_calls = "; ".join(
                f"{tool}={c['invocations']}:{_usd(c['cost_micros'])}"
                for tool, c in sorted(e[-1].items())
            )
            invocations = sum(int(c["invocations"]) for c in e[-1].values())
            yield [
                e[0], e[1].astimezone(period.tz).isoformat(), key.name if key else e[2], key.masked if key else "",
                models.get(e[3], e[3]), *e[counts], _usd(e[cost]), *e[cost + 1 : -4], e[-4] or "",
                ",".join(f"{k}={v}" for k, v in sorted(e[-3].items())), tool_calls, invocations,
                _usd(e[-2]),
            ]  # fmt: skip

    return csv_response(
        rows(),
        f"usage-events-{slugify(request.group.name)}-{period.local_start:%Y%m%d}.csv",
        request,
    )


def _usd(micros: int) -> str:
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), 1_000_000)
    return f"{sign}{whole}.{frac:06d}"

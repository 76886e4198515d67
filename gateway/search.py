"""The Search API on the gateway's fast path: `POST /search` (the perplexityai SDK's
`client.search.create`) and `POST /v1/search`.

Same key check, admission (balance, key spend limit, rate limit), exactly-once metering and error
shapes as chat completions (gateway/app.py). A search is sold through the catalogue model of its
`search_type` (usage/search.py: `search-web`, `search-fast`, `search-people`, api "search") and
priced per request by that model's request fee: no tokens, whatever the number of queries or
results. The usage event has api "search", one request, no token counts.

The request is validated here before anything else happens (400 naming the field, nothing
written or charged); only the parameters listed in FIELDS are sent upstream (an unknown field is
dropped, so a parameter we do not know cannot change what the upstream charges us), with
`search_type` always set to the type we price. The upstream gets `POST {base_url}/search` with
that body (Perplexity's own API, or any service with its shape); the simulator (`simulator://`)
answers with deterministic results. The answer is passed on as the upstream sent it, plus
`usage.cost` in our prices (`{"request_cost", "total_cost", "currency"}`, dollars): Perplexity's
Search API reports no cost, and the SDK keeps unknown fields.
"""

from __future__ import annotations

import datetime
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from core.api_errors import GatewayError, invalid_request
from gateway import estimates, metrics, simulator
from gateway.http import Receive, Scope, Send, respond, upstream_error
from gateway.keycache import KeyInfo
from usage.metrics import PER_M, counts_of
from usage.pricing import Usage, compute_cost
from usage.search import DEFAULT_SEARCH_TYPE, SEARCH, SEARCH_TYPES, search_model

if TYPE_CHECKING:
    from gateway.app import GatewayApp
    from gateway.catalogue import ModelInfo

PATHS = frozenset({"/search", "/v1/search"})

# Limits (docs/research/search-embeddings-async.md §1.1; docs/gateway.md "Search API").
MAX_QUERIES = 5  # Perplexity publishes none; third-party references to its API say 5
MAX_RESULTS = 20  # web and fast: 1–20 (Perplexity's docs)
MAX_PEOPLE_RESULTS = 50  # people: "above 20 supported", no ceiling published; ours is 50
MAX_TOKENS = 1_000_000  # max_tokens and max_tokens_per_page: 1–1,000,000
MAX_FILTER_ITEMS = 20  # search_domain_filter, search_language_filter
MAX_DOMAIN_LENGTH = 253
MAX_QUERY_CHARS = 4_000  # per query; a search query, not a document
DATE_FORMAT = "%m/%d/%Y"  # the date filters, as Perplexity takes them
DATE_PATTERN = re.compile(r"[0-9]{2}/[0-9]{2}/[0-9]{4}")  # strptime alone also takes 3/1/2025

CHOICES = {
    "search_type": SEARCH_TYPES,
    "search_mode": ("web", "academic", "sec"),
    "search_recency_filter": ("hour", "day", "week", "month", "year"),
    "search_context_size": ("low", "medium", "high"),
}
DATE_FILTERS = (
    "search_after_date_filter",
    "search_before_date_filter",
    "last_updated_after_filter",
    "last_updated_before_filter",
)


@dataclass(frozen=True)
class SearchRequest:
    # What is sent upstream: the parameters of `client.search.create` (perplexity/generated/api.py
    # ApiSearchRequestInput), validated; anything else is left out.
    body: dict[str, Any]
    search_type: str
    context_size: str  # recorded on the usage event ("low" when not given)


def _bad(message: str, param: str) -> GatewayError:
    return invalid_request(message, param=param)


def _int(payload: dict[str, Any], name: str, low: int, high: int) -> int | None:
    value = payload.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise _bad(f"“{name}” must be a whole number.", name)
    if not low <= value <= high:
        raise _bad(f"“{name}” must be between {low:,} and {high:,} (got {value:,}).", name)
    return value


def _query(value: Any) -> str | list[str]:
    if isinstance(value, str):
        if not value.strip():
            raise _bad("“query” must not be empty.", "query")
        if len(value) > MAX_QUERY_CHARS:
            raise _bad(f"“query” is longer than {MAX_QUERY_CHARS:,} characters.", "query")
        return value
    if not isinstance(value, list):
        raise _bad("“query” is required: a string, or a list of strings.", "query")
    if not value:
        raise _bad("“query” must not be an empty list.", "query")
    if len(value) > MAX_QUERIES:
        raise _bad(f"“query” may list at most {MAX_QUERIES} queries (got {len(value)}).", "query")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            raise _bad("Each query must be a non-empty string.", f"query[{i}]")
        if len(item) > MAX_QUERY_CHARS:
            raise _bad(f"A query is longer than {MAX_QUERY_CHARS:,} characters.", f"query[{i}]")
    return value


def _strings(payload: dict[str, Any], name: str) -> list[str] | None:
    value = payload.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _bad(f"“{name}” must be a list of strings.", name)
    if len(value) > MAX_FILTER_ITEMS:
        raise _bad(f"“{name}” may list at most {MAX_FILTER_ITEMS} items.", name)
    return value


def parse_request(payload: dict[str, Any]) -> SearchRequest:
    """Validate a Search API body (400 naming the field at fault)."""
    if "query" not in payload:
        raise _bad("“query” is required: a string, or a list of strings.", "query")
    body: dict[str, Any] = {"query": _query(payload["query"])}
    for name, choices in CHOICES.items():
        value = payload.get(name)
        if value is None:
            continue
        if not isinstance(value, str) or value not in choices:
            raise _bad(f"“{name}” must be one of {', '.join(choices)}.", name)
        body[name] = value
    search_type = body.setdefault("search_type", DEFAULT_SEARCH_TYPE)
    ceiling = MAX_PEOPLE_RESULTS if search_type == "people" else MAX_RESULTS
    for name, low, high in (
        ("max_results", 1, ceiling),
        ("max_tokens", 1, MAX_TOKENS),
        ("max_tokens_per_page", 1, MAX_TOKENS),
    ):
        value = _int(payload, name, low, high)
        if value is not None:
            body[name] = value
    country = payload.get("country")
    if country is not None:
        if not isinstance(country, str) or len(country) != 2 or not country.isascii() \
                or not country.isalpha():  # fmt: skip
            raise _bad("“country” must be a two-letter ISO 3166-1 code, e.g. US.", "country")
        body["country"] = country.upper()
    server_time = payload.get("display_server_time")
    if server_time is not None:
        if not isinstance(server_time, bool):
            raise _bad("“display_server_time” must be true or false.", "display_server_time")
        body["display_server_time"] = server_time
    domains = _strings(payload, "search_domain_filter")
    if domains is not None:
        for i, domain in enumerate(domains):
            if not domain.strip("-").strip() or len(domain) > MAX_DOMAIN_LENGTH:
                raise _bad(
                    f"A domain must be 1–{MAX_DOMAIN_LENGTH} characters (prefix “-” to exclude).",
                    f"search_domain_filter[{i}]",
                )
        body["search_domain_filter"] = domains
    languages = _strings(payload, "search_language_filter")
    if languages is not None:
        for i, language in enumerate(languages):
            if len(language) != 2 or not language.isascii() or not language.isalpha():
                raise _bad(
                    "Each language must be a two-letter ISO 639-1 code, e.g. en.",
                    f"search_language_filter[{i}]",
                )
        body["search_language_filter"] = languages
    for name in DATE_FILTERS:
        value = payload.get(name)
        if value is None:
            continue
        try:
            if not isinstance(value, str) or not DATE_PATTERN.fullmatch(value):
                raise ValueError
            datetime.datetime.strptime(value, DATE_FORMAT)
        except ValueError:
            raise _bad(f"“{name}” must be a date as MM/DD/YYYY, e.g. 03/01/2025.", name) from None
        body[name] = value
    return SearchRequest(body, search_type, body.get("search_context_size", "low"))


class SearchAPI:
    def __init__(self, app: GatewayApp) -> None:
        self.app = app

    async def handle(
        self, scope: Scope, receive: Receive, send: Send, key: KeyInfo, request_id: str,
        headers: list,
    ) -> int:  # fmt: skip
        store = await self.app.store()
        request = parse_request(await self.app.read_body(scope, receive))
        model = (await store.models()).get(search_model(request.search_type))
        if model is None or not model.serves(SEARCH):
            raise _bad(
                f"Search type “{request.search_type}” is not available on this API.",
                "search_type",
            )
        scope["portal.model"] = model.name
        await self.app.admit(store, key, model, headers, family="search", request_id=request_id,
                             estimate=estimates.search(model, request.context_size))  # fmt: skip
        started = time.perf_counter()
        answer = await self.fetch(model, request, request_id)
        cost = compute_cost(model.prices, Usage(search_context_size=request.context_size))
        await store.meter(key, meter_params(key, model, request, cost.parts(), cost.total,
                                            request_id, started))  # fmt: skip
        answer["usage"] = {
            "cost": {
                "request_cost": cost.request / PER_M,
                "total_cost": cost.total / PER_M,
                "currency": "USD",
            }
        }
        await respond(send, 200, orjson.dumps(answer), headers)
        return 200

    async def fetch(
        self, model: ModelInfo, request: SearchRequest, request_id: str
    ) -> dict[str, Any]:
        """The upstream's answer: a JSON object with a `results` list (502 otherwise)."""
        if model.base_url.startswith("simulator:"):
            raw = simulator.search(request.body)
        else:
            asked = time.perf_counter()
            async with self.app.upstream(
                model, request.body, request_id, stream=False, path="/search",
                body=orjson.dumps(request.body),
            ) as resp:  # fmt: skip
                raw = await resp.read()
            metrics.UPSTREAM.labels(model.name).observe(time.perf_counter() - asked)
        try:
            answer = orjson.loads(raw)
        except orjson.JSONDecodeError:
            answer = None
        if not isinstance(answer, dict) or not isinstance(answer.get("results"), list):
            raise upstream_error("The search server sent an answer without results.")
        return answer


def meter_params(
    key: KeyInfo, model: ModelInfo, request: SearchRequest, parts: dict[str, int], total: int,
    request_id: str, started: float,
) -> dict[str, Any]:  # fmt: skip
    """The metered request (gateway/metering.py METER_COLUMNS) of one search: one request, no
    tokens, the request fee."""
    return {
        "request_id": request_id,
        "group_id": key.group_id,
        "key_id": key.id,
        "model_id": model.id,
        "api": SEARCH,
        **counts_of(Usage()),
        "context_size": request.context_size,
        **parts,
        "tool_calls": {},
        "total": total,
        "streamed": False,
        "latency_ms": int((time.perf_counter() - started) * 1000),
        "created": time.time(),
    }

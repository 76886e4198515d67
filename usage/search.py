"""The Search API (`POST /search`) in the catalogue: one model per `search_type`, priced per request.

A search type is sold through the catalogue model named `search-<type>` (`search-web`,
`search-fast`, `search-people`) with `api = "search"`. Its price is the request fee (dollars per
1,000 requests, the same for every search context size); it has no token prices, so a usage
event of the Search API counts one request and no tokens. Invoices name these models by their API
(`Search API (743S)`, `Search API · fast (743S)`), not by the model's name (display_name).
"""

from __future__ import annotations

SEARCH = "search"  # usage.metrics.APIS
SEARCH_TYPES = ("web", "fast", "people")
DEFAULT_SEARCH_TYPE = "web"  # a request without search_type (Perplexity's fast-search page)
MODEL_PREFIX = "search-"
API_LABEL = "Search API"  # usage.metrics.API_LABELS["search"]


def search_model(search_type: str) -> str:
    """The catalogue model that sells this search type."""
    return MODEL_PREFIX + search_type


def display_name(name: str, api: str) -> str:
    """How invoices name a model's usage: a Search API model by its API and search type
    ("Search API" for web, "Search API · fast", "Search API · people"), any other by its name."""
    if api != SEARCH:
        return name
    kind = name.removeprefix(MODEL_PREFIX)
    return API_LABEL if kind == DEFAULT_SEARCH_TYPE else f"{API_LABEL} · {kind}"

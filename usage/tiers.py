"""Usage tiers and the rate limits they give (like Perplexity's tiers).

A tier is decided by cumulative purchases (purchases + auto top-ups − refunds, in micros), never
downgraded by spending. Rate limits are counted per API group (shared by all its keys) and per
API family, at the group's tier, from the catalogue's `[limits.<family>]` tables (usage.models.
RateLimit): each chat model with a row is its own family (Perplexity limits `sonar`, `sonar-pro`,
… each), the others are the API families of FAMILIES. A model whose family has no row (an
operator's own model) is limited per group by its `rate_limit_rpm` × the tier's `multiplier`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Tier:
    number: int
    min_purchased_micros: int
    # Only for models with no [limits] row: their limit is rate_limit_rpm × this.
    multiplier: int


TIERS = (
    Tier(0, 0, 1),
    Tier(1, 50_000_000, 3),
    Tier(2, 250_000_000, 10),
    Tier(3, 500_000_000, 20),
    Tier(4, 1_000_000_000, 40),
    Tier(5, 5_000_000_000, 80),
)
TIER_COUNT = len(TIERS)

# The API families that are not a chat model's name, as the gateway's callers name them
# (GatewayApp.admit(..., family=) / admit_rate), with what the Billing page calls them.
FAMILIES = {
    "agent": "Agent API (all models)",
    "search": "Search API",
    "embeddings": "Embeddings (both endpoints)",
    "async_create": "Async chat completions: create",
    "async_get": "Async chat completions: get",
    "async_list": "Async chat completions: list",
}


def tier_for(purchased_micros: int) -> Tier:
    current = TIERS[0]
    for tier in TIERS:
        if purchased_micros >= tier.min_purchased_micros:
            current = tier
    return current


def next_tier(purchased_micros: int) -> Tier | None:
    for tier in TIERS:
        if purchased_micros < tier.min_purchased_micros:
            return tier
    return None


def default_family(name: str, apis: Iterable[str]) -> str:
    """The family a request for this model counts in when its caller names none: a chat model's
    own name, else its API ("agent", "search" or "embeddings")."""
    apis = frozenset(apis)
    if "chat" in apis:
        return name
    for api in ("agent", "search", "embeddings"):
        if api in apis:
            return api
    return name


def family_label(family: str) -> str:
    return FAMILIES.get(family, f"{family} (chat completions)")


def own_limits(rate_limit_rpm: int) -> tuple[int, ...]:
    """Requests per minute at tiers 0..5 of a model whose family has no [limits] row."""
    return tuple(rate_limit_rpm * tier.multiplier for tier in TIERS)

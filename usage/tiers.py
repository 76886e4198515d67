"""Usage tiers: groups that have paid in more get higher rate limits (like Perplexity's tiers).

A tier is decided by cumulative purchases (purchases + auto top-ups − refunds, in micros); a
key's requests-per-minute limit for a model is the model's base limit × the tier's multiplier.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tier:
    number: int
    min_purchased_micros: int
    multiplier: int


TIERS = (
    Tier(0, 0, 1),
    Tier(1, 50_000_000, 3),
    Tier(2, 250_000_000, 10),
    Tier(3, 500_000_000, 20),
    Tier(4, 1_000_000_000, 40),
    Tier(5, 5_000_000_000, 80),
)


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

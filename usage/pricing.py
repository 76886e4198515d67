"""Cost of one request from the model's prices and the usage the upstream reported.

Rounding rule: each component is computed exactly as units × price ÷ block (block = 1,000,000
tokens or 1,000 searches/requests) and rounded once, half up, to a whole micro-dollar; the total
is the sum of the rounded components. Perplexity's list prices are whole micros per unit, so for
them nothing is ever rounded.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from usage.metrics import COST_PARTS, PER_K, PER_M, PRICED, REQUEST_FEES

__all__ = ["PER_K", "PER_M", "Cost", "Prices", "Usage", "compute_cost", "request_fee"]


def _cost(units: int, price: int, block: int) -> int:
    # Half-up rounding in integers: floor((2·u·p + block) / (2·block)).
    return (2 * units * price + block) // (2 * block)


# The fields of Prices, Usage and Cost are those of usage.metrics (PRICES, COUNTS, COST_PARTS),
# declared here for the type checker; tests/usage/test_metrics.py checks that they match.
@dataclass(frozen=True)
class Prices:
    input_per_m: int = 0
    output_per_m: int = 0
    citation_per_m: int = 0
    reasoning_per_m: int = 0
    search_per_k: int = 0
    request_low_per_k: int = 0
    request_medium_per_k: int = 0
    request_high_per_k: int = 0

    @classmethod
    def of(cls, model: Any) -> Prices:
        return cls(**{f.name: getattr(model, f.name) for f in fields(cls)})


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    citation_tokens: int = 0
    reasoning_tokens: int = 0
    search_queries: int = 0
    search_context_size: str = "low"


@dataclass(frozen=True)
class Cost:
    input: int
    output: int
    citation: int
    reasoning: int
    search: int
    request: int

    @property
    def total(self) -> int:
        return sum(self.parts().values())

    def parts(self) -> dict[str, int]:
        """The parts by name (usage.metrics.COST_PARTS), in micro-dollars."""
        return {part: getattr(self, part) for part in COST_PARTS}

    def as_usage_cost(self) -> dict[str, float]:
        """The `usage.cost` object of a response, in dollars (as Perplexity's API reports it)."""
        out = {
            "input_tokens_cost": self.input / PER_M,
            "output_tokens_cost": self.output / PER_M,
            "request_cost": self.request / PER_M,
        }
        if self.citation:
            out["citation_tokens_cost"] = self.citation / PER_M
        if self.reasoning:
            out["reasoning_tokens_cost"] = self.reasoning / PER_M
        if self.search:
            out["search_queries_cost"] = self.search / PER_M
        out["total_cost"] = self.total / PER_M
        return out


def request_fee(prices: Prices, context_size: str) -> int:
    """The fee for one request with this search context size (an unknown size pays "low")."""
    per_k = getattr(prices, REQUEST_FEES.get(context_size, REQUEST_FEES["low"]))
    return _cost(1, per_k, PER_K)


def compute_cost(prices: Prices, usage: Usage) -> Cost:
    """Each part of usage.metrics.PRICED (units × price ÷ block), and the request fee."""
    return Cost(
        **{
            part: _cost(getattr(usage, count), getattr(prices, price), block)
            for part, count, price, block in PRICED
        },
        request=request_fee(prices, usage.search_context_size),
    )

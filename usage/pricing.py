"""Cost of one request from the model's prices and the usage the upstream reported.

Rounding rule: each component is computed exactly as units × price ÷ block (block = 1,000,000
tokens or 1,000 searches/requests) and rounded once, half up, to a whole micro-dollar; the total
is the sum of the rounded components. Perplexity's list prices are whole micros per unit, so for
them nothing is ever rounded.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

PER_M = 1_000_000
PER_K = 1_000


def _cost(units: int, price: int, block: int) -> int:
    # Half-up rounding in integers: floor((2·u·p + block) / (2·block)).
    return (2 * units * price + block) // (2 * block)


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
        return (
            self.input + self.output + self.citation + self.reasoning + self.search + self.request
        )

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
    per_k = {
        "low": prices.request_low_per_k,
        "medium": prices.request_medium_per_k,
        "high": prices.request_high_per_k,
    }.get(context_size, prices.request_low_per_k)
    return _cost(1, per_k, PER_K)


def compute_cost(prices: Prices, usage: Usage) -> Cost:
    return Cost(
        input=_cost(usage.prompt_tokens, prices.input_per_m, PER_M),
        output=_cost(usage.completion_tokens, prices.output_per_m, PER_M),
        citation=_cost(usage.citation_tokens, prices.citation_per_m, PER_M),
        reasoning=_cost(usage.reasoning_tokens, prices.reasoning_per_m, PER_M),
        search=_cost(usage.search_queries, prices.search_per_k, PER_K),
        request=request_fee(prices, usage.search_context_size),
    )

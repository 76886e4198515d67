"""Cost of one request from the model's prices and the usage the upstream reported.

Rounding rule: each component is computed exactly as units × price ÷ block (block = 1,000,000
tokens or 1,000 searches/requests/invocations) and rounded once, half up, to a whole
micro-dollar; the total is the sum of the rounded components. Tool fees are rounded per tool
(invocations × fee ÷ 1,000), and the `tools` part is the sum of the rounded per-tool fees.
Perplexity's chat and Agent API list prices are whole micros per unit, so for them nothing is
ever rounded. Its embeddings prices are not: $0.004 to $0.05 per 1M tokens is 0.004 to 0.05
micro-dollars per token. The same rule applies to them, once per request (`embeddings_cost`):
`pplx-embed-v1-0.6b` charges 0 µ$ for a request under 125 tokens, 1 µ$ for 125–374 tokens,
4 µ$ for 1,000 and 480 µ$ for 120,000. Half-up rounding per request is unbiased on average (a
request is as likely to be rounded down as up), charges nothing that was not used beyond half a
micro-dollar, and keeps each request's reported `usage.cost` equal to what it was charged; a
minimum charge per request, or a remainder carried from one request to the next, would not.

Cached prompt tokens (OpenAI's rule, which both SDKs' usage objects follow): `prompt_tokens` /
`input_tokens` counts EVERY input token, cache reads and cache writes included. The input part
prices only the rest, `uncached = input − cache_read − cache_write`, at the input price; cache
reads are priced at `cache_read_per_m`, cache writes at `cache_write_per_m`. An upstream that
reports more cached tokens than input tokens has its uncached count floored at 0 (the cached
tokens are still charged at their own prices). Chat models have no cache counts, so for them
this is the input price × prompt tokens, as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import Any

from usage.metrics import COST_PARTS, PER_K, PER_M, PRICED, REQUEST_FEES

__all__ = [
    "PER_K", "PER_M", "AgentCost", "AgentPrices", "AgentUsage", "Cost", "Prices", "ToolCharge",
    "UnknownTool", "Usage", "agent_cost", "compute_cost", "embeddings_cost", "embeddings_usage_cost",
    "request_fee",
    "uncached",
]  # fmt: skip


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
    cache_read_per_m: int = 0
    cache_write_per_m: int = 0
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
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    search_context_size: str = "low"


@dataclass(frozen=True)
class Cost:
    input: int
    output: int
    citation: int
    reasoning: int
    search: int
    request: int
    cache_read: int = 0
    cache_write: int = 0
    tools: int = 0

    @cached_property  # frozen: computed once (a cached_property writes __dict__ directly)
    def total(self) -> int:
        return sum(self.parts().values())

    def parts(self) -> dict[str, int]:
        """The parts by name (usage.metrics.COST_PARTS), in micro-dollars."""
        return {part: getattr(self, part) for part in COST_PARTS}

    def as_usage_cost(self) -> dict[str, float]:  # the chat completions shape
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


def uncached(usage: Usage) -> int:
    """The prompt tokens priced at the input price: those neither read from nor written to the
    cache (see the module docstring), never below 0."""
    return max(0, usage.prompt_tokens - usage.cache_read_tokens - usage.cache_write_tokens)


def _parts(prices: Prices, usage: Usage) -> dict[str, int]:
    units = {count: getattr(usage, count) for _, count, _, _ in PRICED}
    units["prompt_tokens"] = uncached(usage)
    return {
        part: _cost(units[count], getattr(prices, price), block)
        for part, count, price, block in PRICED
    }


def compute_cost(prices: Prices, usage: Usage) -> Cost:
    """Each part of usage.metrics.PRICED (units × price ÷ block), and the request fee."""
    return Cost(**_parts(prices, usage), request=request_fee(prices, usage.search_context_size))


# --- embeddings --------------------------------------------------------------------------------


def embeddings_cost(prices: Prices, prompt_tokens: int) -> Cost:
    """The cost of an embeddings request: its input tokens at the input price, rounded half up
    once to whole micro-dollars (see the module docstring); nothing else is priced."""
    if prompt_tokens < 0:
        raise ValueError("usage counts cannot be negative")
    return Cost(
        input=_cost(prompt_tokens, prices.input_per_m, PER_M),
        output=0, citation=0, reasoning=0, search=0, request=0,
    )  # fmt: skip


def embeddings_usage_cost(cost: Cost) -> dict[str, Any]:
    """The `usage.cost` of an embeddings response, in dollars (the perplexityai SDK's
    `EmbeddingsUsageOutput.cost`: currency, input_cost, total_cost), equal to the micros charged."""
    return {
        "currency": "USD",
        "input_cost": cost.input / PER_M,
        "total_cost": cost.total / PER_M,
    }


# --- the Agent API -----------------------------------------------------------------------------


class UnknownTool(ValueError):
    """Usage reports invocations of a tool the portal has no (enabled) price for."""

    def __init__(self, tools: list[str]) -> None:
        self.tools = tools
        super().__init__(f"no price for tool(s): {', '.join(tools)}")


@dataclass(frozen=True)
class AgentPrices:
    """A model's prices and the fee of each tool (micros per 1,000 invocations, by tool type)."""

    model: Prices
    tool_fees_per_k: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class AgentUsage:
    """What one Agent API response used. `input_tokens` includes the cached tokens (OpenAI's
    rule, see the module docstring); `output_tokens` includes reasoning tokens (the Agent API
    bills reasoning at the output price); `tool_calls` is {tool type: invocations}."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    tool_calls: Mapping[str, int] = field(default_factory=dict)

    def as_usage(self) -> Usage:
        """The counts a usage event stores (prompt = input, completion = output)."""
        return Usage(
            prompt_tokens=self.input_tokens,
            completion_tokens=self.output_tokens,
            cache_read_tokens=self.cache_read_tokens,
            cache_write_tokens=self.cache_write_tokens,
        )


@dataclass(frozen=True)
class ToolCharge:
    """Invocations of one tool and their fee (rounded once for the tool), in micro-dollars."""

    invocations: int
    cost_micros: int


@dataclass(frozen=True)
class AgentCost(Cost):
    """The cost of one Agent API response: the Cost parts (input = uncached input tokens,
    output, cache_read, cache_write, tools; the chat-only parts are 0) and the fee per tool."""

    tool_calls: Mapping[str, ToolCharge] = field(default_factory=dict)

    def as_response_cost(self) -> dict[str, Any]:  # the Agent API (Responses) shape
        """The `usage.cost` object of an Agent API response, in dollars."""
        return {
            "currency": "USD",
            "input_cost": self.input / PER_M,
            "output_cost": self.output / PER_M,
            "cache_read_cost": self.cache_read / PER_M,
            "cache_creation_cost": self.cache_write / PER_M,
            "tool_calls_cost": self.tools / PER_M,
            "total_cost": self.total / PER_M,
        }

    def tool_calls_json(self) -> dict[str, dict[str, int]]:
        """The usage event's `tool_calls`: {tool: {"invocations": n, "cost_micros": c}}."""
        return {
            tool: {"invocations": c.invocations, "cost_micros": c.cost_micros}
            for tool, c in self.tool_calls.items()
        }


def agent_cost(prices: AgentPrices, usage: AgentUsage) -> AgentCost:
    """The cost of an Agent API response (module docstring: cached tokens and rounding).

    Tools with 0 invocations are left out; a tool with invocations and no fee in
    `prices.tool_fees_per_k` raises UnknownTool (the gateway refuses such tools at admission,
    so only an upstream reporting a tool it was not asked for can get here). A negative count
    is a ValueError: usage from an upstream is validated before it is priced.
    """
    counts = usage.as_usage()
    if min(usage.input_tokens, usage.output_tokens, usage.cache_read_tokens,
           usage.cache_write_tokens, *usage.tool_calls.values(), 0) < 0:  # fmt: skip
        raise ValueError("usage counts cannot be negative")
    unknown = sorted(
        t for t, n in usage.tool_calls.items() if n and t not in prices.tool_fees_per_k
    )
    if unknown:
        raise UnknownTool(unknown)
    tools = {
        tool: ToolCharge(n, _cost(n, prices.tool_fees_per_k[tool], PER_K))
        for tool, n in sorted(usage.tool_calls.items())
        if n
    }
    return AgentCost(
        **_parts(prices.model, counts),
        request=0,
        tools=sum(t.cost_micros for t in tools.values()),
        tool_calls=tools,
    )

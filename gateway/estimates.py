"""What a request may cost at most: the reservation it is admitted with (gateway/admission.py).

Priced with the same functions as the charge (usage/pricing.py), from counts the request itself
bounds or a default when it does not:

- input tokens: ⌈the JSON of the messages / input (with an Agent API conversation's history) ÷
  4⌉ characters (the gateway's usual estimate, gateway/app.py delivered_tokens);
- output tokens: `max_tokens` / `max_completion_tokens` (chat) or `max_output_tokens` (Agent API),
  else settings.GATEWAY_RESERVATION_DEFAULT_OUTPUT_TOKENS; a model that prices reasoning or
  citation tokens reserves as many of each again;
- searches: RESERVED_SEARCHES on a model that prices them; the request fee for the request's
  search context size; one invocation of each tool the request declares (Agent API);
- Search API: its fee, exactly; embeddings: the input's estimated tokens at the input price;

each capped at settings.GATEWAY_RESERVATION_CAP_MICROS. A request that costs more than its
reservation (its upstream reported more than estimated) can take the balance further below zero
than the bound; docs/gateway.md says by how much at most.
"""

from __future__ import annotations

from typing import Any

import orjson
from django.conf import settings

from gateway.catalogue import ModelInfo
from usage.pricing import (
    AgentPrices,
    AgentUsage,
    Usage,
    agent_cost,
    compute_cost,
    embeddings_cost,
)

CHARS_PER_TOKEN = 4
RESERVED_SEARCHES = 3  # searches reserved for on a model that prices them


def text_tokens(value: Any) -> int:
    """⌈characters ÷ 4⌉ of the value as JSON (a string: of the string)."""
    if isinstance(value, str):
        return -(-len(value) // CHARS_PER_TOKEN)
    try:
        return -(-len(orjson.dumps(value)) // CHARS_PER_TOKEN)
    except TypeError:
        return 0


def capped(micros: int) -> int:
    return max(0, min(int(micros), settings.GATEWAY_RESERVATION_CAP_MICROS))


def _limit(payload: dict[str, Any], *names: str) -> int:
    for name in names:
        value = payload.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return int(settings.GATEWAY_RESERVATION_DEFAULT_OUTPUT_TOKENS)


def chat(model: ModelInfo, payload: dict[str, Any]) -> int:
    """A chat completions request (also the request of an async job)."""
    prices = model.prices
    output = _limit(payload, "max_tokens", "max_completion_tokens")
    options = payload.get("web_search_options")
    size = options.get("search_context_size") if isinstance(options, dict) else None
    usage = Usage(
        prompt_tokens=text_tokens(payload.get("messages")),
        completion_tokens=output,
        citation_tokens=output if prices.citation_per_m else 0,
        reasoning_tokens=output if prices.reasoning_per_m else 0,
        search_queries=RESERVED_SEARCHES if prices.search_per_k else 0,
        search_context_size=size if size in ("low", "medium", "high") else "low",
    )
    return capped(compute_cost(prices, usage).total)


def agent(prices: AgentPrices, raw: dict[str, Any], tools: list[str], history: list[Any]) -> int:
    """An Agent API request: its input and conversation, output and one run of each tool."""
    usage = AgentUsage(
        input_tokens=text_tokens(raw.get("input")) + text_tokens(raw.get("instructions") or "")
        + (text_tokens(history) if history else 0),
        output_tokens=_limit(raw, "max_output_tokens"),
        tool_calls={tool: 1 for tool in tools if tool in prices.tool_fees_per_k},
    )  # fmt: skip
    return capped(agent_cost(prices, usage).total)


def search(model: ModelInfo, context_size: str) -> int:
    """A Search API request: its fee (exactly what it is charged)."""
    return capped(compute_cost(model.prices, Usage(search_context_size=context_size)).total)


def embeddings(model: ModelInfo, texts: list[str]) -> int:
    """An embeddings request: the estimated tokens of its texts at the input price."""
    return capped(embeddings_cost(model.prices, sum(text_tokens(t) for t in texts)).total)

"""The usage metrics: the one list of what a metered request counts and what it is charged for.

Everything that stores, sums, exports or prices usage builds its column lists from these names:
the gateway's metering statement (gateway/sql/meter.sql), the rollups (usage/rollups.py), the
dashboard totals (usage/selectors.py), the CSV export (usage/views.py), the invoice drafts
(billing/invoicing/drafts.py) and the cost formula (usage/pricing.py). The typed declarations
that static tools need (Django model fields, dataclasses, API schemas) name the same fields;
tests/usage/test_metrics.py checks that each of them matches this module.
"""

from __future__ import annotations

from typing import Any

# The token counts a request reports, in the order the portal shows them.
TOKEN_COUNTS = ("prompt_tokens", "completion_tokens", "citation_tokens", "reasoning_tokens")
# The prompt tokens read from, and written to, the upstream's prompt cache. They are a part of
# `prompt_tokens` (OpenAI's rule: input tokens count every input token, cached ones included), so
# they are not added again to a request's tokens (TOKEN_COUNTS); see usage.pricing.
CACHE_COUNTS = ("cache_read_tokens", "cache_write_tokens")
# Everything counted per request: columns of a usage event, summed by rollups and invoice lines.
COUNTS = (*TOKEN_COUNTS, "search_queries", *CACHE_COUNTS)
# The sums every rollup row carries (usage.models.UsageSums), in column order.
SUMS = ("requests", *COUNTS, "cost_micros")
# What a request is charged for (usage.pricing.Cost); a usage event stores each as
# `<part>_cost_micros` and their sum as `cost_micros`.
# `tools` is the sum of the per-tool fees (a usage event's `tool_calls` holds them per tool).
COST_PARTS = (
    "input", "output", "citation", "reasoning", "search", "request", "cache_read", "cache_write",
    "tools",
)  # fmt: skip
COST_COLUMNS = tuple(f"{part}_cost_micros" for part in COST_PARTS)

PER_M = 1_000_000
PER_K = 1_000
# The parts priced per unit counted: (part, the count it prices, the model's price field, units
# the price is for). The request fee is not: it depends on the search context size
# (REQUEST_FEES); nor are the tool fees: per tool, priced by usage.models.ToolPrice. The input
# part prices the prompt tokens that are not cache reads or writes (usage.pricing.uncached).
PRICED = (
    ("input", "prompt_tokens", "input_per_m", PER_M),
    ("output", "completion_tokens", "output_per_m", PER_M),
    ("citation", "citation_tokens", "citation_per_m", PER_M),
    ("reasoning", "reasoning_tokens", "reasoning_per_m", PER_M),
    ("search", "search_queries", "search_per_k", PER_K),
    ("cache_read", "cache_read_tokens", "cache_read_per_m", PER_M),
    ("cache_write", "cache_write_tokens", "cache_write_per_m", PER_M),
)
# Search context size -> the model's price field for the request fee (per 1,000 requests).
REQUEST_FEES = {
    "low": "request_low_per_k",
    "medium": "request_medium_per_k",
    "high": "request_high_per_k",
}
# A model's price fields (usage.models.AIModel, usage.pricing.Prices), in column order.
PRICES = (*(price for _, _, price, _ in PRICED), *REQUEST_FEES.values())

# The APIs a request is metered on (a usage event's `api`, a dimension of every rollup):
# "chat" = Sonar chat completions (/chat/completions), "agent" = the Agent API (/v1/responses,
# /v1/agent), "search" = the Search API (/search), "embeddings" = /v1/embeddings and
# /v1/contextualizedembeddings, "async" = async chat completions (/async/chat/completions).
APIS = ("chat", "agent", "search", "embeddings", "async")
API_LABELS = {
    "chat": "Chat Completions",
    "agent": "Agent API",
    "search": "Search API",
    "embeddings": "Embeddings",
    "async": "Async Chat Completions",
}
# What a model's upstream speaks (usage.models.AIModel.upstream_api).
UPSTREAM_APIS = ("chat_completions", "responses")

# The tokens of a row, as an SQL expression over its columns.
TOKENS_SQL = " + ".join(TOKEN_COUNTS)


def tokens_of(row: Any) -> int:
    """All the tokens of an object with the TOKEN_COUNTS attributes."""
    return sum(getattr(row, name) for name in TOKEN_COUNTS)


def counts_of(row: Any) -> dict[str, int]:
    """The COUNTS attributes of an object, by name."""
    return {name: getattr(row, name) for name in COUNTS}

"""Count the tool invocations a Responses upstream reports, per tool.

Two sources, and the usage breakdown wins when it is present:

1. `usage.tool_calls_details{tool: {invocation: n}}` — what the upstream itself bills. It is the
   only complete count: one `search_results` item can carry several `queries` (several
   invocations), a sandbox session runs searches that never surface as items, a multi-step agent
   may fold steps together, and `format=short` retrieval drops items altogether. Counting items
   would undercount all of these.
2. Otherwise (an upstream whose usage has no breakdown, such as OpenAI's), one invocation per
   output item that records a tool run: `<tool>_call` items (`web_search_call` → `web_search`,
   `function_call` → `function`, `mcp_call` → `mcp`, …) and Perplexity's result items
   (`search_results` → `web_search`, `fetch_url_results` → `fetch_url`, `image_search_results`
   → `image_search`, `sandbox_*` → `sandbox`, counted once per response: it is billed per
   session).

Only the counts are taken from the upstream; the price of each invocation is the portal's own.
An entry that is not a non-negative integer is ignored rather than trusted, so a malformed
breakdown cannot inflate a bill; if no entry is usable, the items are counted instead.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

RESULT_ITEMS = {
    "search_results": "web_search",
    "fetch_url_results": "fetch_url",
    "image_search_results": "image_search",
}
# Items that are not a tool run although their type ends in `_call` or `_results`.
NOT_INVOCATIONS = frozenset({"function_call_output", "mcp_approval_request"})


def tool_invocations(response: dict[str, Any]) -> dict[str, int]:
    """Return {tool: invocations} for a finished response (see the module docstring)."""
    from_usage = invocations_from_usage(response.get("usage"))
    if from_usage is not None:
        return from_usage
    return invocations_from_items(response.get("output") or [])


def invocations_from_usage(usage: Any) -> dict[str, int] | None:
    """The upstream's breakdown, or None when it has none usable."""
    if not isinstance(usage, dict) or not isinstance(usage.get("tool_calls_details"), dict):
        return None
    counts: dict[str, int] = {}
    for tool, details in usage["tool_calls_details"].items():
        count = details.get("invocation") if isinstance(details, dict) else None
        if isinstance(count, int) and not isinstance(count, bool) and count >= 0:
            counts[str(tool)] = count
    return counts or None


def invocations_from_items(items: Iterable[Any]) -> dict[str, int]:
    counts: Counter[str] = Counter()
    sandbox = False
    for item in items:
        kind = item.get("type") if isinstance(item, dict) else None
        if not isinstance(kind, str) or kind in NOT_INVOCATIONS:
            continue
        if kind in RESULT_ITEMS:
            counts[RESULT_ITEMS[kind]] += 1
        elif kind.startswith("sandbox_"):
            sandbox = True
        elif kind.endswith("_call"):
            counts[kind.removesuffix("_call")] += 1
    if sandbox:
        counts["sandbox"] = 1
    return dict(counts)

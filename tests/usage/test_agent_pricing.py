"""The Agent API's cost (usage.pricing.agent_cost): cached tokens, tool fees, rounding."""

from __future__ import annotations

import pytest

from usage.pricing import (
    AgentPrices,
    AgentUsage,
    Prices,
    ToolCharge,
    UnknownTool,
    Usage,
    agent_cost,
    compute_cost,
)

# openai/gpt-5.2 on Perplexity: $1.75 / $14 per 1M, cache read $0.175; web_search $0.0025.
GPT_52 = Prices(input_per_m=1_750_000, output_per_m=14_000_000, cache_read_per_m=175_000,
                cache_write_per_m=1_750_000)  # fmt: skip
FEES = {"web_search": 2_500_000, "fetch_url": 500_000, "function": 0}


def test_perplexitys_worked_example_to_the_micro_dollar():
    # S1: gpt-5.2, 500 in + 200 out + 1 web_search = 0.000875 + 0.0028 + 0.0025 = $0.006175.
    cost = agent_cost(
        AgentPrices(GPT_52, FEES),
        AgentUsage(input_tokens=500, output_tokens=200, tool_calls={"web_search": 1}),
    )
    assert (cost.input, cost.output, cost.tools) == (875, 2_800, 2_500)
    assert cost.total == 6_175
    assert cost.tool_calls == {"web_search": ToolCharge(1, 2_500)}
    assert cost.tool_calls_json() == {"web_search": {"invocations": 1, "cost_micros": 2_500}}


def test_cached_tokens_are_part_of_the_input_and_priced_at_their_own_rate():
    cost = agent_cost(
        AgentPrices(GPT_52, FEES),
        AgentUsage(
            input_tokens=10_000,
            output_tokens=1_000,
            cache_read_tokens=6_000,
            cache_write_tokens=1_000,
        ),  # fmt: skip
    )
    # uncached 3,000 × 1.75 = 5,250; read 6,000 × 0.175 = 1,050; write 1,000 × 1.75 = 1,750.
    assert cost.parts() == {
        "input": 5_250, "output": 14_000, "citation": 0, "reasoning": 0, "search": 0,
        "request": 0, "cache_read": 1_050, "cache_write": 1_750, "tools": 0,
    }  # fmt: skip
    assert cost.total == 22_050
    assert cost.tool_calls == {}


def test_each_tool_is_rounded_once_half_up_and_the_total_is_the_sum_of_the_parts():
    # 1.5 micros per invocation: 3 → 4.5 → 5 (half up), 1 → 1.5 → 2; per tool, not summed first.
    prices = AgentPrices(Prices(input_per_m=3, output_per_m=1), {"a": 1_500, "b": 1_500})
    cost = agent_cost(
        prices, AgentUsage(input_tokens=500_000, output_tokens=1, tool_calls={"a": 3, "b": 1})
    )
    assert cost.tool_calls == {"a": ToolCharge(3, 5), "b": ToolCharge(1, 2)}
    assert cost.tools == 7  # not round(4 × 1.5) = 6
    assert (cost.input, cost.output) == (2, 0)  # 1.5 → 2, 0.000001 → 0
    assert cost.total == 9


def test_a_tool_without_a_price_is_refused_and_unused_tools_are_left_out():
    prices = AgentPrices(GPT_52, FEES)
    with pytest.raises(UnknownTool) as raised:
        agent_cost(prices, AgentUsage(tool_calls={"image_search": 1, "web_search": 1}))
    assert raised.value.tools == ["image_search"]
    cost = agent_cost(prices, AgentUsage(tool_calls={"image_search": 0, "function": 2}))
    assert cost.tool_calls == {"function": ToolCharge(2, 0)}
    assert cost.total == 0


def test_negative_counts_from_an_upstream_are_refused():
    with pytest.raises(ValueError):
        agent_cost(AgentPrices(GPT_52, FEES), AgentUsage(input_tokens=-5))
    with pytest.raises(ValueError):
        agent_cost(AgentPrices(GPT_52, FEES), AgentUsage(tool_calls={"web_search": -1}))


def test_more_cached_than_input_tokens_never_makes_the_input_cost_negative():
    cost = agent_cost(
        AgentPrices(GPT_52, FEES), AgentUsage(input_tokens=100, cache_read_tokens=1_000)
    )
    assert cost.input == 0
    assert cost.cache_read == 175


def test_chat_prices_are_unchanged_without_cache_counts():
    prices = Prices(input_per_m=3_000_000, output_per_m=15_000_000, request_medium_per_k=10_000_000)
    cost = compute_cost(prices, Usage(1_000, 500, search_context_size="medium"))
    assert cost.parts()["input"] == 3_000
    assert cost.total == 3_000 + 7_500 + 10_000
    assert (cost.cache_read, cost.cache_write, cost.tools) == (0, 0, 0)

"""The model catalogue of one gateway worker: the enabled models and their prices, the tool fees
and the effort presets of the Agent API, re-read from PostgreSQL every CATALOGUE_TTL seconds (by
one request; the others use the catalogue in hand).

`models()` is {name: ModelInfo}; after it, `tool_fees` is {tool type: micros per 1,000
invocations} (a tool missing from it has no enabled ToolPrice: refuse it), `presets` is
{name or alias: PresetInfo} and `rate_limit(model, family)` the RateInfo a request counts
against, all as of the same read.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from gateway.sources import sql
from usage.metrics import PRICES
from usage.pricing import AgentPrices, Prices
from usage.tiers import TIER_COUNT, default_family, own_limits

log = logging.getLogger("portal.gateway")

CATALOGUE_TTL = 5.0
CATALOGUE_SQL = sql("catalogue", prices=", ".join(PRICES))
TOOLS_SQL = sql("catalogue_tools")
PRESETS_SQL = sql("catalogue_presets")
LIMITS_SQL = sql("catalogue_limits")


@dataclass(frozen=True)
class ModelInfo:
    id: int
    name: str
    base_url: str
    api_key: str
    upstream_model: str
    prices: Prices
    rate_limit_rpm: int
    # The APIs it is served on: {"chat"} (Sonar chat completions), {"agent"} (the Agent API), or
    # both (usage.models.AIModel.api, a comma list).
    apis: frozenset[str] = frozenset({"chat"})
    # What its upstream speaks: "chat_completions" (translated on the Agent API) or "responses".
    upstream_api: str = "chat_completions"
    # Embeddings models: the vector length (the largest `dimensions`, and the default) and whether
    # the model is contextualized (/v1/contextualizedembeddings).
    dimensions: int = 0
    contextualized: bool = False

    def serves(self, api: str) -> bool:
        return api in self.apis


@dataclass(frozen=True)
class RateInfo:
    """The limit a request counts against: per API group, in one or two fixed windows.

    `windows` is ((seconds, (limit at tier 0, …, tier 5)), …): one minute and/or one second.
    `args` is what gateway/lua/admit.lua reads for it, built once here: for each of two windows
    its counter's TTL and its 6 tier limits (zeros for a window it does not have), as bytes.
    """

    family: str  # what a 429 names: the family, or the model limited by its own rate_limit_rpm
    key: str  # the counters' name part (the family, or "model:<id>")
    windows: tuple[tuple[int, tuple[int, ...]], ...]
    args: tuple[bytes, ...]


def rate_info(family: str, key: str, per_minute: Any, per_second: Any) -> RateInfo:
    windows = tuple(
        (seconds, tuple(limits))
        for seconds, limits in ((60, per_minute), (1, per_second))
        if limits is not None and len(limits) == TIER_COUNT
    )
    args: list[int] = []
    for seconds, limits in (*windows, (0, (0,) * TIER_COUNT))[:2]:
        args += [seconds + 1 if seconds else 0, *limits]
    # Encoded once here: the client would otherwise encode 14 numbers per request.
    return RateInfo(family, key, windows, tuple(str(arg).encode() for arg in args))


def own_rate(model: ModelInfo) -> RateInfo:
    """A model whose family has no limit row: rate_limit_rpm × the tier's multiplier."""
    return rate_info(model.name, f"model:{model.id}", own_limits(model.rate_limit_rpm), None)


@dataclass(frozen=True)
class PresetInfo:
    """An effort preset: its name, the model it runs on and the settings it implies
    (max_steps, reasoning_effort, max_output_tokens, tools: a list of tool types)."""

    name: str
    model: str
    settings: Mapping[str, Any] = field(default_factory=dict)


class Catalogue:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool
        self._models: dict[str, ModelInfo] = {}
        self.tool_fees: dict[str, int] = {}
        self.presets: dict[str, PresetInfo] = {}
        self.limits: dict[str, RateInfo] = {}  # by family
        self._model_rates: dict[str, RateInfo] = {}  # by model name: its default family's
        self._own_rates: dict[str, RateInfo] = {}  # by model name: its own rate_limit_rpm
        self._loaded = 0.0
        self._refreshing = False

    async def models(self) -> dict[str, ModelInfo]:
        if time.monotonic() - self._loaded > CATALOGUE_TTL:
            if self._models and self._refreshing:
                return self._models  # one request refreshes it; the others need not wait
            self._refreshing = True
            try:
                # With a catalogue in hand, do not wait long for a connection: serve with it.
                async with self.pool.connection(timeout=1.0 if self._models else None) as conn:
                    cur = await conn.execute(CATALOGUE_SQL)
                    rows = await cur.fetchall()
                    cur = await conn.execute(TOOLS_SQL)
                    tools = await cur.fetchall()
                    cur = await conn.execute(PRESETS_SQL)
                    presets = await cur.fetchall()
                    cur = await conn.execute(LIMITS_SQL)
                    limits = await cur.fetchall()
            except psycopg.OperationalError as exc:
                if not self._models:
                    raise
                # Serve with the catalogue we have; try again after CATALOGUE_TTL.
                log.warning("catalogue not refreshed (PostgreSQL unavailable): %s", exc)
                self._loaded = time.monotonic()
                return self._models
            finally:
                self._refreshing = False
            self._models = {r[1]: _model(r) for r in rows}
            self.tool_fees = {name: fee for name, fee in tools}
            self.presets = _presets(presets)
            self.limits = {name: rate_info(name, name, pm, ps) for name, pm, ps in limits}
            # Built once per catalogue read, not per request.
            self._own_rates = {m.name: own_rate(m) for m in self._models.values()}
            self._model_rates = {
                m.name: self.limits.get(default_family(m.name, m.apis)) or self._own_rates[m.name]
                for m in self._models.values()
            }
            self._loaded = time.monotonic()
        return self._models

    def rate_limit(self, model: ModelInfo | None, family: str | None) -> RateInfo | None:
        """What a request counts against: the family's limit; without a family, the model's
        default family's (usage.tiers.default_family); a family with no row falls back to the
        model's own rate_limit_rpm. None (no model, no row): not limited."""
        if family is None:
            if model is None:
                return None
            found = self._model_rates.get(model.name)
            return (
                found if found is not None else self._own_rates.get(model.name) or own_rate(model)
            )
        found = self.limits.get(family)
        if found is not None or model is None:
            return found
        return self._own_rates.get(model.name) or own_rate(model)

    def agent_prices(self, model: ModelInfo) -> AgentPrices:
        """The prices of an Agent API response on this model (for usage.pricing.agent_cost)."""
        return AgentPrices(model.prices, self.tool_fees)


def _model(row: tuple) -> ModelInfo:
    """A row of CATALOGUE_SQL: id, name, base URL, API key variable, upstream model, APIs,
    upstream API, the prices (usage.metrics.PRICES), rate limit, dimensions, contextualized."""
    end = 7 + len(PRICES)
    return ModelInfo(
        id=row[0],
        name=row[1],
        base_url=row[2].rstrip("/"),
        api_key=os.environ.get(row[3], "") if row[3] else "",
        upstream_model=row[4] or row[1],
        apis=frozenset(row[5].split(",")),
        upstream_api=row[6],
        prices=Prices(*row[7:end]),
        rate_limit_rpm=row[end],
        dimensions=row[end + 1],
        contextualized=row[end + 2],
    )


def _presets(rows: list[tuple]) -> dict[str, PresetInfo]:
    """{name or alias: preset}; a preset's name wins over another preset's alias."""
    presets = {name: PresetInfo(name, model, settings or {}) for name, _, model, settings in rows}
    by_alias = {alias: presets[name] for name, aliases, _, _ in rows for alias in aliases or []}
    return {**by_alias, **presets}

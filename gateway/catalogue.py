"""The model catalogue of one gateway worker: the enabled models and their prices, re-read from
PostgreSQL every CATALOGUE_TTL seconds (by one request; the others use the catalogue in hand)."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

import psycopg
from psycopg_pool import AsyncConnectionPool

from gateway.sources import sql
from usage.metrics import PRICES
from usage.pricing import Prices

log = logging.getLogger("portal.gateway")

CATALOGUE_TTL = 5.0
CATALOGUE_SQL = sql("catalogue", prices=", ".join(PRICES))


@dataclass(frozen=True)
class ModelInfo:
    id: int
    name: str
    base_url: str
    api_key: str
    upstream_model: str
    prices: Prices
    rate_limit_rpm: int


class Catalogue:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool
        self._models: dict[str, ModelInfo] = {}
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
            self._loaded = time.monotonic()
        return self._models


def _model(row: tuple) -> ModelInfo:
    """A row of CATALOGUE_SQL: id, name, base URL, API key variable, upstream model, the prices
    (usage.metrics.PRICES), rate limit."""
    return ModelInfo(
        id=row[0],
        name=row[1],
        base_url=row[2].rstrip("/"),
        api_key=os.environ.get(row[3], "") if row[3] else "",
        upstream_model=row[4] or row[1],
        prices=Prices(*row[5:-1]),
        rate_limit_rpm=row[-1],
    )

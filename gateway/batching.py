"""Group calls: the gateway's round trips to Redis and PostgreSQL under load (gateway/store.py)."""

from __future__ import annotations

import asyncio
from typing import Any


class Batcher:
    """Group calls: while `inflight` calls run, later callers queue and share the next call.

    `call(items)` returns one result per item (an exception instance fails that item alone).
    Alone, an item is sent at once (no added latency); under load, one round trip serves many.
    """

    def __init__(self, call: Any, *, inflight: int = 2, max_batch: int = 128) -> None:
        self._call = call
        self._inflight = inflight
        self._max = max_batch
        self._pending: list[tuple[Any, asyncio.Future[Any]]] = []
        self._running = 0

    async def submit(self, item: Any) -> Any:
        return await self.enqueue(item)

    def enqueue(self, item: Any) -> asyncio.Future[Any]:
        """Queue an item; its result is the future's (await it, or the item runs unawaited)."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._running < self._inflight:
            self._running += 1
            asyncio.ensure_future(self._drain())
        return future

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self._max]
                del self._pending[: self._max]
                try:
                    results = await self._call([item for item, _ in batch])
                except BaseException as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
                else:
                    for (_, future), result in zip(batch, results, strict=True):
                        if future.done():
                            continue
                        if isinstance(result, BaseException):
                            future.set_exception(result)
                        else:
                            future.set_result(result)
        finally:
            self._running -= 1

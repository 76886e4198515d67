"""An open-loop asyncio load client: requests at a fixed rate, whatever the answers take.

Latency is counted from each request's scheduled send time, so a stall shows as latency rather
than as a lower rate. Keys rotate over all the stack's keys; every 4th request streams.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
import orjson

from tests.reliability.stack import MODEL


@dataclass
class Load:
    rate: float = 0.0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)  # ms, 200s only
    statuses: Counter = field(default_factory=Counter)  # status (599: no answer) -> count
    codes: Counter = field(default_factory=Counter)  # error code of non-200 answers
    ok_ids: list[str] = field(default_factory=list)
    other_ids: dict[str, int] = field(default_factory=dict)  # request id -> status, not 200
    timeline: list[tuple[float, int]] = field(default_factory=list)  # (sent at, status)

    @property
    def sent(self) -> int:
        return sum(self.statuses.values())

    def pct(self, q: float) -> float:
        values = sorted(self.latencies)
        return values[min(len(values) - 1, int(len(values) * q))] if values else float("nan")

    def statuses_between(self, start: float, end: float) -> Counter:
        return Counter(s for t, s in self.timeline if start <= t < end)

    def summary(self) -> dict:
        return {
            "rate_per_s": round(self.rate),
            "seconds": round(self.seconds, 1),
            "sent": self.sent,
            "statuses": dict(self.statuses),
            "error_codes": dict(self.codes),
            "p50_ms": round(self.pct(0.50), 1),
            "p99_ms": round(self.pct(0.99), 1),
        }


async def _one(s: aiohttp.ClientSession, url: str, key: str, stream: bool, at: float, out: Load) -> None:  # fmt: skip
    body = orjson.dumps({"model": MODEL, "stream": stream, "messages": [{"role": "user", "content": "Six times seven?"}]})  # fmt: skip
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    rid = None
    try:
        async with s.post(f"{url}/v1/chat/completions", data=body, headers=headers) as r:
            raw = await r.read()
            status = r.status
            rid = r.headers.get("x-request-id")
            if status == 200 and stream and not raw.rstrip().endswith(b"data: [DONE]"):
                # A stream that ended early (an error event in the stream) is not an answer.
                status = 598
                out.codes["stream_cut"] += 1
            elif status != 200:
                try:
                    out.codes[orjson.loads(raw)["error"]["code"]] += 1
                except Exception:
                    out.codes[f"http_{status}"] += 1
    except (aiohttp.ClientError, TimeoutError):
        status = 599
        out.codes["no_answer"] += 1
    out.statuses[status] += 1
    out.timeline.append((at, status))
    if status == 200:
        out.latencies.append((time.time() - at) * 1000)
        if rid:
            out.ok_ids.append(rid)
    elif rid:
        out.other_ids[rid] = status


async def open_loop(url: str, keys: list[str], rate: float, seconds: float) -> Load:
    out = Load(rate=rate)
    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as s:
        t0 = time.time() + 0.05
        tasks = []
        for i in range(int(rate * seconds)):
            at = t0 + i / rate
            delay = at - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(_one(s, url, keys[i % len(keys)], i % 4 == 3, at, out)))  # fmt: skip
        await asyncio.gather(*tasks)
        out.seconds = time.time() - t0
    return out


async def closed_loop(url: str, keys: list[str], concurrency: int, seconds: float) -> Load:
    """As fast as `concurrency` clients go: the saturation throughput."""
    out = Load()
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as s:
        t0 = time.time()
        end = t0 + seconds
        counter = iter(range(10**9))

        async def worker() -> None:
            while time.time() < end:
                i = next(counter)
                await _one(s, url, keys[i % len(keys)], i % 4 == 3, time.time(), out)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        out.seconds = time.time() - t0
        out.rate = out.statuses[200] / out.seconds
    return out

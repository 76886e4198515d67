"""CPU per request of chat completions (without and with budgets) and the Agent API, in one process.

The gateway app is called directly (ASGI, no HTTP server, no load generator in the way) against
the benchmark's fake upstream, 3,000 requests per row, 16 at a time; each row is the process CPU
time per request. It isolates the gateway's own work from a shared machine's noise.

    python -m portal.devstack exec -- .venv/bin/python benchmarks/gateway/inprocess.py
    NOSTORE=1 …   the Agent API with `store: false` (no stored copy)
    PROF=agent …  also write a cProfile of the third agent row (PROF=chat, budgets; agent-stream…)
"""

from __future__ import annotations

import asyncio
import cProfile
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

import orjson  # noqa: E402
import run as bench  # noqa: E402

from portal.launcher import free_port  # noqa: E402

N, CONCURRENCY = 3000, 16


async def call(app, path: str, body: dict, key: str, stream: bool) -> int:  # type: ignore[no-untyped-def]
    raw = orjson.dumps({**body, "stream": True} if stream else body)
    scope = {
        "type": "http", "method": "POST", "path": path, "query_string": b"",
        "headers": [(b"authorization", f"Bearer {key}".encode()),
                    (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1),
    }  # fmt: skip
    sent = False

    async def receive() -> dict:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)
        sent = True
        return {"type": "http.request", "body": raw, "more_body": False}

    status: list[int] = []

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    await app(scope, receive, send)
    return status[0]


async def main(secrets: list[str], budgeted: list[str]) -> None:
    from gateway.app import GatewayApp

    app = GatewayApp()
    agent_body = {**bench.AGENT_BODY, **({"store": False} if os.environ.get("NOSTORE") else {})}
    rows = (
        ("chat", "/chat/completions", bench.BODY, secrets),
        # the same, with keys under a hard group budget and a hard key budget each
        ("budgets", "/chat/completions", bench.BODY, budgeted),
        ("agent", "/v1/responses", agent_body, secrets),
    )
    for stream in (False, True):
        for rep in range(3):
            for name, path, body, keys in rows:
                numbers = iter(range(N))
                codes: dict[int, int] = {}

                async def worker(
                    path: str = path,
                    body: dict = body,
                    keys: list[str] = keys,
                    numbers=numbers,
                    codes=codes,  # type: ignore[no-untyped-def]
                    stream: bool = stream,
                ) -> None:
                    for i in numbers:
                        code = await call(app, path, body, keys[i % len(keys)], stream)
                        codes[code] = codes.get(code, 0) + 1

                label = f"{name}-stream" if stream else name
                profile = os.environ.get("PROF") == label and rep == 2
                profiler = cProfile.Profile() if profile else None
                if profiler:
                    profiler.enable()
                cpu, wall = time.process_time(), time.perf_counter()
                await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                if profiler:
                    profiler.disable()
                    profiler.dump_stats(f"inprocess-{label}.prof")
                print(f"stream={'yes' if stream else 'no '} {name:7s} rep {rep}: "
                      f"{1000 * cpu / N:.3f} ms CPU/request, {N / wall:,.0f} req/s {codes}",
                      flush=True)  # fmt: skip
    await app.aclose()


if __name__ == "__main__":
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, str(HERE / "servers.py"), "upstream", "--port", str(port)]
    )
    try:
        keys, run_id = bench.prepare_database(
            f"http://127.0.0.1:{port}", groups=5, keys_per_group=10
        )
        budgeted = bench.prepare_budgeted(run_id, groups=5, keys_per_group=10)
        time.sleep(1.5)
        asyncio.run(main(keys, budgeted))
    finally:
        upstream.terminate()

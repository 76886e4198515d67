"""The benchmark's fixed parts: a fast fake upstream and a bare pass-through proxy (aiohttp).

    python benchmarks/gateway/servers.py upstream --port P
    python benchmarks/gateway/servers.py proxy --port P --upstream http://127.0.0.1:U --workers W

The upstream answers `POST /responses` (the Agent API: a Response with usage and one web_search
invocation; streamed, 10 events with 4 text deltas), `POST /search` (the Search API: 10 results)
and `POST /chat/completions` like Perplexity's API (OpenAI-shaped, with `usage`
including `num_search_queries`), at once; with `"stream": true` it sends five SSE chunks, the last
carrying usage, then `[DONE]`. `POST /embeddings` answers like an OpenAI-compatible embeddings
server (vLLM): 1,024 floats and 512 prompt tokens per text. The proxy forwards the body and streams the answer back: no auth,
no metering — the practical limit of a Python pass-through.

`upstream --chunk-delay S` (default 0, which the benchmark uses) holds each chat completion open:
a stream waits S seconds before each chunk after the first, a plain answer waits as long as the
whole stream would. tests/reliability/test_spend_bound.py uses it for long concurrent streams.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
import time

import orjson
from aiohttp import ClientSession, ClientTimeout, TCPConnector, web

USAGE = {
    "prompt_tokens": 40,
    "completion_tokens": 120,
    "total_tokens": 160,
    "num_search_queries": 1,
    "search_context_size": "low",
}


def completion(model: str) -> bytes:
    return orjson.dumps(
        {
            "id": "bench",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": "The answer is 42. " * 8},
                }
            ],
            "citations": ["https://example.com/a", "https://example.com/b"],
            "usage": USAGE,
        }
    )


def chunks(model: str) -> list[bytes]:
    out = []
    for i, word in enumerate(("The ", "answer ", "is ", "42.")):
        chunk = {
            "id": "bench",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": model,
            "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}],
        }
        if i == 0:
            chunk["choices"][0]["delta"]["role"] = "assistant"
        out.append(b"data: " + orjson.dumps(chunk) + b"\n\n")
    last = {
        "id": "bench",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        "usage": USAGE,
    }
    out.append(b"data: " + orjson.dumps(last) + b"\n\n")
    out.append(b"data: [DONE]\n\n")
    return out


RESPONSES_USAGE = {
    "input_tokens": 40,
    "output_tokens": 120,
    "total_tokens": 160,
    "input_tokens_details": {"cached_tokens": 0},
    "output_tokens_details": {"reasoning_tokens": 0},
    "tool_calls_details": {"web_search": {"invocation": 1}},
}
ANSWER = "The answer is 42. " * 8


def responses_object(model: str, status: str = "completed") -> dict:
    item = {"type": "message", "id": "msg_bench", "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": ANSWER, "annotations": []}]}  # fmt: skip
    return {"id": "resp_bench", "object": "response", "created_at": int(time.time()),
            "model": model, "status": status, "output": [item] if status == "completed" else [],
            "usage": RESPONSES_USAGE if status == "completed" else None}  # fmt: skip


def responses_events(model: str) -> list[bytes]:
    """A Responses stream: created, the message item, 4 text deltas, completed with usage."""
    done = responses_object(model)
    item = done["output"][0]
    ids = {"item_id": "msg_bench", "output_index": 0, "content_index": 0}
    events = [
        ("response.created", {"response": responses_object(model, "in_progress")}),
        ("response.output_item.added", {"output_index": 0,
                                        "item": item | {"status": "in_progress", "content": []}}),
        ("response.content_part.added", {**ids, "part": {"type": "output_text", "text": ""}}),
        *(("response.output_text.delta", {**ids, "delta": w, "logprobs": []})
          for w in ("The ", "answer ", "is ", "42.")),
        ("response.output_text.done", {**ids, "text": ANSWER, "logprobs": []}),
        ("response.output_item.done", {"output_index": 0, "item": item}),
        ("response.completed", {"response": done}),
    ]  # fmt: skip
    return [
        f"event: {kind}\ndata: ".encode()
        + orjson.dumps({"type": kind, "sequence_number": n, **data})
        + b"\n\n"
        for n, (kind, data) in enumerate(events)
    ]


async def responses_handler(request: web.Request) -> web.StreamResponse:
    payload = orjson.loads(await request.read())
    model = payload.get("model", "bench")
    if not payload.get("stream"):
        return web.Response(body=orjson.dumps(responses_object(model)),
                            content_type="application/json")  # fmt: skip
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    for event in responses_events(model):
        await resp.write(event)
    await resp.write_eof()
    return resp


async def upstream_handler(request: web.Request) -> web.StreamResponse:
    payload = orjson.loads(await request.read())
    model = payload.get("model", "bench")
    delay = request.app["chunk_delay"]
    parts = chunks(model)
    if not payload.get("stream"):
        if delay:
            await asyncio.sleep(delay * (len(parts) - 1))
        return web.Response(body=completion(model), content_type="application/json")
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    for i, chunk in enumerate(parts):
        if delay and i:
            await asyncio.sleep(delay)
        await resp.write(chunk)
    await resp.write_eof()
    return resp


SEARCH_ANSWER = orjson.dumps(
    {
        "id": "srch_bench",
        "results": [
            {
                "title": f"Six times seven — result {i}",
                "url": f"https://example.com/arithmetic/{i}",
                "snippet": "Six times seven is forty-two. " * 8,
                "date": "2025-03-20",
                "last_updated": "2025-09-19",
            }
            for i in range(10)
        ],
        "server_time": None,
    }
)


async def search_handler(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=SEARCH_ANSWER, content_type="application/json")


# Embeddings (POST /embeddings, OpenAI-compatible): float vectors of EMBED_DIMENSIONS and
# EMBED_TOKENS prompt tokens per text; answers are built once per number of texts.
EMBED_DIMENSIONS = 1024
EMBED_TOKENS = 512
EMBED_VECTOR = [((i * 7919) % 2001 - 1000) / 1000 for i in range(EMBED_DIMENSIONS)]
_embed_answers: dict[int, bytes] = {}


async def embeddings_handler(request: web.Request) -> web.Response:
    payload = orjson.loads(await request.read())
    texts = payload.get("input")
    count = len(texts) if isinstance(texts, list) else 1
    if count not in _embed_answers:
        data = [
            {"object": "embedding", "index": i, "embedding": EMBED_VECTOR} for i in range(count)
        ]
        tokens = EMBED_TOKENS * count
        _embed_answers[count] = orjson.dumps(
            {"object": "list", "data": data, "model": payload.get("model", "bench"),
             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
        )  # fmt: skip
    return web.Response(body=_embed_answers[count], content_type="application/json")


def reuse_port_socket(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)
    return sock


def serve(app: web.Application, port: int) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    web.run_app(app, sock=reuse_port_socket(port), print=None, access_log=None)


def upstream_app(chunk_delay: float = 0.0) -> web.Application:
    app = web.Application()
    app["chunk_delay"] = chunk_delay
    app.router.add_post("/chat/completions", upstream_handler)
    app.router.add_post("/v1/chat/completions", upstream_handler)
    app.router.add_post("/responses", responses_handler)
    app.router.add_post("/v1/responses", responses_handler)
    app.router.add_post("/search", search_handler)
    app.router.add_post("/embeddings", embeddings_handler)
    app.router.add_post("/v1/embeddings", embeddings_handler)
    return app


def proxy_app(upstream: str) -> web.Application:
    app = web.Application()

    async def start(app: web.Application) -> None:
        app["session"] = ClientSession(
            connector=TCPConnector(limit=0), timeout=ClientTimeout(total=120)
        )

    async def stop(app: web.Application) -> None:
        await app["session"].close()

    async def handler(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        async with app["session"].post(
            f"{upstream}/chat/completions",
            data=body,
            headers={"Content-Type": "application/json"},
        ) as up:
            if up.headers.get("Content-Type", "").startswith("text/event-stream"):
                resp = web.StreamResponse(
                    status=up.status, headers={"Content-Type": "text/event-stream"}
                )
                await resp.prepare(request)
                async for data in up.content.iter_any():
                    await resp.write(data)
                await resp.write_eof()
                return resp
            return web.Response(
                status=up.status, body=await up.read(), content_type="application/json"
            )

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_post("/chat/completions", handler)
    app.router.add_post("/v1/chat/completions", handler)
    return app


def _proxy_worker(port: int, upstream: str) -> None:
    serve(proxy_app(upstream), port)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=("upstream", "proxy"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", default="")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="upstream: seconds")
    ns = parser.parse_args()
    if ns.role == "upstream":
        serve(upstream_app(ns.chunk_delay), ns.port)
        return
    procs = [
        multiprocessing.Process(target=_proxy_worker, args=(ns.port, ns.upstream), daemon=True)
        for _ in range(ns.workers)
    ]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    asyncio.set_event_loop(asyncio.new_event_loop())
    main()

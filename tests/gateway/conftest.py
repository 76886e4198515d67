"""A real gateway on loopback (uvicorn in a thread) and a controllable fake upstream."""

from __future__ import annotations

import asyncio
import base64
import functools
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import orjson
import pytest
import uvicorn
from aiohttp import web

from billing.services import ledger_post
from keys.services import api_key_create
from portal.launcher import free_port
from tests.factories import GroupFactory, MembershipFactory
from usage.models import AIModel


@dataclass
class Gateway:
    url: str
    app: object
    metering: str = "commit"

    def client(self, key: str | None = None, **kw) -> httpx.Client:  # type: ignore[no-untyped-def]
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kw)

    def chat(self, key: str | None, model: str = "sonar", **body):  # type: ignore[no-untyped-def]
        payload = {"model": model, "messages": [{"role": "user", "content": "What is up?"}]} | body
        with self.client(key) as c:
            response = c.post("/chat/completions", json=payload)
        self.settled()
        return response

    def settled(self, timeout: float = 10.0) -> None:
        """Stream mode: wait until the usage stream is empty (all settled into PostgreSQL)."""
        if self.metering != "stream":
            return
        from core.redis import get_redis
        from gateway.store import wait_settled

        wait_settled(get_redis(), timeout)


def _serve(app) -> tuple[uvicorn.Server, threading.Thread, int]:  # type: ignore[no-untyped-def]
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on", log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("gateway did not start")
        time.sleep(0.02)
    return server, thread, port


@pytest.fixture
def gateway(request, transactional_db, settings) -> Iterator[Gateway]:  # type: ignore[no-untyped-def]
    """The portal's ASGI application (gateway + Django) served by uvicorn on loopback.

    Parametrize it indirectly with "stream" for write-behind metering (GATEWAY_METERING); `chat`
    then returns once its usage is settled into PostgreSQL.
    """
    from django.core.asgi import get_asgi_application

    from core.redis import get_redis
    from gateway.asgi import wrap
    from gateway.store import DEAD_LETTERS, UNSETTLED, USAGE_STREAM
    from usage.catalogue import catalogue_sync

    metering = getattr(request, "param", "commit")
    settings.GATEWAY_METERING = metering
    settings.GATEWAY_SETTLE_INTERVAL = 0.02
    get_redis().delete(USAGE_STREAM, UNSETTLED, DEAD_LETTERS)  # nothing from earlier tests
    catalogue_sync()  # the default models (transactional tests start from empty tables)
    app = wrap(get_asgi_application())
    server, thread, port = _serve(app)
    yield Gateway(url=f"http://127.0.0.1:{port}", app=app, metering=metering)
    server.should_exit = True
    thread.join(10)


# For tests that must hold in both metering modes.
both_modes = pytest.mark.parametrize("gateway", ["commit", "stream"], indirect=True)


@dataclass
class FakeUpstream:
    url: str
    hits: list[dict] = field(default_factory=list)
    mode: str = "ok"  # ok | fail | bad | refuse | deny | break | cut
    delay: float = 0.0
    usage: dict = field(
        default_factory=lambda: {
            "prompt_tokens": 1234,
            "completion_tokens": 567,
            "num_search_queries": 2,
        }
    )


async def _chat(fake: FakeUpstream, request: web.Request) -> web.StreamResponse:
    """The fake upstream's chat completions, as its mode says."""
    body = await request.json()
    fake.hits.append(body)
    if fake.delay:
        await asyncio.sleep(fake.delay)
    if fake.mode == "fail":
        return web.json_response({"error": "boom"}, status=500)
    if fake.mode == "refuse":
        return web.json_response({"error": {"message": "max_tokens is too large"}}, status=400)
    if fake.mode == "deny":  # like OpenAI: the refused credential is quoted back
        sent = request.headers.get("Authorization", "").removeprefix("Bearer ")
        message = f"Incorrect API key provided: {sent}. Find your key at platform.example."
        return web.json_response({"error": {"message": message}}, status=401)
    if fake.mode == "bad":
        return web.Response(text="not json", content_type="application/json")
    if body.get("stream"):
        return await _chat_stream(fake, request)
    return web.json_response(
        {
            "id": "up-1",
            "object": "chat.completion",
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hi"},
                    "finish_reason": "stop",
                }
            ],
            "usage": fake.usage,
        }
    )


async def _chat_stream(fake: FakeUpstream, request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    if fake.mode == "break":  # one chunk, then the connection drops mid-stream
        await resp.write(b'data: {"choices": [{"index": 0, "delta": {"content": "Hel"}}]}\n\n')
        request.transport.close()
        return resp
    for word in ["Hello", " world"]:
        chunk = {
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"content": word}}],
        }
        await resp.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
    if fake.mode == "cut":  # the server closes cleanly, without usage or [DONE]
        await resp.write_eof()
        return resp
    final = {"object": "chat.completion.chunk", "choices": [], "usage": fake.usage}
    await resp.write(b"data: " + orjson.dumps(final) + b"\n\n")
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


async def _responses(fake: FakeUpstream, request: web.Request) -> web.StreamResponse:
    """A Responses upstream (OpenAI's shape, with its own usage and cost, which the gateway
    must not pass on). Mode "slow": the stream stops after "Hello world" for 30 s."""
    body = await request.json()
    fake.hits.append(body)
    text = "Hello world"
    item = {"type": "message", "id": "msg_up", "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}  # fmt: skip
    usage = {
        "input_tokens": 1000, "output_tokens": 50, "total_tokens": 1050,
        "input_tokens_details": {"cached_tokens": 400},
        "output_tokens_details": {"reasoning_tokens": 10},
        "cost": {"currency": "USD", "total_cost": 99.0},
    }  # fmt: skip
    done = {"id": "resp_upstream", "object": "response", "created_at": 1, "model": "up",
            "status": "completed", "output": [item], "usage": usage}  # fmt: skip
    if not body.get("stream"):
        return web.json_response(done)
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    seq = iter(range(100))

    async def event(kind: str, **data) -> None:  # type: ignore[no-untyped-def]
        payload = {"type": kind, "sequence_number": next(seq), **data}
        await resp.write(f"event: {kind}\ndata: ".encode() + orjson.dumps(payload) + b"\n\n")

    start = done | {"status": "in_progress", "output": [], "usage": None}
    await event("response.created", response=start)
    await event("response.output_item.added", output_index=0,
                item=item | {"status": "in_progress", "content": []})  # fmt: skip
    ids = {"item_id": "msg_up", "output_index": 0, "content_index": 0}
    await event("response.content_part.added", **ids,
                part={"type": "output_text", "text": "", "annotations": []})  # fmt: skip
    for word in ("Hello", " world"):
        await event("response.output_text.delta", **ids, delta=word, logprobs=[])
    if fake.mode == "slow":  # until the gateway hangs up (at most 30 s)
        for _ in range(300):
            if request.transport is None or request.transport.is_closing():
                return resp
            await asyncio.sleep(0.1)
    if fake.mode == "break":
        request.transport.close()
        return resp
    await event("response.output_text.done", **ids, text=text, logprobs=[])
    await event("response.content_part.done", **ids, part=item["content"][0])
    await event("response.output_item.done", output_index=0, item=item)
    await event("response.completed", response=done)
    await resp.write_eof()
    return resp


# The fake embeddings server's vector: OpenAI-compatible servers answer with floats.
FAKE_VECTOR = [0.5, -1.0, 0.25, *([0.0] * 125)]


async def _embeddings(fake: FakeUpstream, request: web.Request) -> web.StreamResponse:
    """An OpenAI-compatible /embeddings (vLLM, llama.cpp, TEI): float vectors and usage.
    Modes "fail" (500), "bad" (not JSON), "short" (one vector too few)."""
    body = await request.json()
    fake.hits.append(body)
    if fake.mode == "fail":
        return web.json_response({"error": "boom"}, status=500)
    if fake.mode == "bad":
        return web.Response(text="not json", content_type="application/json")
    texts = [body["input"]] if isinstance(body["input"], str) else body["input"]
    if fake.mode == "short":
        texts = texts[1:]
    data = [{"object": "embedding", "index": i, "embedding": FAKE_VECTOR}
            for i in range(len(texts))][::-1]  # fmt: skip
    return web.json_response({"object": "list", "data": data, "model": body["model"],
                              "usage": {"prompt_tokens": fake.usage["prompt_tokens"],
                                        "total_tokens": fake.usage["prompt_tokens"]}})  # fmt: skip


async def _contextualized(fake: FakeUpstream, request: web.Request) -> web.StreamResponse:
    """Perplexity's /contextualizedembeddings: base64_int8 vectors (its default) and usage."""
    body = await request.json()
    fake.hits.append(body)
    vector = base64.b64encode(bytes([1, 2, 255, 127]) + bytes(124)).decode()  # [1, 2, -1, 127]
    data = [
        {"object": "list", "index": d,
         "data": [{"object": "embedding", "index": c, "embedding": vector}
                  for c in range(len(chunks))]}
        for d, chunks in enumerate(body["input"])
    ]  # fmt: skip
    usage = {"prompt_tokens": fake.usage["prompt_tokens"], "total_tokens": 0,
             "cost": {"currency": "USD", "input_cost": 99.0, "total_cost": 99.0}}  # fmt: skip
    return web.json_response({"object": "list", "data": data, "model": body["model"],
                              "usage": usage})  # fmt: skip


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    """An OpenAI-shaped model server on loopback whose behaviour a test can switch."""
    port = free_port()
    fake = FakeUpstream(url=f"http://127.0.0.1:{port}")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", functools.partial(_chat, fake))
    app.router.add_post("/v1/responses", functools.partial(_responses, fake))
    app.router.add_post("/v1/embeddings", functools.partial(_embeddings, fake))
    app.router.add_post("/v1/contextualizedembeddings", functools.partial(_contextualized, fake))
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None)

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        loop.run_forever()

    threading.Thread(target=run, daemon=True).start()
    time.sleep(0.1)
    yield fake
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(5)
    loop.call_soon_threadsafe(loop.stop)


@pytest.fixture
def funded_group(transactional_db):  # type: ignore[no-untyped-def]
    group = GroupFactory()
    admin = MembershipFactory(group=group, role="admin").user
    ledger_post(
        group=group, amount_micros=100_000_000, kind="purchase", reference=f"pi_seed_{group.pk}"
    )
    group.admin = admin
    return group


@pytest.fixture
def api_key(funded_group) -> str:  # type: ignore[no-untyped-def]
    return api_key_create(group=funded_group, name="Server").secret


@pytest.fixture
def upstream_model(transactional_db, upstream):  # type: ignore[no-untyped-def]
    """A model whose upstream is the fake server, priced like sonar-pro plus searches."""
    return AIModel.objects.create(
        name="fake-pro",
        upstream_base_url=f"{upstream.url}/v1",
        upstream_model="real-name",
        input_per_m=3_000_000,
        output_per_m=15_000_000,
        search_per_k=5_000_000,
        request_low_per_k=6_000_000,
        request_medium_per_k=10_000_000,
        request_high_per_k=14_000_000,
        rate_limit_rpm=1000,
    )

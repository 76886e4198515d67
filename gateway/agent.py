"""The Agent API on the gateway's fast path: `POST /v1/responses` (and `/v1/agent`), retrieve, cancel.

Same key check, admission, exactly-once metering and error shapes as chat completions
(gateway/app.py); the request, Response and event shapes are gateway/responses/.

Upstreams (the model's `upstream_api`):
- "responses": proxied. The body goes to `{base_url}/responses`; a stream is passed on event by
  event. The upstream's `usage` gives the counts only: cost is recomputed from our prices and the
  upstream's own cost never reaches the client (it is dropped from every event that carries it).
- "chat_completions": translated both ways (gateway/responses/translate.py), streams included.
  Built-in tools cannot run there: they are refused with 400 naming the tool.
The simulator (`simulator://`) answers either way.

Tool invocations: the upstream's `usage.tool_calls_details` when it has one, otherwise one per
`*_call` / result item (gateway/responses/tools.py); each priced at the catalogue's fee.

Stored responses (`store`, default true) live in Redis for STORE_SECONDS (30 days, OpenAI's
retention): `portal:response:<id>` holds the owning group, the status, the response and the
conversation so far (for `previous_response_id`). Redis, not PostgreSQL: the fast path already
holds a Redis connection, the write runs beside the metering write (no added latency), and a
stored response is a convenience copy of an answer, not a financial record — the money is in the
usage event and its ledger debit, which are in PostgreSQL either way. A response of another group
is a 404, exactly like one that does not exist.

Background (`background: true`): the 200 reply carries the `queued` response; the request then
runs in this worker (streamed from the upstream, so it can be stopped) and its result is stored.
Cancel sets `portal:response:<id>:cancel`; the worker running it stops within CANCEL_POLL seconds
(at once when the cancel reaches that worker). The rule for a cancelled (or broken-off) response:
it is metered for what was produced before it stopped — the output text delivered so far at
⌈characters ÷ 4⌉ tokens (the chat rule, `delivered_tokens`), the tool runs whose result items were
complete, and input tokens only if the upstream had reported them — and its stored status is
`cancelled` with that usage and cost. Cancelling a response that is no longer running changes
nothing and answers 400.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from core.api_errors import GatewayError, invalid_request, unavailable
from gateway import attribution, estimates, metrics, simulator
from gateway.catalogue import ModelInfo, PresetInfo
from gateway.http import (
    SSE,
    Receive,
    Scope,
    Send,
    method_not_allowed,
    model_not_found,
    respond,
    upstream_error,
)
from gateway.keycache import KeyInfo
from gateway.responses.build import (
    EventWriter,
    TokenUsage,
    new_id,
    response_object,
    usage_object,
)
from gateway.responses.request import INPUT_ITEM_TYPES, ResponsesRequest, Tool, parse_request
from gateway.responses.tools import invocations_from_items, tool_invocations
from gateway.responses.translate import (
    ChatStreamTranslator,
    chat_request,
    response_from_chat,
    tokens_from_chat,
)
from gateway.restrictions import check_tools
from usage.metrics import COUNTS
from usage.pricing import AgentCost, AgentPrices, AgentUsage, agent_cost

if TYPE_CHECKING:
    from gateway.app import GatewayApp
    from gateway.store import Store

logger = logging.getLogger("portal.gateway")

CREATE_PATHS = frozenset({"/v1/responses", "/v1/agent"})
ROOTS = ("/v1/responses/", "/v1/agent/")
AGENT = "agent"  # usage.metrics.APIS: the Agent API
CHAT = "chat"
CHAT_UPSTREAM = "chat_completions"  # usage.models.UpstreamAPI
STORE_SECONDS = 30 * 86400
CANCEL_POLL = 0.25
CHARS_PER_TOKEN = 4
LIFECYCLE = frozenset(
    {
        "response.created",
        "response.queued",
        "response.in_progress",
        "response.completed",
        "response.incomplete",
        "response.failed",
    }
)
TERMINAL = frozenset({"response.completed", "response.incomplete"})
NO_COUNTS = dict.fromkeys(COUNTS, 0)


def stored_key(response_id: str) -> str:
    return f"portal:response:{response_id}"


def cancel_key(response_id: str) -> str:
    return f"portal:response:{response_id}:cancel"


def sold_on_chat(model: ModelInfo) -> bool:
    return model.serves(CHAT)


def route(path: str, method: str) -> tuple[str, str | None] | None:
    """("create" | "retrieve" | "cancel", response id) for an Agent API path, else None.

    A wrong method on an Agent API path is a 405; any other path under /v1/responses is a 404.
    """
    if path in CREATE_PATHS:
        return ("create", None) if method == "POST" else ("method", None)
    for root in ROOTS:
        if path.startswith(root):
            rest = path[len(root) :]
            rid, _, action = rest.partition("/")
            if not rid:
                return None
            if action == "" and "/" not in rest:
                return ("retrieve", rid) if method in ("GET", "HEAD") else ("method", None)
            if action == "cancel":
                return ("cancel", rid) if method == "POST" else ("method", None)
            return None
    return None


@dataclass
class Call:
    """One Agent API request on its way through the gateway."""

    key: KeyInfo
    model: ModelInfo
    request: ResponsesRequest
    request_id: str
    response_id: str
    started: float
    history: list[dict[str, Any]] = field(default_factory=list)
    created_at: int = field(default_factory=lambda: int(time.time()))
    metering: bool = False  # metering was attempted: never charge it again
    text_chars: int = 0  # output text delivered so far (for a response that stops early)
    deltas: list[bytes] = field(default_factory=list)  # text deltas passed on as they came
    last_raw: bytes | None = None  # the last frame passed on unparsed (its sequence_number)
    done_items: list[dict[str, Any]] = field(default_factory=list)
    done_frames: list[bytes] = field(default_factory=list)  # `output_item.done`, parsed on a stop
    reported: TokenUsage | None = None  # usage the upstream reported before stopping
    prices: AgentPrices | None = None  # the catalogue's, as of this request's admission
    partial: AgentCost | None = None  # what a response that stopped early was charged

    def completed_items(self) -> list[dict[str, Any]]:
        """The output items finished so far (the passed-on frames parsed only now)."""
        items = list(self.done_items)
        for frame in self.done_frames:
            _, data = parse_frame(frame)
            if data is not None and isinstance(data.get("item"), dict):
                items.append(data["item"])
        return items

    def delivered_chars(self) -> int:
        """Output text delivered so far: the counted chars and the raw deltas, parsed only now."""
        chars = self.text_chars
        for frame in self.deltas:
            _, data = parse_frame(frame)
            if data is not None and isinstance(data.get("delta"), str):
                chars += len(data["delta"])
        return chars

    @property
    def translated(self) -> bool:
        return self.model.upstream_api == CHAT_UPSTREAM

    @property
    def simulated(self) -> bool:
        return self.model.base_url.startswith("simulator:")


class Stopped(Exception):
    """A background response was cancelled."""


class AgentAPI:
    def __init__(self, app: GatewayApp) -> None:
        self.app = app
        self.running: dict[str, asyncio.Task[None]] = {}
        self.calls: dict[str, Call] = {}

    async def aclose(self) -> None:
        for task in list(self.running.values()):
            task.cancel()
        if self.running:
            await asyncio.wait(list(self.running.values()), timeout=5)

    async def handle(
        self, route_: tuple[str, str | None], scope: Scope, receive: Receive, send: Send,
        key: KeyInfo, request_id: str, headers: list,
    ) -> int:  # fmt: skip
        action, rid = route_
        if action == "method":
            raise method_not_allowed(scope)
        store = await self.app.store()
        if action == "retrieve":
            assert rid is not None
            record = await self.load(store, key, rid)
            await respond(send, 200, orjson.dumps(record["response"]), headers)
            return 200
        if action == "cancel":
            assert rid is not None
            return await self.cancel(store, send, key, rid, headers)
        return await self.create(scope, receive, send, store, key, request_id, headers)

    # --- create ---------------------------------------------------------------------------

    async def create(
        self, scope: Scope, receive: Receive, send: Send, store: Store, key: KeyInfo,
        request_id: str, headers: list,
    ) -> int:  # fmt: skip
        request = parse_request(await self.app.read_body(scope, receive))
        attribution.with_body(request.raw, metadata=True)  # `user`, `metadata` pairs as tags
        if request.background and request.stream:
            raise invalid_request(
                "“background” and “stream” cannot be combined here: a background response is "
                "not streamed (its events are not kept to resume a stream). Send “background”: "
                "true without “stream” and poll GET /v1/responses/{id} until its status is "
                "completed (POST /v1/responses/{id}/cancel stops it), or stream it without "
                "“background”.",
                param="background",
            )
        models = await store.models()
        catalogue = store.catalogue
        model, request = self.choose(models, catalogue.presets, request)
        for i, tool in enumerate(request.tools):
            if tool.type not in catalogue.tool_fees:
                raise invalid_request(
                    f"The tool “{tool.type}” is not available on this API.",
                    param=f"tools[{i}].type",
                )
        check_tools(key, [tool.type for tool in request.tools])  # the key's allowed tools
        scope["portal.model"] = model.name
        history: list[dict[str, Any]] = []
        if request.previous_response_id:
            previous = await self.load(store, key, request.previous_response_id,
                                       param="previous_response_id")  # fmt: skip
            history = list(previous.get("conversation") or [])
        if model.upstream_api == CHAT_UPSTREAM:
            chat_request(request, model.upstream_model)  # refuses built-in tools (400) first
        prices = catalogue.agent_prices(model)
        estimate = estimates.agent(prices, request.raw, [t.type for t in request.tools], history)
        await self.app.admit(store, key, model, headers, family="agent", request_id=request_id,
                             estimate=estimate)  # fmt: skip
        call = Call(key, model, request, request_id, new_id("resp"), time.perf_counter(), history,
                    prices=prices)  # fmt: skip
        if request.background:
            return await self.start_background(store, send, call, headers)
        if request.stream:
            return await self.stream(store, send, call, headers)
        encoded = await self.complete(store, call)
        await respond(send, 200, encoded, headers)
        return 200

    def choose(
        self, models: dict[str, ModelInfo], presets: dict[str, PresetInfo],
        request: ResponsesRequest,
    ) -> tuple[ModelInfo, ResponsesRequest]:  # fmt: skip
        """The first enabled Agent API model of `model`/`models` (or of the effort preset)."""
        names = list(request.models)
        if request.effort is not None:
            preset = presets.get(request.effort)
            if preset is None:
                raise invalid_request(
                    f"Unknown effort “{request.effort}”.",
                    param="effort" if request.raw.get("effort") else "preset",
                )
            if not names:
                names = [preset.model]
            request = apply_preset(request, preset)
        for name in names:
            model = models.get(name)
            if model is not None and model.serves(AGENT):
                return model, request
        if len(names) == 1:
            raise model_not_found(names[0])
        raise GatewayError(
            404, "model_not_found",
            f"None of the models {', '.join(names)} exists or is enabled for the Agent API.",
            type_="invalid_request_error", param="models",
        )  # fmt: skip

    # --- upstream bodies --------------------------------------------------------------------

    def responses_body(self, call: Call, *, stream: bool) -> dict[str, Any]:
        """The body for a Responses upstream: ours, with its model name and the history inlined."""
        body = {k: v for k, v in call.request.raw.items()
                if k not in ("models", "effort", "preset", "background", "store")}  # fmt: skip
        body["model"] = call.model.upstream_model
        body["stream"] = stream
        if call.request.max_output_tokens is not None:
            body["max_output_tokens"] = call.request.max_output_tokens
        if call.request.tools:
            body["tools"] = list(call.request.raw.get("tools") or []) or [
                {"type": t.type, **t.options} for t in call.request.tools
            ]
        if call.history:
            current = call.request.input
            items = [{"type": "message", "role": "user", "content": current}] if isinstance(
                current, str) else list(current)  # fmt: skip
            body["input"] = [*call.history, *items]
            if not call.simulated:  # the upstream does not know our ids
                body.pop("previous_response_id", None)
        return body

    def chat_body(self, call: Call, *, stream: bool) -> dict[str, Any]:
        body = chat_request(call.request, call.model.upstream_model, history=call.history)
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        else:
            body.pop("stream", None)
            body.pop("stream_options", None)
        return body

    async def fetch(self, call: Call, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if call.simulated:
            if path == "/responses":
                raw = simulator.agent_complete(call.model.name, body)
            else:
                raw = simulator.complete(call.model.name, body)
        else:
            asked = time.perf_counter()
            async with self.app.upstream(
                call.model, body, call.request_id, stream=False, path=path,
                body=orjson.dumps(body),
            ) as resp:  # fmt: skip
                raw = await resp.read()
            metrics.UPSTREAM.labels(call.model.name).observe(time.perf_counter() - asked)
        try:
            data = orjson.loads(raw)
            if not isinstance(data, dict) or not isinstance(data.get("usage"), dict):
                raise TypeError
        except (orjson.JSONDecodeError, TypeError):
            raise upstream_error("The model server sent a response without usage.") from None
        return data

    # --- non-streamed -----------------------------------------------------------------------

    async def complete(self, store: Store, call: Call) -> bytes:
        """The finished response, metered (and stored), serialised once for reply and store."""
        if call.translated:
            completion = await self.fetch(call, "/chat/completions", self.chat_body(call,
                                          stream=False))  # fmt: skip
            tokens = tokens_from_chat(completion.get("usage"))
            invocations = invocations_from_items(
                {"type": "function_call"} for c in _tool_calls(completion)
            )
            cost = self.price(call, tokens, invocations)
            final = response_from_chat(
                completion, request=call.request, response_id=call.response_id,
                model=call.model.name, cost=cost, created_at=call.created_at,
            )  # fmt: skip
        else:
            final = await self.fetch(call, "/responses", self.responses_body(call, stream=False))
            tokens = tokens_from_responses(final["usage"])
            cost = self.price(call, tokens, tool_invocations(final))
            final = self.ours(call, final, tokens, cost)
        encoded = orjson.dumps(final)
        await self.finish(store, call, final, tokens, cost, encoded=encoded)
        return encoded

    def ours(
        self, call: Call, response: dict[str, Any], tokens: TokenUsage, cost: AgentCost
    ) -> dict[str, Any]:
        """The upstream's response with our id, model name, usage and cost."""
        return response | {
            "id": call.response_id,
            "model": call.model.name,
            "created_at": call.created_at,
            "usage": usage_object(tokens, cost),
            "previous_response_id": call.request.previous_response_id,
            "store": call.request.store,
            "background": call.request.background,
        }

    async def finish(
        self, store: Store, call: Call, final: dict[str, Any], tokens: TokenUsage,
        cost: AgentCost, *, streamed: bool = False, encoded: bytes | None = None,
    ) -> None:  # fmt: skip
        """Meter the response and, if asked, store it — both before the client's last byte.

        `encoded` is `final` serialised (it is stored as it is, not serialised again).
        """
        call.metering = True
        if call.request.background:  # the stored copy is its answer: charged first
            await self.meter(store, call, tokens, cost, streamed)
            await self.save(store, call, final, encoded=encoded)
            return
        if not call.request.store:
            await self.meter(store, call, tokens, cost, streamed)
            return
        # Both at once: the copy is queued (batched with other workers' copies), then metered.
        saved = self.saving(store, call, final, encoded=encoded)
        try:
            await self.meter(store, call, tokens, cost, streamed)
        except BaseException:
            saved.add_done_callback(_consume)
            raise
        await saved

    # --- streamed ---------------------------------------------------------------------------

    async def stream(self, store: Store, send: Send, call: Call, headers: list) -> int:
        frames = self.frames(call)
        asked = time.perf_counter()
        try:
            first = await anext(frames)
        except StopAsyncIteration:
            raise upstream_error("The model server sent an empty stream.") from None
        metrics.UPSTREAM.labels(call.model.name).observe(time.perf_counter() - asked)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", SSE), (b"cache-control", b"no-cache"), *headers],
            }
        )

        async def emit(event: bytes) -> None:
            await send({"type": "http.response.body", "body": event, "more_body": True})

        writer = EventWriter()
        try:
            await self.run(store, call, frames, first, emit, writer)
        except Exception as exc:  # the response has started: end it with an `error` event
            err = exc if isinstance(exc, GatewayError) else unavailable()
            logger.warning("agent stream ended early: %s", exc,
                           extra={"request_id": call.request_id})  # fmt: skip
            message = err.message
            if not call.metering:
                charged = await self.meter_partial(store, call)
                if charged is not None:
                    message = (
                        "The model server broke off the answer. You were charged only for the "
                        f"part you received (${charged / 1_000_000:.6f})."
                    )
            if call.last_raw is not None:
                _, last = parse_frame(call.last_raw)
                if last is not None:
                    writer.sequence = max(writer.sequence, _int(last.get("sequence_number")) + 1)
            snapshot = response_object(
                response_id=call.response_id, model=call.model.name, request=call.request,
                status="failed", created_at=call.created_at,
            )  # fmt: skip
            for frame in writer.failed(snapshot, err.code, message):
                await emit(frame)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return err.status
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return 200

    def frames(self, call: Call) -> AsyncIterator[Any]:
        """The upstream's events: one by one when translated, in batches when proxied."""
        if call.translated:
            body = self.chat_body(call, stream=True)
            return self.app.events(call.model, body, call.request_id, body=orjson.dumps(body))
        return self.batches(call)

    async def batches(self, call: Call) -> AsyncIterator[list[bytes]]:
        """A Responses upstream's whole SSE events, a list per read (one send to the client)."""
        body = self.responses_body(call, stream=True)
        if call.simulated:
            for event in simulator.agent_stream(call.model.name, body):
                yield [event]
            return
        async with self.app.upstream(
            call.model, body, call.request_id, stream=True, path="/responses",
            body=orjson.dumps(body),
        ) as resp:  # fmt: skip
            buffer = b""
            async for data in resp.content.iter_any():
                # With what else has arrived by now: one send for the events that came together
                # (iter_any gives one network read at a time).
                buffer += data + resp.content.read_nowait()
                if b"\n\n" not in buffer:
                    continue
                *events, buffer = buffer.split(b"\n\n")
                batch = [e.strip(b"\r\n") + b"\n\n" for e in events if e.strip()]
                if batch:
                    yield batch
            if buffer.strip():
                yield [buffer.strip(b"\r\n") + b"\n\n"]

    async def run(
        self, store: Store, call: Call, frames: AsyncIterator[Any], first: Any,
        emit: Callable[[bytes], Awaitable[None]], writer: EventWriter,
    ) -> dict[str, Any]:  # fmt: skip
        """Relay (or translate) the stream, meter it, emit `response.completed`; the response.

        `frames`/`first`: chat chunks (bytes) for a translated upstream, batches of Responses
        events (lists of bytes, `batches`) for a proxied one."""
        if call.translated:
            return await self.run_translated(store, call, frames, first, emit, writer)
        return await self.run_proxied(store, call, frames, first, emit, writer)

    async def run_proxied(
        self, store: Store, call: Call, batches: AsyncIterator[list[bytes]],
        first: list[bytes] | None, emit: Callable[[bytes], Awaitable[None]], writer: EventWriter,
    ) -> dict[str, Any]:  # fmt: skip
        """Pass the upstream's events on, a batch per send; parse only those that change.

        Text deltas and the other content events go out as they came (the deltas are kept, and
        parsed only if the stream breaks, to charge the delivered text); the lifecycle events
        get our id and model, and lose the upstream's usage and cost.
        """
        batch = first if first is not None else await anext(batches, None)
        while batch is not None:
            out: list[bytes] = []
            for frame in batch:
                kind = _raw_kind(frame)
                if kind is not None:  # passed on as it is
                    if kind == b"response.output_text.delta":
                        call.deltas.append(frame)
                    elif kind == b"response.output_item.done":
                        call.done_frames.append(frame)
                    call.last_raw = frame
                    out.append(frame)
                    continue
                kind_, data = parse_frame(frame)
                if data is None:  # a comment, keep-alive or [DONE]
                    continue
                writer.sequence = max(writer.sequence, _int(data.get("sequence_number")) + 1)
                if kind_ in TERMINAL and isinstance(data.get("response"), dict):
                    if out:
                        await emit(b"".join(out))
                    return await self.complete_stream(store, call, kind_, data, emit)
                if kind_ in ("error", "response.failed"):
                    if out:
                        await emit(b"".join(out))
                    raise upstream_error("The model server failed while answering.")
                if kind_ in LIFECYCLE and isinstance(data.get("response"), dict):
                    data["response"] = data["response"] | {
                        "id": call.response_id, "model": call.model.name,
                        "created_at": call.created_at, "usage": None,
                    }  # fmt: skip
                    frame = reframe(kind_, data)
                elif (
                    "usage" in data
                ):  # e.g. Perplexity's reasoning events: never the upstream's cost
                    usage = data.pop("usage")
                    if isinstance(usage, dict):
                        call.reported = tokens_from_responses(usage)
                    frame = reframe(kind_, data)
                elif kind_ == "response.output_text.delta" and isinstance(data.get("delta"), str):
                    call.text_chars += len(data["delta"])
                out.append(frame)
            if out:
                await emit(b"".join(out))
            batch = await anext(batches, None)
        raise upstream_error("The model server ended the stream early.")

    async def complete_stream(
        self, store: Store, call: Call, kind: str, data: dict[str, Any],
        emit: Callable[[bytes], Awaitable[None]],
    ) -> dict[str, Any]:  # fmt: skip
        """The upstream's last event: price and meter it, then send it with ours."""
        final = data.pop("response")
        tokens = tokens_from_responses(final.get("usage") or {})
        cost = self.price(call, tokens, tool_invocations(final))
        final = self.ours(call, final, tokens, cost)
        encoded = orjson.dumps(final)
        await self.finish(store, call, final, tokens, cost, streamed=True, encoded=encoded)
        head = orjson.dumps(data)
        body = head[:-1] + (b',"response":' if len(head) > 2 else b'"response":') + encoded + b"}"
        await emit(b"event: " + kind.encode() + b"\ndata: " + body + b"\n\n")
        return final

    async def run_translated(
        self, store: Store, call: Call, frames: AsyncIterator[bytes], first: bytes | None,
        emit: Callable[[bytes], Awaitable[None]], writer: EventWriter,
    ) -> dict[str, Any]:  # fmt: skip
        translator = ChatStreamTranslator(
            call.request, response_id=call.response_id, model=call.model.name,
            created_at=call.created_at,
        )  # fmt: skip
        translator.writer = writer
        for event in translator.start():
            await emit(event)
        frame = first if first is not None else await anext(frames, None)
        ended = False
        while frame is not None:
            if frame.startswith(b"data: [DONE]"):
                ended = True
                break
            try:
                events = translator.feed_sse(frame)
            except (orjson.JSONDecodeError, AttributeError, TypeError):
                raise upstream_error("The model server sent a malformed chunk.") from None
            call.text_chars = _translated_chars(translator)
            call.done_items = [i for i in translator.output if i.get("status") == "completed"]
            for event in events:
                await emit(event)
            frame = await anext(frames, None)
        if translator.usage is None and not ended:
            raise upstream_error("The model server ended the stream early.")
        tokens = translator.usage or TokenUsage()
        calls = {"function": sum(1 for i in translator.output if i["type"] == "function_call")}
        cost = self.price(call, tokens, {k: v for k, v in calls.items() if v})
        events = translator.finish(cost)
        final = translator.response
        await self.finish(store, call, final, tokens, cost, streamed=True)
        for event in events:
            await emit(event)
        return final

    async def meter_partial(self, store: Store, call: Call) -> int | None:
        """Charge a response that stopped early for what it produced (see the module docstring)."""
        call.metering = True
        reported = call.reported or TokenUsage()
        tokens = TokenUsage(
            input_tokens=reported.input_tokens,
            output_tokens=max(
                reported.output_tokens, -(-call.delivered_chars() // CHARS_PER_TOKEN)
            ),
            cache_read_tokens=reported.cache_read_tokens,
            cache_creation_tokens=reported.cache_creation_tokens,
        )
        cost = self.price(call, tokens, invocations_from_items(call.completed_items()))
        try:
            await self.meter(store, call, tokens, cost, True)
        except Exception as failed:  # not recorded, so not charged
            logger.warning("partial response not metered: %s", failed,
                           extra={"request_id": call.request_id})  # fmt: skip
            return None
        call.reported, call.partial = tokens, cost
        return cost.total

    # --- background -------------------------------------------------------------------------

    async def start_background(self, store: Store, send: Send, call: Call, headers: list) -> int:
        queued = response_object(
            response_id=call.response_id, model=call.model.name, request=call.request,
            status="queued", created_at=call.created_at,
        )  # fmt: skip
        await self.save(store, call, queued, running=True)
        store.admissions.detach(call.request_id)  # given back when the run ends (background())
        task = asyncio.ensure_future(self.background(store, call))
        self.running[call.response_id] = task
        self.calls[call.response_id] = call
        task.add_done_callback(lambda _: self._forget(call.response_id))
        await respond(send, 200, orjson.dumps(queued), headers)
        return 200

    def _forget(self, response_id: str) -> None:
        self.running.pop(response_id, None)
        self.calls.pop(response_id, None)

    async def background(self, store: Store, call: Call) -> None:
        try:
            await self._background(store, call)
        finally:  # metered (its reservation ended then) or not: nothing is held after the run
            store.admissions.release(call.request_id, force=True)

    async def _background(self, store: Store, call: Call) -> None:
        async def emit(event: bytes) -> None:
            return None

        runner = asyncio.ensure_future(
            self.run(store, call, self.frames(call), None, emit, EventWriter())
        )
        watcher = asyncio.ensure_future(self.watch(store, call, runner))
        status, error = "failed", None
        try:
            await runner
            return
        except asyncio.CancelledError:
            status = "cancelled"
        except Exception as exc:
            err = exc if isinstance(exc, GatewayError) else unavailable()
            error = {"code": err.code, "message": err.message}
            logger.warning("background response failed: %s", exc,
                           extra={"request_id": call.request_id})  # fmt: skip
        finally:
            watcher.cancel()
        usage = None
        charged = None if call.metering else await self.meter_partial(store, call)
        if charged is not None and call.reported is not None:
            usage = usage_object(call.reported, call.partial)
        final = response_object(
            response_id=call.response_id, model=call.model.name, request=call.request,
            status=status, output=call.completed_items(), usage=usage, created_at=call.created_at,
            completed_at=int(time.time()), error=error,
        )  # fmt: skip
        await self.save(store, call, final)

    async def watch(self, store: Store, call: Call, runner: asyncio.Task[Any]) -> None:
        """Cancel the runner when `cancel` was asked on any worker (unless it is metering)."""
        while not runner.done():
            await asyncio.sleep(CANCEL_POLL)
            with contextlib.suppress(Exception):
                if await store.redis.exists(cancel_key(call.response_id)) and not call.metering:
                    runner.cancel()
                    return

    async def cancel(self, store: Store, send: Send, key: KeyInfo, rid: str, headers: list) -> int:
        record = await self.load(store, key, rid)
        if not record.get("running"):
            raise invalid_request(
                f"The response “{rid}” is not running in the background (its status is "
                f"{record['response'].get('status')}); only a queued or in-progress background "
                "response can be cancelled.",
                param="response_id",
            )
        await store.redis.set(cancel_key(rid), b"1", ex=STORE_SECONDS)
        call, task = self.calls.get(rid), self.running.get(rid)
        if call is not None and task is not None and not call.metering:
            task.cancel()  # it runs here: stop it now (other workers poll the flag)
        body = record["response"] | {"response_id": rid, "status": "cancelling"}
        await respond(send, 200, orjson.dumps(body), headers)
        return 200

    # --- storage ----------------------------------------------------------------------------

    async def save(
        self,
        store: Store,
        call: Call,
        response: dict[str, Any],
        *,
        running: bool = False,
        encoded: bytes | None = None,
    ) -> None:
        await self.saving(store, call, response, running=running, encoded=encoded)

    def saving(
        self,
        store: Store,
        call: Call,
        response: dict[str, Any],
        *,
        running: bool = False,
        encoded: bytes | None = None,
    ) -> asyncio.Future[Any]:
        """Queue the stored copy's write (see Store.put); the future is done when written."""
        current = call.request.input
        items = (
            [{"type": "message", "role": "user", "content": current}]
            if isinstance(current, str)
            else list(current)
        )
        # The turn as input for the next one: items a request may carry (tool results such as
        # web_search_call or search_results are the upstream's to redo, not input).
        output = [i for i in response.get("output", []) if i.get("type") in INPUT_ITEM_TYPES]
        conversation = [*call.history, *items, *output]
        # {"group_id", "running", "conversation", "response"}, with the response as serialised
        head = orjson.dumps(
            {"group_id": call.key.group_id, "running": running, "conversation": conversation}
        )
        body = encoded if encoded is not None else orjson.dumps(response)
        record = head[:-1] + b',"response":' + body + b"}"
        return store.put(stored_key(call.response_id), record, STORE_SECONDS)

    async def load(
        self, store: Store, key: KeyInfo, rid: str, param: str = "response_id"
    ) -> dict[str, Any]:
        raw = await store.redis.get(stored_key(rid))
        record = orjson.loads(raw) if raw else None
        if not isinstance(record, dict) or record.get("group_id") != key.group_id:
            raise GatewayError(
                404, "response_not_found",
                f"No stored response “{rid}” (it may have expired, or was not stored).",
                type_="invalid_request_error", param=param,
            )  # fmt: skip
        return record

    # --- pricing and metering -----------------------------------------------------------------

    def price(self, call: Call, tokens: TokenUsage, invocations: dict[str, int]) -> AgentCost:
        assert call.prices is not None
        return price(call.prices, tokens, invocations)

    async def meter(
        self, store: Store, call: Call, tokens: TokenUsage, cost: AgentCost, streamed: bool
    ) -> None:
        await store.meter(call.key, meter_params(call, tokens, cost, streamed))


# --- helpers ----------------------------------------------------------------------------------


def price(prices: AgentPrices, tokens: TokenUsage, invocations: dict[str, int]) -> AgentCost:
    """Our cost of a response, from the catalogue's prices (never the upstream's).

    A tool the upstream reports that has no price in the catalogue (it was not asked for: asked
    tools are checked at admission) is not charged; it is logged for the operator.
    """
    unknown = [t for t, n in invocations.items() if n and t not in prices.tool_fees_per_k]
    if unknown:
        logger.warning("upstream reported unpriced tools %s: not charged", unknown)
    return agent_cost(prices, agent_usage(tokens, invocations, prices))


def agent_usage(
    tokens: TokenUsage, invocations: dict[str, int], prices: AgentPrices | None = None
) -> AgentUsage:
    return AgentUsage(
        input_tokens=tokens.input_tokens,
        output_tokens=tokens.output_tokens,
        cache_read_tokens=tokens.cache_read_tokens,
        cache_write_tokens=tokens.cache_creation_tokens,
        tool_calls={
            t: n for t, n in invocations.items()
            if n and (prices is None or t in prices.tool_fees_per_k)
        },
    )  # fmt: skip


def meter_params(call: Call, tokens: TokenUsage, cost: AgentCost, streamed: bool) -> dict[str, Any]:
    """The metered request (gateway/metering.py METER_COLUMNS) of an Agent API response."""
    return {
        "request_id": call.request_id,
        "group_id": call.key.group_id,
        "key_id": call.key.id,
        "model_id": call.model.id,
        "api": AGENT,
        **NO_COUNTS,  # the Agent API counts tokens (as AgentUsage.as_usage does) and no more
        "prompt_tokens": tokens.input_tokens,
        "completion_tokens": tokens.output_tokens,
        "cache_read_tokens": tokens.cache_read_tokens,
        "cache_write_tokens": tokens.cache_creation_tokens,
        "context_size": "low",
        **cost.parts(),
        "tool_calls": cost.tool_calls_json(),
        "total": cost.total,
        "streamed": streamed,
        "latency_ms": int((time.perf_counter() - call.started) * 1000),
        "created": time.time(),
    }


def apply_preset(request: ResponsesRequest, preset: PresetInfo) -> ResponsesRequest:
    """The preset's tools (when the request names none) and output limit (when it sets none)."""
    settings = preset.settings
    changes: dict[str, Any] = {}
    raw = dict(request.raw)
    if not request.tools and settings.get("tools"):
        raw["tools"] = [{"type": t} for t in settings["tools"]]
        changes["tools"] = tuple(Tool(t) for t in settings["tools"])
    limit = settings.get("max_output_tokens")
    if request.max_output_tokens is None and isinstance(limit, int):
        changes["max_output_tokens"] = limit
        raw["max_output_tokens"] = limit
    if not changes:
        return request
    return dataclasses.replace(request, raw=raw, **changes)


def tokens_from_responses(usage: dict[str, Any]) -> TokenUsage:
    """Token counts of a Responses `usage` (openai's and Perplexity's vocabulary alike)."""
    details = usage.get("input_tokens_details")
    details = details if isinstance(details, dict) else {}
    output = usage.get("output_tokens_details")
    output = output if isinstance(output, dict) else {}
    read = details.get("cache_read_input_tokens", details.get("cached_tokens"))
    written = details.get("cache_creation_input_tokens", details.get("cache_write_tokens"))
    return TokenUsage(
        input_tokens=_int(usage.get("input_tokens")),
        output_tokens=_int(usage.get("output_tokens")),
        cache_read_tokens=_int(read),
        cache_creation_tokens=_int(written),
        reasoning_tokens=_int(output.get("reasoning_tokens")),
    )


def _consume(future: asyncio.Future[Any]) -> None:
    """Retrieve a result nobody awaits (no "exception was never retrieved" warning)."""
    if not future.cancelled():
        future.exception()


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _tool_calls(completion: dict[str, Any]) -> list[Any]:
    choices = completion.get("choices") or [{}]
    message = (choices[0] or {}).get("message") or {}
    return list(message.get("tool_calls") or [])


def _translated_chars(translator: ChatStreamTranslator) -> int:
    chars = len(translator.text["text"]) if translator.text is not None else 0
    for item in translator.output:
        if item.get("type") == "message":
            chars += sum(len(p.get("text", "")) for p in item.get("content") or [])
    return chars


def parse_frame(frame: bytes) -> tuple[str, dict[str, Any] | None]:
    """The event name and data of one SSE frame (data None for comments, keep-alives, [DONE])."""
    kind, data = "", b""
    for line in frame.split(b"\n"):
        if line.startswith(b"event:"):
            kind = line[6:].strip().decode()
        elif line.startswith(b"data:"):
            data += line[5:].strip()
    if not data or data == b"[DONE]":
        return kind, None
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError:
        return kind, None
    if not isinstance(parsed, dict):
        return kind, None
    return kind or str(parsed.get("type", "")), parsed


# Events the proxy must read (lifecycle: our id and model; failures). Finished items and text
# deltas pass as they came and are parsed only if the response stops early (Call).
PARSED = frozenset(k.encode() for k in (*LIFECYCLE, "error", "response.failed"))


def _raw_kind(frame: bytes) -> bytes | None:
    """The event name of a frame that may pass as it is (None: it must be parsed).

    It may when it names its event on the first line, that event is not one we rewrite or read,
    and it carries no `usage` (some upstreams put theirs, with their cost, on other events).
    """
    if not frame.startswith(b"event: "):
        return None
    end = frame.find(b"\n")
    kind = frame[7:end].strip()
    if kind in PARSED or b'"usage"' in frame or not frame.startswith(b"\ndata: ", end):
        return None
    return kind


def reframe(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"

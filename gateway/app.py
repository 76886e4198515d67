"""The metering gateway: a lean ASGI app beside Django (see portal/asgi.py).

Routes: POST /chat/completions and /v1/chat/completions (Perplexity and OpenAI base URLs),
GET /v1/models and /models; the Agent API (gateway/agent.py), the Search API (gateway/search.py),
embeddings (gateway/embeddings.py) and async chat completions (gateway/async_jobs.py). The request
path touches no Django middleware or ORM; see gateway/store.py for the data access (and where each
part of it lives) and the exactly-once argument.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
import psycopg
import redis
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connections

from billing.tasks import auto_top_up
from billing.windows import zone
from core import replica
from core.api_errors import GatewayError, invalid_key, invalid_request, unavailable
from gateway import (
    agent,
    async_jobs,
    attribution,
    embeddings,
    estimates,
    metrics,
    search,
    simulator,
)
from gateway.admission import KEY_LIMIT, NO_CREDIT
from gateway.budgets import BudgetInfo
from gateway.http import (
    SSE,
    Receive,
    Scope,
    Send,
    method_not_allowed,
    model_not_found,
    not_found,
    respond,
    upstream_error,
    upstream_timeout,
)
from gateway.openapi import SPEC_JSON
from gateway.restrictions import check_api, check_client, check_model
from gateway.store import (
    Admission,
    KeyInfo,
    ModelInfo,
    RateInfo,
    Store,
    TooManyInvalidKeys,
    client_bucket,
)
from keys import secrets
from usage.metrics import counts_of
from usage.pricing import Cost, Usage, compute_cost
from usage.tiers import tier_for

logger = logging.getLogger("portal.gateway")


CHAT_PATHS = frozenset({"/chat/completions", "/v1/chat/completions"})
MODEL_PATHS = frozenset({"/v1/models", "/models"})
METRICS_PATH = "/metrics"
OPENAPI_PATH = "/v1/openapi.json"
PATHS = CHAT_PATHS | MODEL_PATHS | {METRICS_PATH, OPENAPI_PATH}


# Everything under these prefixes is the gateway's: a path it does not serve is a JSON 404 in the
# gateway's error shape (never Django's HTML page). The Management API is Django's.
PREFIXES = ("/v1/", "/chat/", "/async/", "/search/")
PREFIX_ROOTS = frozenset({"/v1", "/chat", "/async", "/search"})
DJANGO_PREFIXES = ("/v1/management/",)


def is_gateway_path(path: str) -> bool:
    if path in PATHS or path in PREFIX_ROOTS:
        return True
    return path.startswith(PREFIXES) and not path.startswith(DJANGO_PREFIXES)


class GatewayApp:
    """One instance per worker process (per event loop)."""

    def __init__(self) -> None:
        self._store: Store | None = None
        self._session: aiohttp.ClientSession | None = None
        self.prefix = settings.API_KEY_PREFIX
        self.agent = agent.AgentAPI(self)
        self.search = search.SearchAPI(self)
        self.async_chat = async_jobs.AsyncChat(self)
        self.embeddings = embeddings.EmbeddingsAPI(self)
        self.max_body = settings.GATEWAY_MAX_BODY_BYTES
        self.timeout = aiohttp.ClientTimeout(
            total=None,
            connect=settings.GATEWAY_UPSTREAM_CONNECT_TIMEOUT,
            sock_read=settings.GATEWAY_UPSTREAM_TIMEOUT,
        )

    async def store(self) -> Store:
        if self._store is None:
            self._store = Store()
            self._store.on_top_up = queue_auto_top_up
            await self._store.open()
        return self._store

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
                timeout=self.timeout,
                json_serialize=lambda o: orjson.dumps(o).decode(),
                auto_decompress=True,
            )
        return self._session

    async def aclose(self) -> None:
        await self.agent.aclose()
        if self._session is not None:
            await self._session.close()
        if self._store is not None:
            await self._store.close()

    # --- ASGI ---------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == METRICS_PATH:
            await self.metrics(scope, send)
            return
        if scope["path"] == OPENAPI_PATH:
            if scope["method"] in ("GET", "HEAD"):
                await respond(send, 200, SPEC_JSON, [])
            else:
                await respond(send, 405, method_not_allowed(scope).body(), [])
            return
        request_id = uuid.uuid4().hex
        started = time.perf_counter()
        headers = [(b"x-request-id", request_id.encode())]
        status = 500
        metrics.IN_FLIGHT.inc()
        try:
            status = await self.handle(scope, receive, send, request_id, headers)
        except GatewayError as err:
            status = err.status
            await respond(send, err.status, err.body(), headers + err.headers)
        except (
            psycopg.OperationalError,
            psycopg.errors.AdminShutdown,
            redis.RedisError,
            OSError,
        ) as exc:
            logger.warning("dependency unavailable: %s", exc, extra={"request_id": request_id})
            down = unavailable()
            status = down.status
            await respond(send, down.status, down.body(), headers + down.headers)
        finally:
            if self._store is not None:  # a reservation not metered is given back (not detached)
                self._store.admissions.release(request_id)
            elapsed = time.perf_counter() - started
            metrics.IN_FLIGHT.dec()
            metrics.observe_request(scope.get("portal.model", ""), status, elapsed)
            logger.info(
                "%s %s %s %.2fms",
                scope.get("method"),
                scope.get("path"),
                status,
                elapsed * 1000,
                extra={"request_id": request_id, "status": status},
            )

    async def metrics(self, scope: Scope, send: Send) -> None:
        status = metrics.access(scope) if scope["method"] == "GET" else 404
        if status == 401:
            await respond(
                send, 401, b'{"detail": "Authentication required."}',
                [(b"www-authenticate", b'Bearer realm="metrics"')],
            )  # fmt: skip
            return
        if status != 200:
            await respond(send, 404, b'{"detail": "Not found."}', [])
            return
        if replica.configured():  # the read replica's lag, measured at most every few seconds
            await sync_to_async(replica.replica_lag)()
        body, content_type = metrics.exposition()
        await respond(send, 200, body, [], content_type.encode())

    async def handle(
        self, scope: Scope, receive: Receive, send: Send, request_id: str, headers: list
    ) -> int:
        path, method = scope["path"], scope["method"]
        attribution.begin(scope)  # X-Portal-Tags: a malformed header is a 400 before anything
        if path in embeddings.PATHS:  # gateway/embeddings.py
            if method != "POST":
                raise method_not_allowed(scope)
            key = await self.authenticate(scope, api="embeddings")
            return await self.embeddings.handle(scope, receive, send, key, request_id, headers)
        if path in MODEL_PATHS and method != "GET" or path in CHAT_PATHS and method != "POST":
            raise method_not_allowed(scope)
        if path in search.PATHS:
            if method != "POST":
                raise method_not_allowed(scope)
            key = await self.authenticate(scope, api="search")
            return await self.search.handle(scope, receive, send, key, request_id, headers)
        async_route = async_jobs.route(path, method)
        if async_route is not None:
            if async_route[0] == "method":
                raise method_not_allowed(scope)
            key = await self.authenticate(scope, api="async")
            return await self.async_chat.handle(
                async_route, scope, receive, send, key, request_id, headers
            )
        route = agent.route(path, method)
        if route is None and path not in CHAT_PATHS and path not in MODEL_PATHS:
            raise not_found(path)
        key = await self.authenticate(
            scope, api="agent" if route is not None else "chat" if path in CHAT_PATHS else None
        )
        if route is not None:
            return await self.agent.handle(route, scope, receive, send, key, request_id, headers)
        store = await self.store()
        models = await store.models()
        if path in MODEL_PATHS:
            data = [
                {"id": name, "object": "model", "created": 0, "owned_by": "portal"}
                for name, model in models.items()
                if model.apis != {search.SEARCH}  # a search type is no model to call
                and (key.models is None or name in key.models)  # the key's allowed models
            ]
            await respond(send, 200, orjson.dumps({"object": "list", "data": data}), headers)
            return 200
        payload = await self.read_json(scope, receive)
        attribution.with_body(payload)  # `user` / `safety_identifier`
        model = models.get(payload["model"])
        if model is None or not agent.sold_on_chat(model):
            raise model_not_found(payload["model"])
        scope["portal.model"] = model.name
        await self.admit(store, key, model, headers, request_id=request_id,
                         estimate=estimates.chat(model, payload))  # fmt: skip
        started = time.perf_counter()
        if payload.get("stream"):
            return await self.stream(send, store, key, model, payload, request_id, headers, started)
        return await self.complete(send, store, key, model, payload, request_id, headers, started)

    async def admit(
        self, store: Store, key: KeyInfo, model: ModelInfo, headers: list,
        family: str | None = None, *, request_id: str = "", estimate: int = 0,
        hold_seconds: float | None = None,
    ) -> None:  # fmt: skip
        """Admission (balance, spend limit, hard budgets, rate limit, and the reservation of
        `estimate` for `request_id`: gateway/admission.py): its headers added, or the refusal.

        `family` is the API family the request counts in (usage.tiers: "agent", "search",
        "embeddings", "async_create", …, or a chat model's name); None derives it from the model
        (a chat model's own family, else its API's). The reservation is given back when the
        request is metered, or when its handler returns unmetered (see __call__); a request that
        outlives its handler is detached (store.admissions.detach) and released by its runner.
        """
        check_model(key, model, family)
        rate = store.catalogue.rate_limit(model, family)
        now = time.time()
        admission = await store.admit(
            key, rate, now, request_id=request_id, estimate=estimate, hold_seconds=hold_seconds
        )
        refusal = rate_limited(rate, admission, now, headers)
        self.check_admission(key, admission)
        if refusal is not None:
            raise refusal

    async def admit_rate(self, store: Store, key: KeyInfo, family: str, headers: list) -> None:
        """The rate limit alone (no credit or spend check), for requests that are never billed
        (GET /async/chat/completions[/{id}]): its headers added, or the 429."""
        await store.models()  # the catalogue (and its limits) read
        rate = store.catalogue.rate_limit(None, family)
        now = time.time()
        admission = await store.admit(key, rate, now, spend=False)
        refusal = rate_limited(rate, admission, now, headers)
        if refusal is not None:
            raise refusal

    async def authenticate(self, scope: Scope, api: str | None = None) -> KeyInfo:
        """The caller's active key, allowed from the caller's address and, when `api` is given
        (usage.metrics.APIS), for that API: 401 / 403 otherwise (docs/gateway.md)."""
        auth = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                auth = value
                break
        if not auth:
            raise invalid_key("Missing API key: send it as “Authorization: Bearer <key>”.")
        scheme, _, token = auth.decode("latin-1").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise invalid_key("Send the API key as “Authorization: Bearer <key>”.")
        if not secrets.is_well_formed(token, self.prefix):
            raise invalid_key("This is not a valid API key (wrong format or checksum).")
        client = scope.get("client")
        try:
            key = await (await self.store()).key_by_hash(
                secrets.hash_key(token), client_bucket(client[0] if client else None)
            )
        except TooManyInvalidKeys as refused:
            raise GatewayError(
                429,
                "too_many_invalid_keys",
                "Too many unknown API keys were tried from your address. Wait "
                f"{refused.retry_after} s, and check the key you are sending.",
                type_="rate_limit_error",
                headers=[(b"retry-after", str(refused.retry_after).encode())],
            ) from None
        if key is None:
            raise invalid_key("This API key is unknown, revoked or expired.")
        check_client(key, client[0] if client else None)
        if api is not None:
            check_api(key, api)
        return key

    async def read_json(self, scope: Scope, receive: Receive) -> dict[str, Any]:
        """A chat-completions body: a JSON object with `model` and `messages` (400 otherwise)."""
        payload = await self.read_body(scope, receive)
        if not isinstance(payload.get("model"), str) or not payload["model"]:
            raise invalid_request("“model” is required and must be a string.", param="model")
        messages = payload.get("messages")
        if not isinstance(messages, list) or not messages:
            raise invalid_request(
                "“messages” is required and must be a non-empty list.", param="messages"
            )
        if not all(isinstance(m, dict) for m in messages):
            raise invalid_request("Each message must be an object.", param="messages")
        if "stream" in payload and not isinstance(payload["stream"], bool):
            raise invalid_request("“stream” must be true or false.", param="stream")
        options = payload.get("stream_options")
        if options is not None and not isinstance(options, dict):
            raise invalid_request("“stream_options” must be an object.", param="stream_options")
        return payload

    async def read_body(self, scope: Scope, receive: Receive) -> dict[str, Any]:
        """The request body as a JSON object (413 when too large, 400 when not JSON)."""
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    raise invalid_request("Bad Content-Length header.") from None
                if length > self.max_body:
                    raise self.too_large()
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise invalid_request("The client went away.")
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_body:
                raise self.too_large()
            chunks.append(body)
            if not message.get("more_body"):
                break
        try:
            payload = orjson.loads(b"".join(chunks))
        except orjson.JSONDecodeError:
            raise invalid_request("The request body is not valid JSON.") from None
        if not isinstance(payload, dict):
            raise invalid_request("The request body must be a JSON object.")
        return payload

    def too_large(self) -> GatewayError:
        return GatewayError(
            413,
            "request_too_large",
            f"The request body is larger than {self.max_body:,} bytes.",
            type_="invalid_request_error",
        )

    @staticmethod
    def check_admission(key: KeyInfo, admission: Admission) -> None:
        if admission.verdict == NO_CREDIT:
            if admission.balance_micros <= 0:
                message = (
                    "Your API group has no credits left, so its keys are blocked. Add credits "
                    "or turn on auto top-up in the portal's Billing page."
                )
            else:
                message = (
                    "Your API group's credit does not cover what this request may cost, with "
                    "the requests it has in flight. Wait for them to finish, lower max_tokens, "
                    "or add credits in the portal's Billing page."
                )
            raise GatewayError(402, "insufficient_credits", message, type_="insufficient_quota")
        if admission.verdict == KEY_LIMIT:
            raise GatewayError(
                402,
                "key_limit_exceeded",
                "This API key has reached its monthly spend limit. An Admin can raise it on "
                "the API Keys page.",
                type_="insufficient_quota",
            )
        exceeded = admission.exceeded_budget
        if exceeded is not None:
            raise budget_exceeded(*exceeded, time.time())

    # --- upstream -----------------------------------------------------------------------------

    def upstream_request(self, model: ModelInfo, payload: dict[str, Any], stream: bool) -> bytes:
        body = dict(payload)
        body["model"] = model.upstream_model
        if stream:
            # OpenAI-compatible servers only report usage in a stream when asked to.
            options = dict(body.get("stream_options") or {})
            options["include_usage"] = True
            body["stream_options"] = options
        return orjson.dumps(body)

    def upstream_headers(self, model: ModelInfo, request_id: str) -> dict[str, str]:
        h = {"Content-Type": "application/json", "X-Request-Id": request_id}
        if model.api_key:
            h["Authorization"] = f"Bearer {model.api_key}"
        return h

    async def complete(
        self, send: Send, store: Store, key: KeyInfo, model: ModelInfo, payload: dict[str, Any],
        request_id: str, headers: list, started: float,
    ) -> int:  # fmt: skip
        if model.base_url.startswith("simulator:"):
            raw = simulator.complete(model.name, payload)
        else:
            asked = time.perf_counter()
            raw = await self.fetch(model, payload, request_id)
            metrics.UPSTREAM.labels(model.name).observe(time.perf_counter() - asked)
        try:
            data = orjson.loads(raw)
            usage = data["usage"]
            if not isinstance(usage, dict):
                raise TypeError
        except (orjson.JSONDecodeError, KeyError, TypeError):
            raise GatewayError(
                502, "upstream_error", "The model server sent a response without usage.",
                type_="api_error",
            ) from None  # fmt: skip
        cost = await self.meter(
            store, key, model, payload, usage, request_id, started, streamed=False
        )
        usage["cost"] = cost.as_usage_cost()
        await respond(send, 200, orjson.dumps(data), headers)
        return 200

    @contextlib.asynccontextmanager
    async def upstream(
        self, model: ModelInfo, payload: dict[str, Any], request_id: str, *, stream: bool,
        path: str = "/chat/completions", body: bytes | None = None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:  # fmt: skip
        """POST to the model server; its failures (also mid-stream) become 502/504 errors.

        `body`, when given, is sent as it is (the Agent API builds its own upstream bodies).
        """
        try:
            async with self.session().post(
                f"{model.base_url}{path}",
                data=body if body is not None else self.upstream_request(model, payload, stream),
                headers=self.upstream_headers(model, request_id),
            ) as resp:
                if resp.status >= 500:
                    raise upstream_error(f"The model server answered {resp.status}.")
                if resp.status >= 400:
                    raise passthrough_error(resp.status, await resp.read(), model, request_id)
                yield resp
        except TimeoutError:
            raise upstream_timeout() from None
        except aiohttp.ClientError as exc:
            raise upstream_error(
                f"The model server could not be reached ({type(exc).__name__})."
            ) from None

    async def fetch(self, model: ModelInfo, payload: dict[str, Any], request_id: str) -> bytes:
        async with self.upstream(model, payload, request_id, stream=False) as resp:
            return await resp.read()

    async def stream(
        self, send: Send, store: Store, key: KeyInfo, model: ModelInfo, payload: dict[str, Any],
        request_id: str, headers: list, started: float,
    ) -> int:  # fmt: skip
        events = self.events(model, payload, request_id)
        # Start the upstream before answering, so a failure to connect is a clean 502/504.
        asked = time.perf_counter()
        try:
            first = await anext(events)
        except StopAsyncIteration:
            raise upstream_error("The model server sent an empty stream.") from None
        metrics.UPSTREAM.labels(model.name).observe(time.perf_counter() - asked)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", SSE), (b"cache-control", b"no-cache"), *headers],
            }
        )
        relayed = Relayed()
        try:
            await self.relay(send, store, key, model, payload, request_id, started, events, first,
                             relayed)  # fmt: skip
        except Exception as exc:  # the response has started: end it cleanly
            err = exc if isinstance(exc, GatewayError) else unavailable()
            logger.warning("stream ended early: %s", exc, extra={"request_id": request_id})
            if not relayed.metering:
                # The model server broke off (or the client went away): charge what was delivered.
                try:
                    total = await self.meter_partial(
                        send, store, key, model, payload, request_id, started, relayed
                    )
                except Exception as failed:  # not recorded, so not charged
                    logger.warning("partial stream not metered: %s", failed,
                                   extra={"request_id": request_id})  # fmt: skip
                else:
                    err = GatewayError(
                        err.status, err.code,
                        "The model server broke off the answer. You were charged only for the "
                        f"part you received (${total / 1_000_000:.6f}).",
                        type_="api_error",
                    )  # fmt: skip
            # `event: error` with an `error` object: both SDKs raise on it (openai: APIError,
            # perplexity: APIStatusError), so a broken stream is never a silent truncation.
            await send(
                {
                    "type": "http.response.body",
                    "body": b"event: error\ndata: " + err.body() + b"\n\n",
                    "more_body": True,
                }
            )
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return err.status
        return 200

    async def relay(
        self, send: Send, store: Store, key: KeyInfo, model: ModelInfo, payload: dict[str, Any],
        request_id: str, started: float, events: AsyncIterator[bytes], first: bytes,
        relayed: Relayed,
    ) -> None:  # fmt: skip
        """Pass events on; hold the usage chunk, meter, then send it with our cost and [DONE]."""
        event: bytes | None = first
        done = False
        while event is not None:
            if event.startswith(b"data: [DONE]"):
                done = True
                break
            if b'"usage"' in event:
                try:
                    chunk = orjson.loads(event[6:])
                except orjson.JSONDecodeError:
                    chunk = None
                if isinstance(chunk, dict) and isinstance(chunk.get("usage"), dict):
                    if relayed.held is not None:
                        await send_chunk(send, relayed.held)
                        relayed.sent.append(orjson.dumps(relayed.held))
                    relayed.held = chunk
                    event = await anext(events, None)
                    continue
            await send({"type": "http.response.body", "body": event, "more_body": True})
            relayed.sent.append(event)
            event = await anext(events, None)
        if not done and relayed.held is None:
            # Neither [DONE] nor usage: the model server closed the stream before its end.
            raise upstream_error("The model server ended the stream early.")
        relayed.metering = True
        held = relayed.held
        usage = held["usage"] if held is not None else {}
        cost = await self.meter(
            store, key, model, payload, usage, request_id, started, streamed=True
        )
        if held is None:
            held = {"object": "chat.completion.chunk", "choices": [], "usage": usage}
        held["usage"]["cost"] = cost.as_usage_cost()
        await send_chunk(send, held, more=True)
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})

    async def meter_partial(
        self, send: Send, store: Store, key: KeyInfo, model: ModelInfo, payload: dict[str, Any],
        request_id: str, started: float, relayed: Relayed,
    ) -> int:  # fmt: skip
        """Charge a stream that broke off for what the client received (docs/gateway.md).

        With a usage chunk from the model server, its counts (the chunk, content and all, is
        sent first); without one, the delivered text's tokens are estimated (delivered_tokens)
        and charged as output tokens, plus the request fee.
        """
        relayed.metering = True
        held = relayed.held
        if held is not None:
            usage = held["usage"]
        else:
            usage = {"completion_tokens": delivered_tokens(relayed.sent)}
        cost = await self.meter(
            store, key, model, payload, usage, request_id, started, streamed=True
        )
        if held is not None:
            held["usage"]["cost"] = cost.as_usage_cost()
            await send_chunk(send, held, more=True)
        return cost.total

    async def events(
        self, model: ModelInfo, payload: dict[str, Any], request_id: str,
        path: str = "/chat/completions", body: bytes | None = None,
    ) -> AsyncIterator[bytes]:  # fmt: skip
        """Yield whole SSE events (ending in a blank line) from the upstream."""
        if model.base_url.startswith("simulator:"):
            answer = simulator.agent_stream if path == "/responses" else simulator.stream
            for event in answer(model.name, payload):
                yield event
            return
        async with self.upstream(
            model, payload, request_id, stream=True, path=path, body=body
        ) as resp:
            buffer = b""
            async for data in resp.content.iter_any():
                buffer += data
                while b"\n\n" in buffer:
                    event, buffer = buffer.split(b"\n\n", 1)
                    if event.strip():
                        yield event.strip(b"\r\n") + b"\n\n"
            if buffer.strip():
                yield buffer.strip(b"\r\n") + b"\n\n"

    # --- metering -----------------------------------------------------------------------------

    async def meter(
        self, store: Store, key: KeyInfo, model: ModelInfo, payload: dict[str, Any],
        usage: dict[str, Any], request_id: str, started: float, *, streamed: bool,
    ) -> Cost:  # fmt: skip
        parsed = parse_usage(usage, payload)
        cost = compute_cost(model.prices, parsed)
        await self._record(store, key, model, parsed, cost, request_id, started, streamed)
        return cost

    @staticmethod
    async def _record(
        store: Store, key: KeyInfo, model: ModelInfo, parsed: Usage, cost: Cost,
        request_id: str, started: float, streamed: bool,
    ) -> None:  # fmt: skip
        await store.meter(
            key,
            {
                "request_id": request_id,
                "group_id": key.group_id,
                "key_id": key.id,
                "model_id": model.id,
                **counts_of(parsed),
                "context_size": parsed.search_context_size,
                **cost.parts(),
                "total": cost.total,
                "streamed": streamed,
                "latency_ms": int((time.perf_counter() - started) * 1000),
                "created": time.time(),
            },
        )


def budget_exceeded(budget: BudgetInfo, spent: int, now: float) -> GatewayError:
    """The 402 of a hard budget that is spent (or has less left than the request may cost)."""
    end = budget.bounds(now)[1]
    resets = (
        datetime.fromtimestamp(end, UTC).astimezone(zone(budget.time_zone)).isoformat()
        if end is not None
        else None
    )
    left = max(0, budget.amount_micros - spent)
    state = (
        "is spent"
        if left == 0
        else f"has ${left / 1_000_000:,.6f} left, less than this request may cost"
    )
    when = f"It resets at {resets}." if resets else "It is a lifetime budget: it does not reset."
    return GatewayError(
        402,
        "budget_exceeded",
        f"{budget.describe()[0].upper()}{budget.describe()[1:]} {state}. {when} An Admin can "
        "change it in the portal.",
        type_="insufficient_quota",
        extra={
            "budget": {
                "id": budget.id,
                "scope": "key" if budget.key_id is not None else "group",
                "name": budget.name,
                "amount": budget.amount_micros / 1_000_000,
                "window": budget.window,
                "spent": spent / 1_000_000,
                "resets_at": resets,
            }
        },
    )


def rate_limited(
    rate: RateInfo | None, admission: Admission, now: float, headers: list
) -> GatewayError | None:
    """Add the x-ratelimit-* headers OpenAI clients read (of the window that refused the request,
    else of the family's first window: requests per minute where it has one); the 429 if over.

    The counts are the group's, across all its keys and the gateway's workers (gateway/admission.py).
    """
    if rate is None or not rate.windows:
        return None
    tier = admission.tier if admission.tier >= 0 else tier_for(admission.purchased_micros).number
    over = admission.refused - 1
    if over < 0:  # not checked in Redis (tier unknown there): check the counts here
        for i, (_, limits) in enumerate(rate.windows):
            if admission.counts[i] > limits[tier]:
                over = i
                break
    seconds, limits = rate.windows[max(over, 0)]
    limit = limits[tier]
    wait = (now // seconds + 1) * seconds - now  # to the end of the window
    remaining = 0 if over >= 0 else max(0, limit - admission.counts[max(over, 0)])
    headers += [
        (b"x-ratelimit-limit-requests", str(limit).encode()),
        (b"x-ratelimit-remaining-requests", str(remaining).encode()),
        (b"x-ratelimit-reset-requests", reset_text(wait).encode()),
    ]
    if over < 0:
        return None
    unit = "minute" if seconds == 60 else "second"
    return GatewayError(
        429,
        "rate_limit_exceeded",
        f"Rate limit reached for “{rate.family}”: {limit} requests per {unit} at usage tier "
        f"{tier}, shared by all keys of your API group. Retry after {math.ceil(wait)} s; "
        "buying credits raises the tier.",
        type_="rate_limit_error",
        headers=[
            (b"retry-after", str(max(1, math.ceil(wait))).encode()),
            (b"retry-after-ms", str(max(1, math.ceil(wait * 1000))).encode()),
        ],
    )


def reset_text(seconds: float) -> str:
    """A duration as OpenAI writes x-ratelimit-reset-*: "20ms", "1s", "59s"."""
    if seconds < 1:
        return f"{max(1, math.ceil(seconds * 1000))}ms"
    return f"{math.ceil(seconds)}s"


class Relayed:
    """What a stream has passed on so far (to charge a stream that breaks off)."""

    __slots__ = ("held", "metering", "sent")

    def __init__(self) -> None:
        self.sent: list[bytes] = []  # the events sent, as they were (parsed only on a break)
        self.held: dict[str, Any] | None = None  # the latest chunk carrying usage, sent last
        self.metering = False  # metering was attempted: never charge the request again


CHARS_PER_TOKEN = 4  # the usual estimate for English text with OpenAI-style tokenizers


def delivered_tokens(events: list[bytes]) -> int:
    """Estimated tokens of the text in these SSE events: ⌈characters / CHARS_PER_TOKEN⌉ of every
    `choices[].delta.content` (and `reasoning_content`) string."""
    chars = 0
    for event in events:
        for line in event.split(b"\n"):
            if not line.startswith(b"data: "):
                continue
            try:
                chunk = orjson.loads(line[6:])
            except orjson.JSONDecodeError:
                continue
            choices = chunk.get("choices") if isinstance(chunk, dict) else None
            for choice in choices if isinstance(choices, list) else ():
                delta = choice.get("delta") if isinstance(choice, dict) else None
                if isinstance(delta, dict):
                    for field in ("content", "reasoning_content"):
                        if isinstance(delta.get(field), str):
                            chars += len(delta[field])
    return -(-chars // CHARS_PER_TOKEN)


def queue_auto_top_up(group_id: int) -> None:
    """Ask a Celery worker to top the group up (it re-checks everything under a lock)."""
    try:
        auto_top_up.delay(group_id)
    except Exception:  # the periodic credit watch will catch it up
        logger.warning("could not queue auto top-up for group %s", group_id)
    finally:
        connections.close_all()  # this helper thread's own connections, if it opened any


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def parse_usage(usage: dict[str, Any], payload: dict[str, Any]) -> Usage:
    """Read token and search counts from an upstream's `usage` (Perplexity or OpenAI style)."""
    details = usage.get("completion_tokens_details")
    reasoning = usage.get("reasoning_tokens")
    if reasoning is None and isinstance(details, dict):
        reasoning = details.get("reasoning_tokens")
    size = usage.get("search_context_size")
    if size not in ("low", "medium", "high"):
        options = payload.get("web_search_options")
        size = options.get("search_context_size") if isinstance(options, dict) else None
        if size not in ("low", "medium", "high"):
            size = "low"
    return Usage(
        prompt_tokens=_int(usage.get("prompt_tokens")),
        completion_tokens=_int(usage.get("completion_tokens")),
        citation_tokens=_int(usage.get("citation_tokens")),
        reasoning_tokens=_int(reasoning),
        search_queries=_int(usage.get("num_search_queries")),
        search_context_size=size,
    )


# Upstream answers about *our* credentials or account with the model server: the client can do
# nothing about them, and their text may quote the operator's upstream key.
UPSTREAM_AUTH_STATUSES = frozenset({401, 402, 403, 407})


def passthrough_error(
    status: int, raw: bytes, model: ModelInfo | None = None, request_id: str = ""
) -> GatewayError:
    """An upstream 4xx: keep its message, in our shape. Nothing is charged.

    Refusals of the operator's upstream credentials (UPSTREAM_AUTH_STATUSES) are our own failure:
    a 502 with a fixed message, the upstream's text logged for the operator only. Any other
    message passed on has the upstream key, should it quote it, masked.
    """
    if status in UPSTREAM_AUTH_STATUSES:
        logger.error(
            "model server %s refused the gateway's credentials (%s): %s",
            model.name if model else "?", status, raw[:2000].decode("utf-8", "replace"),
            extra={"request_id": request_id},
        )  # fmt: skip
        return upstream_error("The model server is not available to this gateway right now.")
    message = "The model server refused the request."
    try:
        data = orjson.loads(raw)
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            message = err["message"]
        elif isinstance(err, str):
            message = err
    except orjson.JSONDecodeError:
        pass
    if model is not None and model.api_key and model.api_key in message:
        message = message.replace(model.api_key, "[redacted]")
    code = "rate_limit_exceeded" if status == 429 else "invalid_request_error"
    return GatewayError(status, code, message, type_="invalid_request_error")


async def send_chunk(send: Send, chunk: dict[str, Any], more: bool = True) -> None:
    await send(
        {
            "type": "http.response.body",
            "body": b"data: " + orjson.dumps(chunk) + b"\n\n",
            "more_body": more,
        }
    )

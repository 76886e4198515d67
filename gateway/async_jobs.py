"""Async chat completions on the gateway: `POST /async/chat/completions` (create),
`GET /async/chat/completions` (list) and `GET /async/chat/completions/{id}` (get).

Shapes are the perplexityai SDK's (`AsyncApiChatCompletionsResponseOutput`,
`ListAsyncApiChatCompletionsResponseOutput`; docs/research/search-embeddings-async.md §1.4).

Create: the body is `{"request": {chat completions body}, "idempotency_key": "..."}`. The inner
request is checked like chat's (model sold on chat completions, messages a non-empty list of
objects; `stream: true` is refused: an async result is fetched, not streamed), then admitted
exactly like a chat request (credits, the key's monthly limit, rate limit). Only then is the job
written (status CREATED) and queued for a Celery worker (gateway/tasks.py, run by
gateway/async_runner.py); a refused create writes nothing. The same idempotency key in the same
group gives back the job it made (no second job, no admission). The job id is the create's
request id (made by the gateway, never by the client) and becomes the request id of its usage
event, so the job is metered once (gateway/sql/meter.sql is idempotent on it).

Get / list: the owning group only, with any of its keys; another group's job is a 404 exactly like
an unknown id. The `x-*` headers the SDK's `get` can send (x-usage-tier, x-user-id, …) and its
`local_mode` query parameter are ignored. Reads are raw SQL on the gateway's pool (gateway/sql/).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import urllib.parse
from typing import TYPE_CHECKING, Any

import orjson
from django.conf import settings
from django.db import connections

from core.api_errors import GatewayError, invalid_request
from gateway import attribution, estimates
from gateway.agent import sold_on_chat
from gateway.http import Receive, Scope, Send, method_not_allowed, model_not_found, respond
from gateway.keycache import KeyInfo
from gateway.sources import sql
from gateway.tasks import run_async_job

if TYPE_CHECKING:
    from gateway.app import GatewayApp
    from gateway.store import Store

logger = logging.getLogger("portal.gateway")

CREATE_PATH = "/async/chat/completions"
ROOT = "/async/chat/completions/"
LIST_LIMIT = 20  # Perplexity's default page size
LIST_LIMIT_MAX = 100
IDEMPOTENCY_KEY_MAX = 255

CREATE_SQL = sql("async_create")
GET_SQL = sql("async_get")
BY_KEY_SQL = sql("async_by_key")
LIST_SQL = sql("async_list")

JOB_FIELDS = (
    "id", "model", "created_at", "status", "started_at", "completed_at", "failed_at",
    "error_message", "response",
)  # fmt: skip
SUMMARY_FIELDS = JOB_FIELDS[:7]


def route(path: str, method: str) -> tuple[str, str | None] | None:
    """("create" | "list" | "get" | "method", job id) for an async path, else None."""
    if path == CREATE_PATH:
        if method == "POST":
            return ("create", None)
        return ("list", None) if method in ("GET", "HEAD") else ("method", None)
    if path.startswith(ROOT):
        job_id = path[len(ROOT) :]
        if not job_id or "/" in job_id:
            return None
        return ("get", job_id) if method in ("GET", "HEAD") else ("method", None)
    return None


def job_not_found(job_id: str) -> GatewayError:
    return GatewayError(
        404, "not_found", f"There is no async request “{job_id}”.", type_="invalid_request_error"
    )


def enqueue(job_id: str) -> None:
    """Queue the job for a Celery worker (in a thread: the broker client blocks). Should that
    fail, the job stays CREATED and the sweeper (gateway.tasks.async_sweep) queues it again."""
    try:
        run_async_job.delay(job_id)
    except Exception:
        logger.warning("could not queue async job %s; the sweeper will", job_id, exc_info=True)
    finally:
        connections.close_all()  # this helper thread's own connections, if it opened any


class AsyncChat:
    def __init__(self, app: GatewayApp) -> None:
        self.app = app

    async def handle(
        self, route_: tuple[str, str | None], scope: Scope, receive: Receive, send: Send,
        key: KeyInfo, request_id: str, headers: list,
    ) -> int:  # fmt: skip
        action, job_id = route_
        store = await self.app.store()
        if action == "create":
            return await self.create(scope, receive, send, store, key, request_id, headers)
        if action == "get":
            assert job_id is not None
            await self.app.admit_rate(store, key, "async_get", headers)
            row = await self.one(store, GET_SQL, (job_id, key.group_id))
            if row is None:
                raise job_not_found(job_id)
            await respond(send, 200, orjson.dumps(dict(zip(JOB_FIELDS, row, strict=True))), headers)
            return 200
        if action == "list":
            await self.app.admit_rate(store, key, "async_list", headers)
            return await self.list(scope, send, store, key, headers)
        raise method_not_allowed(scope)

    @staticmethod
    async def one(store: Store, statement: str, params: tuple) -> tuple | None:
        async with store.pool.connection() as conn:
            cur = await conn.execute(statement, params)
            return await cur.fetchone()

    # --- create ---------------------------------------------------------------------------

    async def create(
        self, scope: Scope, receive: Receive, send: Send, store: Store, key: KeyInfo,
        request_id: str, headers: list,
    ) -> int:  # fmt: skip
        body = await self.app.read_body(scope, receive)
        request = parse_create(body)
        who = attribution.with_body(request, prefix="request.")  # `request.user`
        idempotency_key = body.get("idempotency_key")
        models = await store.models()
        model = models.get(request["model"])
        if model is None or not sold_on_chat(model):
            raise model_not_found(request["model"], param="request.model")
        scope["portal.model"] = model.name
        if idempotency_key is not None:
            row = await self.one(store, BY_KEY_SQL, (key.group_id, idempotency_key))
            if row is not None:  # the job this key already made: nothing new is admitted
                await respond(send, 200, job_json(row), headers)
                return 200
        # The job's reservation is held until a Celery worker meters it or it fails
        # (gateway/async_runner.py), at most as long as the job can be retried.
        await self.app.admit(store, key, model, headers, family="async_create",
                             request_id=request_id, estimate=estimates.chat(model, request),
                             hold_seconds=async_hold_seconds())  # fmt: skip
        params = (
            request_id, key.group_id, key.id, model.id, request["model"],
            orjson.dumps(request).decode(), idempotency_key, settings.ASYNC_REQUEUE_AFTER,
            who.end_user, orjson.dumps(who.tags).decode(),
        )  # fmt: skip
        row = await self.one(store, CREATE_SQL, params)
        if row is None:  # a concurrent create with the same idempotency key won
            row = await self.one(store, BY_KEY_SQL, (key.group_id, idempotency_key))
            if row is None:
                raise job_not_found(str(idempotency_key))
        else:
            store.admissions.hand_over(request_id)  # the job's now: released by its runner
            await asyncio.to_thread(enqueue, request_id)
        await respond(send, 200, job_json(row), headers)
        return 200

    # --- list -----------------------------------------------------------------------------

    async def list(
        self, scope: Scope, send: Send, store: Store, key: KeyInfo, headers: list
    ) -> int:
        query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))
        limit = parse_limit(query.get("limit", [None])[-1])
        token = query.get("next_token", [None])[-1]
        after, after_id = parse_token(token) if token else (None, None)
        params = {"group": key.group_id, "after": after, "after_id": after_id, "limit": limit + 1}
        async with store.pool.connection() as conn:
            cur = await conn.execute(LIST_SQL, params)
            rows = await cur.fetchall()
        page = rows[:limit]
        next_token = make_token(page[-1][7], page[-1][0]) if len(rows) > limit else None
        requests = [dict(zip(SUMMARY_FIELDS, row[:7], strict=True)) for row in page]
        body = orjson.dumps({"requests": requests, "next_token": next_token})
        await respond(send, 200, body, headers)
        return 200


def job_json(row: tuple) -> bytes:
    return orjson.dumps(dict(zip(JOB_FIELDS, row, strict=True)))


def parse_create(body: dict[str, Any]) -> dict[str, Any]:
    """The inner chat request of a create body (400 naming the field otherwise)."""
    request = body.get("request")
    if not isinstance(request, dict):
        raise invalid_request(
            "“request” is required and must be a chat completions request object.",
            param="request",
        )
    if not isinstance(request.get("model"), str) or not request["model"]:
        raise invalid_request(
            "“request.model” is required and must be a string.", param="request.model"
        )
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid_request(
            "“request.messages” is required and must be a non-empty list.",
            param="request.messages",
        )
    if not all(isinstance(m, dict) for m in messages):
        raise invalid_request("Each message must be an object.", param="request.messages")
    stream = request.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise invalid_request("“request.stream” must be true or false.", param="request.stream")
    if stream:
        raise invalid_request(
            "An async request is not streamed: leave out “request.stream” and fetch the result "
            "with GET /async/chat/completions/{id}, or use POST /chat/completions to stream.",
            param="request.stream",
        )
    options = request.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise invalid_request(
            "“request.stream_options” must be an object.", param="request.stream_options"
        )
    idempotency_key = body.get("idempotency_key")
    if idempotency_key is not None and (
        not isinstance(idempotency_key, str)
        or not idempotency_key
        or len(idempotency_key) > IDEMPOTENCY_KEY_MAX
    ):
        raise invalid_request(
            f"“idempotency_key” must be a string of 1 to {IDEMPOTENCY_KEY_MAX} characters.",
            param="idempotency_key",
        )
    return request


def parse_limit(value: str | None) -> int:
    if value is None:
        return LIST_LIMIT
    try:
        limit = int(value)
    except ValueError:
        limit = 0
    if not 1 <= limit <= LIST_LIMIT_MAX:
        raise invalid_request(
            f"“limit” must be a whole number from 1 to {LIST_LIMIT_MAX}.", param="limit"
        )
    return limit


def make_token(created_micros: int, job_id: str) -> str:
    """An opaque cursor: the last job of a page (its creation time in µs and its id)."""
    return base64.urlsafe_b64encode(f"{created_micros}:{job_id}".encode()).decode().rstrip("=")


def parse_token(token: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        micros, _, job_id = raw.partition(":")
        if not job_id:
            raise ValueError
        return int(micros), job_id
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise invalid_request(
            "“next_token” is not a token this API returned.", param="next_token"
        ) from None


def async_hold_seconds() -> float:
    """How long an async job's reservation may be held: as long as the job can wait and run."""
    return float(
        settings.ASYNC_REQUEUE_AFTER + settings.ASYNC_JOB_LEASE * settings.ASYNC_JOB_MAX_ATTEMPTS
    )

"""Build the Response object, its usage and every streamed SSE event of the Agent API.

The shapes are the ones both official SDKs parse (openai 3.51 and perplexityai 0.46, checked by
tests/gateway/test_responses_core.py): every frame is `event: <type>` + `data: {...,"type":<type>,
"sequence_number":n}`, a stream opens with `response.created` and `response.in_progress`, each
output item is announced (`output_item.added`) before its content and closed (`output_item.done`)
before `response.completed`, text arrives in a `content_part` (added / `output_text.delta`… /
`output_text.done` / done), which openai's `responses.stream()` helper needs.

A failure after the stream started is one `error` frame: its SSE event name makes perplexityai
raise, its top-level `error` object makes openai raise. `response.failed` alone makes neither
raise, so it is only sent after `error`, for clients that read on.

Usage carries both vocabularies at once (both SDKs keep unknown keys): openai's `cached_tokens`,
`cache_write_tokens` and `output_tokens_details.reasoning_tokens`, and Perplexity's
`cache_read_input_tokens`, `cache_creation_input_tokens`, `tool_calls_details` and `cost`.
`input_tokens` counts every input token, cached ones included (OpenAI's rule); `input_cost`
is the price of whatever the pricing module says it is: this module only converts micro-dollars
to dollars. Per tool, both `cost` (issue 17's name) and `cost_usd` (the SDK's) are sent.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.responses.request import ResponsesRequest
from usage.pricing import AgentCost

MICROS = 1_000_000


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def dollars(micros: int) -> float:
    return micros / MICROS


@dataclass(frozen=True)
class TokenUsage:
    """Token counts of one response; `input_tokens` includes the cached and cache-written ones."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


def usage_object(
    tokens: TokenUsage,
    cost: AgentCost | None = None,
    tool_invocations: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """Return `usage` in both SDKs' vocabulary; tool counts come from `cost` when it has them."""
    usage: dict[str, Any] = {
        "input_tokens": tokens.input_tokens,
        "input_tokens_details": {
            "cached_tokens": tokens.cache_read_tokens,
            "cache_write_tokens": tokens.cache_creation_tokens,
            "cache_read_input_tokens": tokens.cache_read_tokens,
            "cache_creation_input_tokens": tokens.cache_creation_tokens,
        },
        "output_tokens": tokens.output_tokens,
        "output_tokens_details": {"reasoning_tokens": tokens.reasoning_tokens},
        "total_tokens": tokens.total_tokens,
    }
    details: dict[str, Any] = {}
    if cost is not None:
        for tool, spent in cost.tool_calls.items():
            details[tool] = {
                "invocation": spent.invocations,
                "cost": dollars(spent.cost_micros),
                "cost_usd": dollars(spent.cost_micros),
            }
    for tool, count in (tool_invocations or {}).items():
        details.setdefault(tool, {"invocation": count})
    if details:
        usage["tool_calls_details"] = details
    if cost is not None:
        usage["cost"] = cost.as_response_cost()
    return usage


def response_object(
    *,
    response_id: str,
    model: str,
    request: ResponsesRequest | None,
    status: str,
    output: Sequence[dict[str, Any]] = (),
    usage: dict[str, Any] | None = None,
    created_at: int | None = None,
    completed_at: int | None = None,
    error: dict[str, Any] | None = None,
    incomplete_details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Return a `response` object; every field either SDK requires in strict mode is present."""
    raw = request.raw if request is not None else {}
    created = int(created_at if created_at is not None else time.time())
    return {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "completed_at": completed_at,
        "status": status,
        "model": model,
        "output": list(output),
        "error": error,
        "incomplete_details": incomplete_details,
        "instructions": request.instructions if request else None,
        "metadata": dict(request.metadata) if request else {},
        "parallel_tool_calls": bool(raw.get("parallel_tool_calls", True)),
        "tool_choice": (request.tool_choice if request else None) or "auto",
        "tools": list(raw.get("tools") or []),
        "temperature": request.temperature if request else None,
        "top_p": request.top_p if request else None,
        "max_output_tokens": request.max_output_tokens if request else None,
        "previous_response_id": request.previous_response_id if request else None,
        "store": request.store if request else True,
        "background": request.background if request else False,
        "effort": request.effort if request else None,
        "preset": request.preset if request else None,
        "user": request.user if request else None,
        "text": {"format": {"type": "text"}},
        "truncation": "disabled",
        "usage": usage,
    }


def message_item(
    item_id: str,
    text: str,
    annotations: Sequence[dict[str, Any]] = (),
    status: str = "completed",
) -> dict[str, Any]:
    return {
        "type": "message",
        "id": item_id,
        "role": "assistant",
        "status": status,
        "content": [output_text_part(text, annotations)],
    }


def output_text_part(text: str, annotations: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": list(annotations), "logprobs": []}


def url_citation(url: str, title: str, start: int, end: int) -> dict[str, Any]:
    return {"type": "url_citation", "url": url, "title": title, "start_index": start,
            "end_index": end}  # fmt: skip


def function_call_item(
    item_id: str, call_id: str, name: str, arguments: str, status: str = "completed"
) -> dict[str, Any]:
    return {"type": "function_call", "id": item_id, "call_id": call_id, "name": name,
            "arguments": arguments, "status": status}  # fmt: skip


def error_payload(code: str, message: str, type_: str | None = None, param: str | None = None):  # type: ignore[no-untyped-def]
    return {"type": type_ or code, "code": code, "message": message, "param": param}


class EventWriter:
    """Frame SSE events with one `sequence_number` counter from 0."""

    def __init__(self) -> None:
        self.sequence = 0

    def event(self, type_: str, **fields: Any) -> bytes:
        data = {"type": type_, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return b"event: " + type_.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"

    def error(
        self, code: str, message: str, *, type_: str | None = None, param: str | None = None
    ) -> bytes:
        """The frame that makes both SDKs raise: event name `error` and a top-level `error`."""
        payload = error_payload(code, message, type_, param)
        return self.event("error", code=code, message=message, param=param, error=payload)

    def failed(self, response: dict[str, Any], code: str, message: str) -> list[bytes]:
        """`error`, then `response.failed` with the snapshot (read only by clients that go on)."""
        snapshot = response | {"status": "failed", "error": {"code": code, "message": message}}
        return [
            self.error(code, message, type_="server_error"),
            self.event("response.failed", response=snapshot),
        ]


def open_events(writer: EventWriter, response: dict[str, Any]) -> list[bytes]:
    """`response.created` and `response.in_progress` for a response that has not started."""
    snapshot = response | {"status": "in_progress", "output": [], "usage": None,
                           "completed_at": None}  # fmt: skip
    return [
        writer.event("response.created", response=snapshot),
        writer.event("response.in_progress", response=snapshot),
    ]


def item_events(
    writer: EventWriter, index: int, item: dict[str, Any], deltas: Sequence[str] | None = None
) -> Iterator[bytes]:
    """Every event of one finished output item, from `output_item.added` to `.done`.

    `deltas` splits a message's text (default: one delta per word); they must join to the text.
    """
    kind = item.get("type")
    if kind == "message":
        yield writer.event(
            "response.output_item.added",
            output_index=index,
            item=item | {"status": "in_progress", "content": []},
        )
        for c, part in enumerate(item.get("content") or []):
            yield from _part_events(writer, index, item["id"], c, part, deltas)
    elif kind == "function_call":
        yield writer.event(
            "response.output_item.added",
            output_index=index,
            item=item | {"status": "in_progress", "arguments": ""},
        )
        ids = {"item_id": item["id"], "output_index": index}
        yield writer.event("response.function_call_arguments.delta", **ids,
                           delta=item["arguments"])  # fmt: skip
        yield writer.event("response.function_call_arguments.done", **ids,
                           arguments=item["arguments"])  # fmt: skip
    elif kind == "web_search_call":
        yield writer.event(
            "response.output_item.added",
            output_index=index,
            item=item | {"status": "in_progress"},
        )
        for phase in ("in_progress", "searching", "completed"):
            yield writer.event(
                f"response.web_search_call.{phase}", item_id=item["id"], output_index=index
            )
    else:
        yield writer.event("response.output_item.added", output_index=index, item=item)
    yield writer.event("response.output_item.done", output_index=index, item=item)


def _part_events(
    writer: EventWriter,
    index: int,
    item_id: str,
    content_index: int,
    part: dict[str, Any],
    deltas: Sequence[str] | None,
) -> Iterator[bytes]:
    ids = {"item_id": item_id, "output_index": index, "content_index": content_index}
    if part.get("type") != "output_text":
        yield writer.event("response.content_part.added", **ids, part=part)
        yield writer.event("response.content_part.done", **ids, part=part)
        return
    text = part.get("text", "")
    yield writer.event("response.content_part.added", **ids, part=output_text_part(""))
    for delta in deltas if deltas is not None else split_words(text):
        yield writer.event("response.output_text.delta", **ids, delta=delta, logprobs=[])
    for a, annotation in enumerate(part.get("annotations") or []):
        yield writer.event(
            "response.output_text.annotation.added",
            **ids,
            annotation_index=a,
            annotation=annotation,
        )
    yield writer.event("response.output_text.done", **ids, text=text, logprobs=[])
    yield writer.event("response.content_part.done", **ids, part=part)


def split_words(text: str) -> list[str]:
    """Split text into deltas that join back to it exactly (each word keeps its leading space)."""
    deltas: list[str] = []
    for i, word in enumerate(text.split(" ")):
        piece = word if i == 0 else " " + word
        if deltas and not word:
            deltas[-1] += piece
        else:
            deltas.append(piece)
    return [d for d in deltas if d]


def stream_events(response: dict[str, Any]) -> Iterator[bytes]:
    """Every SSE event of a finished response, in the order both SDKs accept."""
    writer = EventWriter()
    yield from open_events(writer, response)
    for index, item in enumerate(response["output"]):
        yield from item_events(writer, index, item)
    yield writer.event("response.completed", response=response)

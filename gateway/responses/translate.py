"""Carry the Agent API across to an upstream that speaks only chat completions, and back.

`chat_request` turns a Responses request into a chat-completions body; `response_from_chat`
turns the chat completion into a Response object; `ChatStreamTranslator` turns chat chunks into
Responses SSE events as they arrive (one sequence counter; text and function calls become output
items, each announced before its content and closed before `response.completed`).
`tokens_from_chat` maps chat usage onto Responses usage. A chat-only upstream cannot run
Perplexity's built-in tools, so a request that asks for one is refused with 400 naming the tool.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import orjson

from core.api_errors import invalid_request
from gateway.responses.build import (
    EventWriter,
    TokenUsage,
    function_call_item,
    message_item,
    new_id,
    open_events,
    output_text_part,
    response_object,
    usage_object,
)
from gateway.responses.request import ResponsesRequest
from usage.pricing import AgentCost

INCOMPLETE_REASONS = {"length": "max_output_tokens", "content_filter": "content_filter"}


# --- request ---------------------------------------------------------------------------------


def chat_request(
    request: ResponsesRequest,
    model: str,
    *,
    history: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """Return the chat-completions body for `request`; `history` is the stored prior turn's items.

    `history` (the items of `previous_response_id`, input and output, in order) goes before this
    request's input; `instructions` are not carried over from the previous response.
    """
    for i, tool in enumerate(request.tools):
        if tool.builtin:
            raise invalid_request(
                f"The tool “{tool.type}” is not available on {model}: its model server speaks "
                "only chat completions and cannot run it. Use a function tool or another model.",
                param=f"tools[{i}].type",
            )
    messages: list[dict[str, Any]] = []
    if request.instructions:
        messages.append({"role": "system", "content": request.instructions})
    items: list[dict[str, Any]] = list(history)
    if isinstance(request.input, str):
        items.append({"type": "message", "role": "user", "content": request.input})
    else:
        items.extend(request.input)
    for item in items:
        _append_item(messages, item)
    body: dict[str, Any] = {"model": model, "messages": messages}
    if request.max_output_tokens is not None:
        body["max_tokens"] = request.max_output_tokens
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.user is not None:
        body["user"] = request.user
    body.update(_chat_tools(request))
    if request.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def _chat_tools(request: ResponsesRequest) -> dict[str, Any]:
    """The function tools and tool choice of `request` in chat completions' shape."""
    body: dict[str, Any] = {}
    functions = [t.function for t in request.tools if t.function is not None]
    if functions:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    k: v
                    for k, v in (
                        ("name", f.name),
                        ("description", f.description),
                        ("parameters", f.parameters),
                        ("strict", f.strict),
                    )
                    if v is not None
                },
            }
            for f in functions
        ]
    choice = request.tool_choice
    if isinstance(choice, dict) and choice.get("type") == "function" and "name" in choice:
        body["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    elif isinstance(choice, str):
        body["tool_choice"] = choice
    return body


def _append_item(messages: list[dict[str, Any]], item: dict[str, Any]) -> None:
    kind = item.get("type", "message")
    if kind == "message":
        role = item["role"]
        content = item["content"]
        if isinstance(content, list):
            content = _chat_parts(content)
        messages.append({"role": "system" if role == "developer" else role, "content": content})
    elif kind == "function_call":
        call = {
            "id": item["call_id"],
            "type": "function",
            "function": {"name": item["name"], "arguments": item["arguments"]},
        }
        last = messages[-1] if messages else None
        # Consecutive calls are one assistant turn in chat completions.
        if last and last["role"] == "assistant" and last.get("tool_calls") and not last["content"]:
            last["tool_calls"].append(call)
        else:
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
    elif kind == "function_call_output":
        output = item["output"]
        if isinstance(output, list):
            output = "".join(p.get("text", "") for p in output if isinstance(p, dict))
        messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": output})
    elif kind == "reasoning":
        return
    else:
        raise invalid_request(
            f"Input items of type “{kind}” cannot be sent to a chat-completions model.",
            param="input",
        )


def _chat_parts(parts: list[dict[str, Any]]) -> list[dict[str, Any]] | str:
    out: list[dict[str, Any]] = []
    for part in parts:
        kind = part.get("type")
        if kind in ("input_text", "output_text"):
            out.append({"type": "text", "text": part["text"]})
        elif kind == "input_image":
            url = part.get("image_url")
            if not isinstance(url, str):
                raise invalid_request("An input_image part needs an “image_url”.", "input")
            out.append({"type": "image_url", "image_url": {"url": url}})
        else:
            raise invalid_request(
                f"Content parts of type “{kind}” cannot be sent to a chat-completions model.",
                param="input",
            )
    if all(p["type"] == "text" for p in out):
        return "".join(p["text"] for p in out)
    return out


# --- usage -----------------------------------------------------------------------------------


def tokens_from_chat(usage: dict[str, Any] | None) -> TokenUsage:
    """Map chat-completions usage onto Responses usage (prompt → input, completion → output)."""
    usage = usage or {}
    prompt = usage.get("prompt_tokens_details") or {}
    completion = usage.get("completion_tokens_details") or {}
    return TokenUsage(
        input_tokens=_int(usage.get("prompt_tokens")),
        output_tokens=_int(usage.get("completion_tokens")),
        cache_read_tokens=_int(prompt.get("cached_tokens")),
        # Anthropic-style servers report cache writes at the top level.
        cache_creation_tokens=_int(
            usage.get("cache_creation_input_tokens", prompt.get("cache_creation_input_tokens"))
        ),
        reasoning_tokens=_int(completion.get("reasoning_tokens", usage.get("reasoning_tokens"))),
    )


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _status(finish_reason: str | None) -> tuple[str, dict[str, Any] | None]:
    reason = INCOMPLETE_REASONS.get(finish_reason or "")
    return ("incomplete", {"reason": reason}) if reason else ("completed", None)


# --- non-streamed ----------------------------------------------------------------------------


def response_from_chat(
    completion: dict[str, Any],
    *,
    request: ResponsesRequest,
    response_id: str,
    model: str,
    cost: AgentCost | None = None,
    created_at: int | None = None,
) -> dict[str, Any]:
    """Return the Response object for a chat completion; `cost` comes from the pricing module."""
    choice = (completion.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    output: list[dict[str, Any]] = []
    text = message.get("content")
    if isinstance(text, str) and text:
        output.append(message_item(new_id("msg"), text, _citations(completion)))
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        output.append(
            function_call_item(
                new_id("fc"),
                call.get("id") or new_id("call"),
                function.get("name", ""),
                function.get("arguments") or "",
            )
        )
    status, incomplete = _status(choice.get("finish_reason"))
    created = created_at if created_at is not None else int(time.time())
    return response_object(
        response_id=response_id,
        model=model,
        request=request,
        status=status,
        output=output,
        usage=usage_object(tokens_from_chat(completion.get("usage")), cost),
        created_at=created,
        completed_at=int(time.time()),
        incomplete_details=incomplete,
    )


def _citations(completion: dict[str, Any]) -> list[dict[str, Any]]:
    """Perplexity-style chat servers list sources beside the message; keep them as citations."""
    results = completion.get("search_results") or []
    titles = {r.get("url"): r.get("title", "") for r in results if isinstance(r, dict)}
    urls = [u for u in completion.get("citations") or [] if isinstance(u, str)]
    return [
        {
            "type": "url_citation",
            "url": u,
            "title": titles.get(u) or u,
            "start_index": 0,
            "end_index": 0,
        }  # fmt: skip
        for u in urls
    ]


# --- streamed --------------------------------------------------------------------------------


class ChatStreamTranslator:
    """Turn chat-completion chunks into Responses SSE events, one chunk at a time.

    Call `start()` before reading the upstream, `feed(chunk)` (or `feed_sse(frame)`) for each
    chunk, then `finish(cost)` for `response.completed`, or `fail(code, message)` when the
    upstream broke off. `usage` holds the token counts once the usage chunk arrived.
    """

    def __init__(
        self,
        request: ResponsesRequest,
        *,
        response_id: str,
        model: str,
        created_at: int | None = None,
    ) -> None:
        self.request = request
        self.writer = EventWriter()
        self.response = response_object(
            response_id=response_id,
            model=model,
            request=request,
            status="in_progress",
            created_at=created_at,
        )
        self.output: list[dict[str, Any]] = []
        self.text: dict[str, Any] | None = None  # the open message item
        self.calls: dict[int, dict[str, Any]] = {}  # chat tool_call index → open item
        self.finish_reason: str | None = None
        self.usage: TokenUsage | None = None
        self.done = False
        self.citations: list[dict[str, Any]] = []

    def start(self) -> list[bytes]:
        return open_events(self.writer, self.response)

    def feed_sse(self, frame: bytes) -> list[bytes]:
        """Feed one SSE frame of the upstream (`data: {...}`); `[DONE]` and comments are skipped."""
        out: list[bytes] = []
        for line in frame.splitlines():
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data and data != b"[DONE]":
                out += self.feed(orjson.loads(data))
        return out

    def feed(self, chunk: dict[str, Any]) -> list[bytes]:
        out: list[bytes] = []
        if chunk.get("usage"):
            self.usage = tokens_from_chat(chunk["usage"])
        if chunk.get("citations") and not self.citations:
            self.citations = _citations(chunk)
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if isinstance(content, str) and content:
                out += self._text(content)
            for call in delta.get("tool_calls") or []:
                out += self._call(call)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
                out += self._close_all()
        return out

    def _index(self) -> int:
        return len(self.output)

    def _text(self, delta: str) -> list[bytes]:
        out: list[bytes] = []
        if self.text is None:
            out += self._close_calls()
            item = message_item(new_id("msg"), "", status="in_progress") | {"content": []}
            self.text = {"item": item, "index": self._index(), "text": ""}
            self.output.append(item)
            out.append(self.writer.event("response.output_item.added",
                                         output_index=self.text["index"], item=item))  # fmt: skip
            out.append(self.writer.event("response.content_part.added", **self._ids(),
                                         part=output_text_part("")))  # fmt: skip
        self.text["text"] += delta
        out.append(self.writer.event("response.output_text.delta", **self._ids(), delta=delta,
                                     logprobs=[]))  # fmt: skip
        return out

    def _ids(self) -> dict[str, Any]:
        assert self.text is not None
        return {"item_id": self.text["item"]["id"], "output_index": self.text["index"],
                "content_index": 0}  # fmt: skip

    def _close_text(self) -> list[bytes]:
        if self.text is None:
            return []
        part = output_text_part(self.text["text"], self.citations)
        item = self.text["item"] | {"status": "completed", "content": [part]}
        out = [
            self.writer.event("response.output_text.done", **self._ids(),
                              text=self.text["text"], logprobs=[]),
            self.writer.event("response.content_part.done", **self._ids(), part=part),
            self.writer.event("response.output_item.done", output_index=self.text["index"],
                              item=item),
        ]  # fmt: skip
        self.output[self.text["index"]] = item
        self.text = None
        return out

    def _call(self, call: dict[str, Any]) -> list[bytes]:
        out: list[bytes] = []
        index = call.get("index", 0)
        function = call.get("function") or {}
        if index not in self.calls:
            out += self._close_text()
            item = function_call_item(
                new_id("fc"), call.get("id") or new_id("call"), function.get("name") or "", "",
                status="in_progress",
            )  # fmt: skip
            self.calls[index] = {"item": item, "index": self._index()}
            self.output.append(item)
            out.append(self.writer.event("response.output_item.added",
                                         output_index=self._index() - 1, item=item))  # fmt: skip
        open_call = self.calls[index]
        fragment = function.get("arguments") or ""
        if fragment:
            open_call["item"] = open_call["item"] | {
                "arguments": open_call["item"]["arguments"] + fragment
            }
            out.append(self.writer.event("response.function_call_arguments.delta",
                                         item_id=open_call["item"]["id"],
                                         output_index=open_call["index"], delta=fragment))  # fmt: skip
        return out

    def _close_calls(self) -> list[bytes]:
        out: list[bytes] = []
        for open_call in self.calls.values():
            item = open_call["item"] | {"status": "completed"}
            out.append(self.writer.event("response.function_call_arguments.done",
                                         item_id=item["id"], output_index=open_call["index"],
                                         arguments=item["arguments"]))  # fmt: skip
            out.append(self.writer.event("response.output_item.done",
                                         output_index=open_call["index"], item=item))  # fmt: skip
            self.output[open_call["index"]] = item
        self.calls = {}
        return out

    def _close_all(self) -> list[bytes]:
        return self._close_text() + self._close_calls()

    def finish(self, cost: AgentCost | None = None) -> list[bytes]:
        """Close what is open and send `response.completed` with usage (and cost, if given)."""
        out = self._close_all()
        status, incomplete = _status(self.finish_reason)
        self.response = self.response | {
            "status": status,
            "incomplete_details": incomplete,
            "output": list(self.output),
            "usage": usage_object(self.usage or TokenUsage(), cost),
            "completed_at": int(time.time()),
        }
        self.done = True
        kind = "response.completed" if status == "completed" else "response.incomplete"
        out.append(self.writer.event(kind, response=self.response))
        return out

    def fail(self, code: str, message: str) -> list[bytes]:
        """The frames that make both SDKs raise, after the stream had started."""
        self.done = True
        return self.writer.failed(self.response | {"output": list(self.output)}, code, message)

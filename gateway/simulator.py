"""The built-in SIMULATOR upstream (`simulator://`): for the demo, tests and benchmarks only.

It answers in the OpenAI/Perplexity chat-completions shape with plausible usage, citations and
search counts, streaming and not, without any network call or model. Token counts are derived
deterministically from the request so tests can predict them: prompt tokens = characters of all
message contents ÷ 4 (at least 1); the answer is a fixed sentence whose tokens are its words.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson

ANSWER = (
    "This answer comes from the portal's built-in simulator. Connect a real model server "
    "in the model catalogue to get real answers."
)
CITATIONS = ["https://example.com/simulated-source-1", "https://example.com/simulated-source-2"]


def _prompt_tokens(payload: dict[str, Any]) -> int:
    chars = 0
    for message in payload.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            chars += sum(len(p.get("text", "")) for p in content if isinstance(p, dict))
    return max(1, chars // 4)


def usage_for(model: str, payload: dict[str, Any]) -> dict[str, Any]:
    words = ANSWER.split()
    usage: dict[str, Any] = {
        "prompt_tokens": _prompt_tokens(payload),
        "completion_tokens": len(words),
    }
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    size = (payload.get("web_search_options") or {}).get("search_context_size", "low")
    usage["search_context_size"] = size if size in ("low", "medium", "high") else "low"
    if "deep-research" in model:
        usage["citation_tokens"] = 120
        usage["reasoning_tokens"] = 240
        usage["num_search_queries"] = 3
    return usage


def complete(model: str, payload: dict[str, Any]) -> bytes:
    return orjson.dumps(
        {
            "id": f"sim-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "citations": CITATIONS,
            "search_results": [{"title": "Simulated source", "url": u} for u in CITATIONS],
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": ANSWER},
                }
            ],
            "usage": usage_for(model, payload),
        }
    )


def stream(model: str, payload: dict[str, Any]) -> Iterator[bytes]:
    """Yield SSE events: one per word, then a final chunk with usage, then [DONE]."""
    cid = f"sim-{uuid.uuid4().hex}"
    created = int(time.time())
    words = ANSWER.split()
    for i, word in enumerate(words):
        chunk = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "delta": {"role": "assistant", "content": word if i == 0 else " " + word},
                    "finish_reason": None,
                }
            ],
        }
        yield b"data: " + orjson.dumps(chunk) + b"\n\n"
    final = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "citations": CITATIONS,
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        "usage": usage_for(model, payload),
    }
    yield b"data: " + orjson.dumps(final) + b"\n\n"
    yield b"data: [DONE]\n\n"

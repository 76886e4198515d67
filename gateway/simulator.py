"""The built-in SIMULATOR upstream (`simulator://`): for the demo, tests and benchmarks only.

It answers in the OpenAI/Perplexity chat-completions shape with plausible usage, citations and
search counts, streaming and not, without any network call or model. Token counts are derived
deterministically from the request so tests can predict them: prompt tokens = characters of all
message contents ÷ 4 (at least 1); the answer is a fixed sentence whose tokens are its words.

It also answers the Agent API (`POST /v1/responses`, `/v1/agent`) with `agent_response` /
`agent_complete` / `agent_stream`, built with `gateway.responses.build`: with
`tools=[{"type": "web_search"}]` a `web_search_call` item, then a message whose text cites two
sources as `url_citation` annotations, and usage with `tool_calls_details` and a cost at
Perplexity's published `perplexity/sonar` rates, as an upstream reports it (the gateway prices
the counts itself). Input tokens = characters of `instructions` and every input text ÷ 4 (at
least 1), plus 200 tokens of embedded search results per search; output tokens are the answer's
words; a request with `previous_response_id` reads half its input from the cache.

And the Search API (`POST /search`) with `search`: deterministic pages per query (the same query
and search type give the same titles, URLs, snippets and dates), a list of lists for a list
query, profile pages for people search, the domain allow/deny list and the recency filter honoured.
Embeddings (`embeddings`, `contextualized_embeddings`): float unit vectors seeded by the text and
⌈characters ÷ 4⌉ prompt tokens per text, as an OpenAI-compatible embeddings server reports them.
"""

from __future__ import annotations

import array
import datetime
import hashlib
import math
import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson

from gateway.responses.build import (
    TokenUsage,
    message_item,
    new_id,
    response_object,
    stream_events,
    url_citation,
    usage_object,
)
from gateway.responses.request import ResponsesRequest, parse_request
from usage.pricing import AgentCost, ToolCharge

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


# --- Agent API (/v1/responses) ------------------------------------------------------------------

AGENT_SOURCES = [
    ("Simulated source one", CITATIONS[0]),
    ("Simulated source two", CITATIONS[1]),
]
# What the simulated upstream says it charges: Perplexity's published perplexity/sonar rates,
# in micro-dollars per token (= dollars per 1M tokens) and per invocation.
UPSTREAM_RATES = {"input": 0.25, "output": 2.50, "cache_read": 0.0625}
UPSTREAM_TOOL_FEES = {"web_search": 2500, "fetch_url": 500, "people_search": 5000,
                      "finance_search": 5000}  # fmt: skip
SEARCH_CONTEXT_TOKENS = 200


def _input_text(request: ResponsesRequest) -> str:
    if isinstance(request.input, str):
        texts = [request.input]
    else:
        texts = []
        for item in request.input:
            content = item.get("content", item.get("output", ""))
            if isinstance(content, str):
                texts.append(content)
            elif isinstance(content, list):
                texts += [p.get("text", "") for p in content if isinstance(p, dict)]
    return (request.instructions or "") + "".join(texts)


def agent_response(model: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Return a completed Response object for a (validated) Agent API request body."""
    request = parse_request(payload)
    searched = "web_search" in request.tool_types
    output: list[dict[str, Any]] = []
    if searched:
        query = " ".join(_input_text(request).split()[:12]) or "simulated query"
        output.append(
            {
                "type": "web_search_call",
                "id": new_id("ws"),
                "status": "completed",
                "action": {
                    "type": "search",
                    "query": query,
                    "sources": [{"type": "url", "url": url} for _, url in AGENT_SOURCES],
                },
            }
        )
        first, second = ANSWER.split(". ", 1)
        text = f"{first} [1]. {second.rstrip('.')} [2]."
        annotations = [
            url_citation(url, title, text.index(mark), text.index(mark) + len(mark))
            for mark, (title, url) in zip(("[1]", "[2]"), AGENT_SOURCES, strict=True)
        ]
    else:
        text, annotations = ANSWER, []
    output.append(message_item(new_id("msg"), text, annotations))
    prompt = max(1, len(_input_text(request)) // 4) + (SEARCH_CONTEXT_TOKENS if searched else 0)
    cached = prompt // 2 if request.previous_response_id else 0
    reasoning = {"medium": 120, "high": 240, "xhigh": 480}.get(request.effort or "", 0)
    tokens = TokenUsage(
        input_tokens=prompt,
        output_tokens=len(text.split()) + reasoning,
        cache_read_tokens=cached,
        reasoning_tokens=reasoning,
    )
    tools = {
        tool: ToolCharge(1, fee)
        for tool, fee in UPSTREAM_TOOL_FEES.items()
        if tool in request.tool_types
    }
    cost = AgentCost(
        input=round((prompt - cached) * UPSTREAM_RATES["input"]),
        output=round(tokens.output_tokens * UPSTREAM_RATES["output"]),
        citation=0,
        reasoning=0,
        search=0,
        request=0,
        cache_read=round(cached * UPSTREAM_RATES["cache_read"]),
        tools=sum(t.cost_micros for t in tools.values()),
        tool_calls=tools,
    )
    now = int(time.time())
    return response_object(
        response_id=new_id("resp"),
        model=model,
        request=request,
        status="completed",
        output=output,
        usage=usage_object(tokens, cost),
        created_at=now,
        completed_at=now,
    )


def agent_complete(model: str, payload: dict[str, Any]) -> bytes:
    return orjson.dumps(agent_response(model, payload))


def agent_stream(model: str, payload: dict[str, Any]) -> Iterator[bytes]:
    """Yield the SSE events of `agent_response`: one text delta per word, usage at the end."""
    yield from stream_events(agent_response(model, payload))


# --- Search API (/search) -----------------------------------------------------------------------

SEARCH_SITES = (
    ("en.wikipedia.org", "Wikipedia"),
    ("www.reuters.com", "Reuters"),
    ("www.nature.com", "Nature"),
    ("arxiv.org", "arXiv"),
    ("www.bbc.com", "BBC"),
    ("github.com", "GitHub"),
    ("www.britannica.com", "Britannica"),
    ("stackoverflow.com", "Stack Overflow"),
    ("www.theguardian.com", "The Guardian"),
    ("developer.mozilla.org", "MDN"),
)
PEOPLE_ROLES = ("Research Scientist", "Software Engineer", "Product Manager", "Founder & CEO",
                "Professor", "Data Scientist", "Head of Design", "Investigative Journalist")  # fmt: skip
PEOPLE_NAMES = ("Ada Moreau", "Kenji Sato", "Priya Raman", "Lucas Weber", "Amara Okafor",
                "Sofia Lindqvist", "Diego Alvarez", "Mei Chen", "Noah Fischer", "Leila Haddad")  # fmt: skip
RECENCY_DAYS = {"hour": 0, "day": 1, "week": 7, "month": 30, "year": 365}


def _slug(text: str) -> str:
    words = "".join(c if c.isalnum() else " " for c in text.lower()).split()
    return "-".join(words[:8]) or "result"


def _sites(domains: list[str] | None) -> list[tuple[str, str]]:
    """The sites results may come from: the allow-list if one is given, minus excluded ones."""
    domains = domains or []
    allowed = [d for d in domains if not d.startswith("-")]
    excluded = {d[1:].removeprefix("www.") for d in domains if d.startswith("-")}
    sites = [(d, d.removeprefix("www.")) for d in allowed] if allowed else list(SEARCH_SITES)
    kept = [s for s in sites if s[0].removeprefix("www.") not in excluded]
    return kept or [("example.com", "Example")]


def search_results(query: str, payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The simulated results of one query: deterministic for the same query and options."""
    search_type = payload.get("search_type") or "web"
    count = payload.get("max_results") or 10
    seed = hashlib.sha256(f"{search_type}\0{query}".encode()).digest()
    recency = RECENCY_DAYS.get(payload.get("search_recency_filter") or "")
    today = datetime.date.today()
    sites = _sites(payload.get("search_domain_filter"))
    per_page = payload.get("max_tokens_per_page") or 4096
    slug = _slug(query)
    results = []
    for i in range(count):
        b = seed[i % len(seed)] + i
        if recency is not None:
            day = today - datetime.timedelta(days=b % (recency + 1))
        else:
            day = datetime.date(2025, 1, 1) + datetime.timedelta(days=(b * 7 + i) % 330)
        updated = min(day + datetime.timedelta(days=b % 45), max(day, today))
        if search_type == "people":
            name = PEOPLE_NAMES[b % len(PEOPLE_NAMES)]
            role = PEOPLE_ROLES[(b // 3) % len(PEOPLE_ROLES)]
            title = f"{name} – {role} | {query}"
            url = f"https://www.linkedin.com/in/{_slug(name)}-{b:03d}"
            snippet = (
                f"{name} is a {role.lower()} known for work on {query}. Experience, "
                "publications and contact details from the public profile."
            )
        else:
            domain, site = sites[(b + i) % len(sites)]
            title = (
                f"{query.strip().capitalize()} — {site}"
                if i == 0
                else f"{query.strip().capitalize()}: part {i + 1} ({site})"
            )
            url = f"https://{domain}/{slug}" + (f"-{i + 1}" if i else "")
            snippet = (
                f"What {site} says about {query.strip()}: an overview with background, "
                "recent developments and sources. "
            ) * (2 if search_type == "web" else 1)
        results.append({
            "title": title,
            "url": url,
            "snippet": snippet[: per_page * 4].strip(),
            "date": day.isoformat(),
            "last_updated": updated.isoformat(),
        })  # fmt: skip
    return results


def search(payload: dict[str, Any]) -> bytes:
    """A Search API answer (`POST /search`) for a validated request: results per query, a list
    of lists for a list query (as Perplexity's multi-query search returns them)."""
    query = payload["query"]
    if isinstance(query, list):
        results: list[Any] = [search_results(q, payload) for q in query]
    else:
        results = search_results(query, payload)
    server_time = None
    if payload.get("display_server_time"):
        server_time = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    return orjson.dumps({"id": f"srch_{uuid.uuid4().hex}", "results": results,
                         "server_time": server_time})  # fmt: skip


# --- embeddings (POST /v1/embeddings, /v1/contextualizedembeddings) -------------------------------
# As an OpenAI-compatible embeddings server answers with `encoding_format: "float"`: a unit vector
# of the model's full length per text, pseudo-random but deterministic (seeded by the model and
# the text; a contextualized chunk also by its whole document, so the same chunk in another
# document has another vector), and prompt tokens ⌈characters ÷ 4⌉ per text (at least 1).


def embedding_tokens(text: str) -> int:
    return max(1, -(-len(text) // 4))


def _unit_vector(seed: str, dimensions: int) -> list[float]:
    raw = array.array("b", hashlib.shake_256(seed.encode()).digest(dimensions))
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [x / norm for x in raw]


def embeddings(model: str, texts: list[str], dimensions: int) -> dict[str, Any]:
    data = [
        {
            "object": "embedding",
            "index": i,
            "embedding": _unit_vector(f"{model}\0{text}", dimensions),
        }
        for i, text in enumerate(texts)
    ]
    tokens = sum(embedding_tokens(t) for t in texts)
    return {"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}  # fmt: skip


def contextualized_embeddings(
    model: str, documents: list[list[str]], dimensions: int
) -> dict[str, Any]:
    data = []
    for d, chunks in enumerate(documents):
        context = hashlib.sha256("\0".join(chunks).encode()).hexdigest()
        vectors = [
            {"object": "embedding", "index": i,
             "embedding": _unit_vector(f"{model}\0{context}\0{chunk}", dimensions)}
            for i, chunk in enumerate(chunks)
        ]  # fmt: skip
        data.append({"object": "list", "index": d, "data": vectors})
    tokens = sum(embedding_tokens(c) for chunks in documents for c in chunks)
    return {"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}  # fmt: skip

"""Embeddings on the gateway's fast path: `POST /v1/embeddings` and `/v1/contextualizedembeddings`.

Same key check, admission, exactly-once metering and error shapes as chat completions
(gateway/app.py). Models: the catalogue's `api = "embeddings"` models; a `contextualized` one is
served on /v1/contextualizedembeddings only, any other on /v1/embeddings only (404
`model_not_found` on the wrong path, like a chat model on the Agent API).

Request (the perplexityai SDK's `embeddings.create` / `contextualized_embeddings.create`, and
openai's `embeddings.create`): `model`, `input` (a text or a list of texts; contextualized: a
list of documents, each a list of chunks), `dimensions` (128 to the model's length, default the
whole vector), `encoding_format`. Perplexity's limits (docs/research/search-embeddings-async.md
§1.2, §1.3) are checked before anything else happens; a request past one is a 400 naming the
field, nothing is sent upstream and nothing is charged. Token limits are checked on an estimate
(⌈characters ÷ 4⌉ per text, the simulator's count): the charge is always the upstream's count.

Encodings, all computed here from the upstream's float vector (never an upstream's own bits, so
every upstream gives the same bytes for the same vector):
- `base64_int8` (the default, Perplexity's): one signed byte per dimension, the vector scaled so
  that its largest |component| is 127 and rounded to the nearest integer (cosine similarity is
  what it keeps; Perplexity's own scale is not published);
- `base64_binary` (Perplexity's): one bit per dimension, 1 for a component > 0, packed LSB first,
  ⌈dimensions ÷ 8⌉ bytes (the last byte zero-padded when dimensions is not a multiple of 8);
- `float` and `base64` (OpenAI's, /v1/embeddings only, so that `openai.OpenAI().embeddings.create`
  works: it sends `base64` unless told otherwise): the floats, as a JSON list or as base64 of
  little-endian float32.
`dimensions` below the model's length keeps the first components (Matryoshka) and, for the float
encodings, rescales them to unit length.

Upstreams: a standard model's is any OpenAI-compatible server (vLLM, llama.cpp, TEI, or
Perplexity's own at https://api.perplexity.ai/v1): `POST {base}/embeddings` with the upstream
model name and the texts, no `encoding_format` (so OpenAI-compatible servers answer with floats)
and no `dimensions` (the gateway truncates; not every server can). An answer with base64 strings
instead of float lists is read as Perplexity's default, base64_int8. A contextualized model's
upstream is called the same way at `{base}/contextualizedembeddings` with the documents
(Perplexity's route and body): an OpenAI-compatible /embeddings server cannot embed a chunk in
the context of its document, and flattening the chunks would sell plain embeddings at the
contextualized price, so it is not done. `usage.prompt_tokens` of the upstream is what is
charged; an answer without usage, or with the wrong number of vectors, or vectors shorter than
asked, is a 502 and nothing is charged.

Cost: prompt tokens × the model's input price per 1M, rounded half up once per request to whole
micro-dollars (usage/pricing.py `embeddings_cost`); `usage.cost` ({currency, input_cost,
total_cost} in dollars) is exactly the micros charged.
"""

from __future__ import annotations

import base64
import binascii
import math
import sys
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from core.api_errors import GatewayError, invalid_request
from gateway import attribution, estimates, metrics, simulator
from gateway.catalogue import ModelInfo
from gateway.http import Receive, Scope, Send, respond, upstream_error
from gateway.keycache import KeyInfo
from usage.catalogue import MIN_DIMENSIONS
from usage.metrics import counts_of
from usage.pricing import Cost, Usage, embeddings_cost, embeddings_usage_cost

if TYPE_CHECKING:
    from gateway.app import GatewayApp
    from gateway.store import Store

STANDARD_PATH = "/v1/embeddings"
CONTEXTUALIZED_PATH = "/v1/contextualizedembeddings"
PATHS = frozenset({STANDARD_PATH, CONTEXTUALIZED_PATH})
EMBEDDINGS = "embeddings"  # usage.metrics.APIS

# Perplexity's limits (docs/research/search-embeddings-async.md §1.2, §1.3).
MAX_TEXTS = 512  # texts of a standard request, documents of a contextualized one
MAX_CHUNKS = 16_000  # chunks of a contextualized request, all documents together
MAX_TOKENS_PER_TEXT = 32_768  # "32K": a text (standard) or a whole document (contextualized)
MAX_TOKENS = 120_000  # all texts of a request together
CHARS_PER_TOKEN = 4  # the estimate the limits are checked on

PERPLEXITY_ENCODINGS = ("base64_int8", "base64_binary")
OPENAI_ENCODINGS = ("float", "base64")
DEFAULT_ENCODING = "base64_int8"


def encodings(contextualized: bool) -> tuple[str, ...]:
    """The encoding formats a path accepts (OpenAI's only where OpenAI's SDK calls)."""
    return PERPLEXITY_ENCODINGS if contextualized else PERPLEXITY_ENCODINGS + OPENAI_ENCODINGS


@dataclass(frozen=True)
class EmbeddingsRequest:
    model: str
    contextualized: bool
    # The texts, in order (a contextualized request's chunks, document after document).
    texts: list[str]
    # A contextualized request's documents (their chunks); None for a standard request.
    documents: list[list[str]] | None
    dimensions: int | None
    encoding: str


def estimated_tokens(text: str) -> int:
    return -(-len(text) // CHARS_PER_TOKEN)


def _text(value: Any, param: str) -> str:
    if isinstance(value, str):
        if not value:
            raise invalid_request("Empty strings are not allowed in “input”.", param=param)
        return value
    if isinstance(value, int) or (isinstance(value, list) and value and isinstance(value[0], int)):
        raise invalid_request(
            "Token arrays are not accepted: send the text itself in “input”.", param=param
        )
    raise invalid_request("Each input must be a string.", param=param)


def _too_long(tokens: int, param: str, what: str) -> None:
    if tokens > MAX_TOKENS_PER_TEXT:
        raise invalid_request(
            f"{what} is about {tokens:,} tokens long; the limit is {MAX_TOKENS_PER_TEXT:,} "
            f"tokens (counted here as characters ÷ {CHARS_PER_TOKEN}).",
            param=param,
        )


def parse_request(body: dict[str, Any], contextualized: bool) -> EmbeddingsRequest:
    """The request, or a 400 naming the field (module docstring: the limits)."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid_request("“model” is required and must be a string.", param="model")
    raw = body.get("input")
    texts: list[str] = []
    documents: list[list[str]] | None = None
    total = 0
    if contextualized:
        if not isinstance(raw, list) or not raw:
            raise invalid_request(
                "“input” is required: a non-empty list of documents, each a list of chunks.",
                param="input",
            )
        if len(raw) > MAX_TEXTS:
            raise invalid_request(
                f"“input” has {len(raw):,} documents; the limit is {MAX_TEXTS}.", param="input"
            )
        documents = []
        for d, doc in enumerate(raw):
            if not isinstance(doc, list) or not doc:
                raise invalid_request(
                    "Each document must be a non-empty list of chunks (strings).",
                    param=f"input[{d}]",
                )
            chunks = [_text(chunk, f"input[{d}][{c}]") for c, chunk in enumerate(doc)]
            documents.append(chunks)
            texts += chunks
            if len(texts) > MAX_CHUNKS:
                raise invalid_request(
                    f"“input” has more than {MAX_CHUNKS:,} chunks in all; the limit is "
                    f"{MAX_CHUNKS:,}.",
                    param="input",
                )
            tokens = sum(estimated_tokens(chunk) for chunk in chunks)
            _too_long(tokens, f"input[{d}]", "This document")
            total += tokens
    else:
        if isinstance(raw, str):
            texts = [_text(raw, "input")]
        elif isinstance(raw, list) and raw and not isinstance(raw[0], int):
            if len(raw) > MAX_TEXTS:
                raise invalid_request(
                    f"“input” has {len(raw):,} texts; the limit is {MAX_TEXTS}.", param="input"
                )
            texts = [_text(text, f"input[{i}]") for i, text in enumerate(raw)]
        elif isinstance(raw, list) and raw:
            _text(raw, "input")  # a token array: refused with its message
        else:
            raise invalid_request(
                "“input” is required: a non-empty string or a non-empty list of strings.",
                param="input",
            )
        for i, text in enumerate(texts):
            tokens = estimated_tokens(text)
            _too_long(tokens, "input" if isinstance(raw, str) else f"input[{i}]", "This text")
            total += tokens
    if total > MAX_TOKENS:
        raise invalid_request(
            f"“input” is about {total:,} tokens in all; the limit is {MAX_TOKENS:,} tokens per "
            f"request (counted here as characters ÷ {CHARS_PER_TOKEN}).",
            param="input",
        )
    dimensions = body.get("dimensions")
    if dimensions is not None and (
        not isinstance(dimensions, int) or isinstance(dimensions, bool)
        or dimensions < MIN_DIMENSIONS
    ):  # fmt: skip
        raise invalid_request(
            f"“dimensions” must be a whole number from {MIN_DIMENSIONS} to the model's length.",
            param="dimensions",
        )
    encoding = body.get("encoding_format")
    allowed = encodings(contextualized)
    if encoding is None:
        encoding = DEFAULT_ENCODING
    elif encoding not in allowed:
        raise invalid_request(
            f"“encoding_format” must be one of {', '.join(allowed)}"
            + ("" if not contextualized else " (float and base64 are for /v1/embeddings)")
            + ".",
            param="encoding_format",
        )
    return EmbeddingsRequest(model, contextualized, texts, documents, dimensions, encoding)


# --- encodings --------------------------------------------------------------------------------


def _unit(vector: Sequence[float]) -> list[float]:
    norm = math.sqrt(math.fsum(x * x for x in vector))
    return [x / norm for x in vector] if norm else list(vector)


def encode(vector: Sequence[float], dimensions: int, encoding: str) -> str | list[float]:
    """One vector (the upstream's floats) in `encoding`, cut to `dimensions` (module docstring)."""
    if len(vector) > dimensions:
        vector = vector[:dimensions]
        if encoding in OPENAI_ENCODINGS:
            vector = _unit(vector)
    if encoding == "float":
        return vector.tolist() if isinstance(vector, array) else list(vector)
    if encoding == "base64":
        floats = array("f", vector)  # OverflowError past float32's range
        if sys.byteorder == "big":
            floats.byteswap()
        packed = floats.tobytes()  # little-endian float32
    elif encoding == "base64_int8":
        peak = max(map(abs, vector), default=0.0)
        scale = 127 / peak if peak else 0.0
        packed = array("b", [round(x * scale) for x in vector]).tobytes()
    else:  # base64_binary: 1 for > 0, least significant bit first
        out = bytearray((len(vector) + 7) // 8)
        for i, x in enumerate(vector):
            if x > 0:
                out[i >> 3] |= 1 << (i & 7)
        packed = bytes(out)
    return base64.b64encode(packed).decode()


def _floats(value: Any) -> Sequence[float]:
    """An upstream's vector: a list of numbers, or base64 int8 (Perplexity's default)."""
    if isinstance(value, list):
        return array("d", value)  # TypeError for anything but numbers
    if isinstance(value, str):
        try:
            return array("d", array("b", base64.b64decode(value, validate=True)))
        except (binascii.Error, ValueError):
            raise TypeError from None
    raise TypeError


def _items(data: Any, count: int) -> list[dict[str, Any]]:
    """`count` objects of a `data` list, by their `index` (their order when they have none)."""
    if not isinstance(data, list) or len(data) != count:
        raise TypeError
    if not all(isinstance(item, dict) for item in data):
        raise TypeError
    if all(isinstance(item.get("index"), int) for item in data):
        data = sorted(data, key=lambda item: item["index"])
        if [item["index"] for item in data] != list(range(count)):
            raise TypeError
    return data


def vectors_of(answer: Any, request: EmbeddingsRequest) -> tuple[list[Sequence[float]], int]:
    """The upstream's vectors (one per text, in order) and its prompt tokens; TypeError when
    the answer is not one."""
    if not isinstance(answer, dict) or not isinstance(answer.get("usage"), dict):
        raise TypeError
    usage = answer["usage"]
    tokens = usage.get("prompt_tokens", usage.get("total_tokens"))
    if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 0:
        raise TypeError
    if request.documents is None:
        items = _items(answer.get("data"), len(request.texts))
    else:
        items = []
        for doc, chunks in zip(
            _items(answer.get("data"), len(request.documents)), request.documents, strict=True
        ):
            items += _items(doc.get("data"), len(chunks))
    return [_floats(item.get("embedding")) for item in items], tokens


# --- the route --------------------------------------------------------------------------------


class EmbeddingsAPI:
    def __init__(self, app: GatewayApp) -> None:
        self.app = app

    async def handle(
        self, scope: Scope, receive: Receive, send: Send, key: KeyInfo, request_id: str,
        headers: list,
    ) -> int:  # fmt: skip
        started = time.perf_counter()
        contextualized = scope["path"] == CONTEXTUALIZED_PATH
        payload = await self.app.read_body(scope, receive)
        request = parse_request(payload, contextualized)
        attribution.with_body(payload)  # `user`
        store = await self.app.store()
        model = self.choose(await store.models(), request)
        scope["portal.model"] = model.name
        dimensions = request.dimensions or model.dimensions
        if dimensions > model.dimensions:
            raise invalid_request(
                f"“dimensions” must be from {MIN_DIMENSIONS} to {model.dimensions} for "
                f"{model.name}.",
                param="dimensions",
            )
        await self.app.admit(store, key, model, headers, family="embeddings",
                             request_id=request_id,
                             estimate=estimates.embeddings(model, request.texts))  # fmt: skip
        vectors, tokens = await self.embed(model, request, request_id)
        if any(len(v) < dimensions for v in vectors):
            raise upstream_error("The model server sent vectors shorter than asked for.")
        cost = embeddings_cost(model.prices, tokens)
        try:  # the answer is built before it is charged: a failure here charges nothing
            body = self.body(model, request, vectors, dimensions, tokens, cost)
        except (OverflowError, ValueError):
            raise upstream_error("The model server sent a vector it cannot have meant.") from None
        await self.meter(store, key, model, tokens, cost, request_id, started)
        await respond(send, 200, body, headers)
        return 200

    @staticmethod
    def choose(models: dict[str, ModelInfo], request: EmbeddingsRequest) -> ModelInfo:
        model = models.get(request.model)
        if model is None or not model.serves(EMBEDDINGS):
            raise GatewayError(
                404, "model_not_found",
                f"The model “{request.model}” does not exist or is not an enabled embeddings "
                "model.",
                type_="invalid_request_error", param="model",
            )  # fmt: skip
        if model.contextualized != request.contextualized:
            other = CONTEXTUALIZED_PATH if model.contextualized else STANDARD_PATH
            raise GatewayError(
                404, "model_not_found",
                f"The model “{request.model}” is served on {other}, not here.",
                type_="invalid_request_error", param="model",
            )  # fmt: skip
        return model

    async def embed(
        self, model: ModelInfo, request: EmbeddingsRequest, request_id: str
    ) -> tuple[list[Sequence[float]], int]:
        if model.base_url.startswith("simulator:"):
            if request.documents is not None:
                answer: Any = simulator.contextualized_embeddings(
                    model.name, request.documents, model.dimensions
                )
            else:
                answer = simulator.embeddings(model.name, request.texts, model.dimensions)
        else:
            path = "/contextualizedembeddings" if request.contextualized else "/embeddings"
            body = {
                "model": model.upstream_model,
                "input": request.documents if request.documents is not None else request.texts,
            }
            asked = time.perf_counter()
            async with self.app.upstream(
                model, body, request_id, stream=False, path=path, body=orjson.dumps(body)
            ) as resp:
                raw = await resp.read()
            metrics.UPSTREAM.labels(model.name).observe(time.perf_counter() - asked)
            try:
                answer = orjson.loads(raw)
            except orjson.JSONDecodeError:
                answer = None
        try:
            return vectors_of(answer, request)
        except (TypeError, AttributeError):
            raise upstream_error(
                "The model server's answer is not an embeddings response with usage and one "
                "vector per input."
            ) from None

    @staticmethod
    def body(
        model: ModelInfo, request: EmbeddingsRequest, vectors: list[Sequence[float]],
        dimensions: int, tokens: int, cost: Cost,
    ) -> bytes:  # fmt: skip
        encoded = [
            {
                "object": "embedding",
                "index": 0,
                "embedding": encode(v, dimensions, request.encoding),
            }
            for v in vectors
        ]
        data: list[dict[str, Any]]
        if request.documents is None:
            for i, item in enumerate(encoded):
                item["index"] = i
            data = encoded
        else:
            data, at = [], 0
            for d, chunks in enumerate(request.documents):
                part = encoded[at : at + len(chunks)]
                for i, item in enumerate(part):
                    item["index"] = i
                data.append({"object": "list", "index": d, "data": part})
                at += len(chunks)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens,
                 "cost": embeddings_usage_cost(cost)}  # fmt: skip
        return orjson.dumps({"object": "list", "data": data, "model": model.name, "usage": usage})

    @staticmethod
    async def meter(
        store: Store, key: KeyInfo, model: ModelInfo, tokens: int, cost: Cost, request_id: str,
        started: float,
    ) -> None:  # fmt: skip
        await store.meter(key, meter_params(key, model, tokens, cost, request_id, started))


def meter_params(
    key: KeyInfo, model: ModelInfo, tokens: int, cost: Cost, request_id: str, started: float
) -> dict[str, Any]:
    """The metered request (gateway/metering.py METER_COLUMNS) of an embeddings response."""
    return {
        "request_id": request_id,
        "group_id": key.group_id,
        "key_id": key.id,
        "model_id": model.id,
        "api": EMBEDDINGS,
        **counts_of(Usage(prompt_tokens=tokens)),
        "context_size": "low",
        **cost.parts(),
        "tool_calls": {},
        "total": cost.total,
        "streamed": False,
        "latency_ms": int((time.perf_counter() - started) * 1000),
        "created": time.time(),
    }

"""The gateway's OpenAPI 3 description, served at /v1/openapi.json.

It describes what the gateway itself checks. Chat completions (`GatewayApp.read_json`): a JSON
object with a non-empty string `model`, a non-empty list of objects `messages`, an optional boolean
`stream` and an optional object `stream_options`; everything else is passed on to the model server
as it is. The Agent API (`gateway/responses/request.py`): the fields it types, each nullable (null
is the default) and no stricter than the parser, so a body the description refuses is one the
gateway refuses; finer rules (input item shapes, known model and effort names) are 400s or 404s.
The Search API (`gateway/search.py`): its parameters with the same limits as the parser.
Async chat completions (`gateway/async_jobs.py`): `request` is a chat completions request as
above (`stream: true` is a 400 there), plus an optional `idempotency_key`.
Embeddings (gateway/embeddings.py): `model`, `input` (a text or up to 512; contextualized: up to
512 documents of chunks), `dimensions` (≥ 128; the model's maximum is the gateway's 400) and
`encoding_format`.
The property-based tests in tests/gateway/test_fuzz.py generate requests from it.
"""

from __future__ import annotations

from typing import Any

import orjson

_ERROR = {"$ref": "#/components/responses/Error"}
# OpenAPI 3.0: an event stream's schema describes each event (its `event` name and `data` text).
_SSE: dict[str, Any] = {
    "schema": {
        "type": "object",
        "properties": {"event": {"type": "string"}, "data": {"type": "string"}},
    }
}
_NAME: dict[str, Any] = {"type": "string", "minLength": 1, "nullable": True}

# Usage by end user and tag (usage/attribution.py): every metered POST takes this header.
_TAG = "[A-Za-z0-9_.:-]"
_TAGS_HEADER: dict[str, Any] = {
    "name": "X-Portal-Tags",
    "in": "header",
    "required": False,
    "description": "Tags for usage reports: up to 10 comma-separated key=value pairs (keys 1–32, "
    "values 1–64 characters of A–Z a–z 0–9 _ . : -). Malformed: a 400 naming the header, "
    "nothing charged.",
    "schema": {
        "type": "string",
        "pattern": f"^ *{_TAG}{{1,32}}={_TAG}{{1,64}}( *, *{_TAG}{{1,32}}={_TAG}{{1,64}}){{0,9}} *$",
        "example": "team=search,env=prod",
    },
}
_END_USER: dict[str, Any] = {
    "type": "string",
    "minLength": 1,
    "maxLength": 128,
    "pattern": "^[^\\x00-\\x1f\\x7f]+$",
    "nullable": True,
    "description": "The end user the request is for (stored as given: send an opaque id); "
    "usage reports filter and group by it.",
}

_CHAT: dict[str, Any] = {
    "summary": "Create a chat completion (metered)",
    "security": [{"bearerAuth": []}],
    "parameters": [_TAGS_HEADER],
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ChatRequest"}}},
    },
    "responses": {
        "200": {
            "description": "The model's answer with `usage.cost` in our prices; with "
            "`stream: true`, server-sent events ending in a usage chunk and `[DONE]`.",
            "headers": {"X-Request-Id": {"schema": {"type": "string"}}},
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/ChatCompletion"}},
                "text/event-stream": _SSE,
            },
        },
        **{
            code: _ERROR
            for code in ("400", "401", "402", "404", "405", "413", "429", "502", "503", "504")
        },
    },
}

_SECURED: list[dict[str, list[str]]] = [{"bearerAuth": []}]
_RESPONSE_200: dict[str, Any] = {
    "description": "The response, with `usage.cost` in our prices.",
    "headers": {"X-Request-Id": {"schema": {"type": "string"}}},
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Response"}}},
}
_AGENT_ERRORS = ("400", "401", "402", "404", "405", "413", "429", "502", "503", "504")

_AGENT: dict[str, Any] = {
    "summary": "Create a response on the Agent API (metered)",
    "description": "With `background: true` the 200 carries the `queued` response, which runs "
    "on and is retrieved with GET /v1/responses/{response_id}. `background` and `stream` "
    "together are a 400.",
    "security": _SECURED,
    "parameters": [_TAGS_HEADER],
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/AgentRequest"}}},
    },
    "responses": {
        "200": {
            **_RESPONSE_200,
            "description": "The response (`queued` for a background one); with `stream: true`, "
            "server-sent events ending in `response.completed` (or `error`).",
            "content": {
                **_RESPONSE_200["content"],
                "text/event-stream": _SSE,
            },
        },
        **{code: _ERROR for code in _AGENT_ERRORS},
    },
}

_RESPONSE_ID = {
    "name": "response_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1, "example": "resp_0123456789abcdef"},
}


def _agent_paths(root: str, name: str) -> dict[str, Any]:
    return {
        root: {"post": {**_AGENT, "operationId": f"{name}_create"}},
        f"{root}/{{response_id}}": {
            "get": {
                "operationId": f"{name}_retrieve",
                "summary": "Retrieve a stored response (another group's is a 404)",
                "security": _SECURED,
                "parameters": [_RESPONSE_ID],
                "responses": {"200": _RESPONSE_200, **{c: _ERROR for c in ("401", "404", "405")}},
            }
        },
        f"{root}/{{response_id}}/cancel": {
            "post": {
                "operationId": f"{name}_cancel",
                "summary": "Cancel a background response that is still running",
                "security": _SECURED,
                "parameters": [_RESPONSE_ID],
                "responses": {
                    "200": _RESPONSE_200 | {"description": "The response, `cancelling`."},
                    **{c: _ERROR for c in ("400", "401", "404", "405")},
                },
            }
        },
    }


_SEARCH_ERRORS = ("400", "401", "402", "405", "413", "422", "429", "502", "503", "504")


def _search_path(name: str) -> dict[str, Any]:
    """The Search API (gateway/search.py): priced per request by `search_type`."""
    return {
        "post": {
            "operationId": name,
            "summary": "Search the web (metered: one request fee by search_type)",
            "description": "`query` may be a list of up to 5 queries: `results` is then a list of "
            "result lists, one per query. `max_results` is 1–20, up to 50 with `search_type` "
            "people. The answer carries `usage.cost` in our prices.",
            "security": _SECURED,
            "parameters": [_TAGS_HEADER],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/SearchRequest"}}
                },
            },
            "responses": {
                "200": {
                    "description": "The results, with `usage.cost`.",
                    "headers": {"X-Request-Id": {"schema": {"type": "string"}}},
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/SearchResponse"}
                        }
                    },
                },
                **{code: _ERROR for code in _SEARCH_ERRORS},
            },
        }
    }


_QUERY_TEXT: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": 4000}
_TOKENS: dict[str, Any] = {"type": "integer", "minimum": 1, "maximum": 1_000_000, "nullable": True}
_DATE: dict[str, Any] = {
    "type": "string",
    "pattern": "^[0-9]{2}/[0-9]{2}/[0-9]{4}$",
    "nullable": True,
    "example": "03/01/2025",
}


def _choice(*values: str) -> dict[str, Any]:
    return {"type": "string", "enum": list(values), "nullable": True}


# What gateway/search.py parse_request checks (cross-field rules, such as max_results above 20
# only for people search, are 400s).
_SEARCH_SCHEMAS: dict[str, Any] = {
    "SearchRequest": {
        "type": "object",
        "required": ["query"],
        "properties": {
            "query": {
                "oneOf": [
                    _QUERY_TEXT,
                    {"type": "array", "minItems": 1, "maxItems": 5, "items": _QUERY_TEXT},
                ],
                "example": "tallest building in the world",
            },
            "search_type": _choice("web", "fast", "people"),
            "max_results": {"type": "integer", "minimum": 1, "maximum": 50, "nullable": True},
            "max_tokens": _TOKENS,
            "max_tokens_per_page": _TOKENS,
            "country": {"type": "string", "minLength": 2, "maxLength": 2, "nullable": True},
            "display_server_time": {"type": "boolean", "nullable": True},
            "search_mode": _choice("web", "academic", "sec"),
            "search_recency_filter": _choice("hour", "day", "week", "month", "year"),
            "search_context_size": _choice("low", "medium", "high"),
            "search_domain_filter": {
                "type": "array",
                "maxItems": 20,
                "items": {"type": "string", "minLength": 1, "maxLength": 253},
                "nullable": True,
            },
            "search_language_filter": {
                "type": "array",
                "maxItems": 20,
                "items": {"type": "string", "minLength": 2, "maxLength": 2},
                "nullable": True,
            },
            "search_after_date_filter": _DATE,
            "search_before_date_filter": _DATE,
            "last_updated_after_filter": _DATE,
            "last_updated_before_filter": _DATE,
        },
    },
    "SearchResponse": {
        "type": "object",
        "required": ["results", "usage"],
        "properties": {
            "id": {"type": "string"},
            # Pages ({title, url, snippet, date, last_updated}); for a list query, lists of them.
            "results": {"type": "array"},
            "server_time": {"type": "string", "nullable": True},
            "usage": {
                "type": "object",
                "required": ["cost"],
                "properties": {"cost": {"type": "object"}},
            },
        },
    },
}


_JOB_200: dict[str, Any] = {
    "description": "The async request: its status and, once COMPLETED, the chat completion with "
    "`usage.cost` in our prices.",
    "headers": {"X-Request-Id": {"schema": {"type": "string"}}},
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/AsyncJob"}}},
}
_ASYNC_ID = {
    "name": "api_request",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1, "example": "0123456789abcdef0123456789abcdef"},
}
_ASYNC_PATHS: dict[str, Any] = {
    "/async/chat/completions": {
        "post": {
            "operationId": "async_chat_completions_create",
            "summary": "Create an async chat completion (admitted now, metered when it completes)",
            "description": "The job runs in the background; poll GET /async/chat/completions/{id} "
            "until COMPLETED or FAILED. The same `idempotency_key` in the same group gives back the "
            "same job. `request.stream: true` is a 400.",
            "security": _SECURED,
            "parameters": [_TAGS_HEADER],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/AsyncRequest"}}
                },
            },
            "responses": {
                "200": _JOB_200,
                **{c: _ERROR for c in ("400", "401", "402", "404", "405", "413", "429", "503")},
            },
        },
        "get": {
            "operationId": "async_chat_completions_list",
            "summary": "List the group's async requests, newest first",
            "security": _SECURED,
            "parameters": [
                {
                    "name": "limit",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
                },
                {
                    "name": "next_token",
                    "in": "query",
                    "required": False,
                    "description": "The `next_token` of the previous page (empty: the first page).",
                    "schema": {"type": "string"},
                },
            ],
            "responses": {
                "200": {
                    "description": "A page of async requests (summaries, no responses).",
                    "headers": {"X-Request-Id": {"schema": {"type": "string"}}},
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/AsyncJobList"}
                        }
                    },
                },
                **{c: _ERROR for c in ("400", "401", "405", "503")},
            },
        },
    },
    "/async/chat/completions/{api_request}": {
        "get": {
            "operationId": "async_chat_completions_get",
            "summary": "Get an async request (another group's is a 404)",
            "security": _SECURED,
            "parameters": [_ASYNC_ID],
            "responses": {"200": _JOB_200, **{c: _ERROR for c in ("401", "404", "405", "503")}},
        }
    },
}
_TIME: dict[str, Any] = {"type": "integer", "nullable": True}
_JOB_SUMMARY: dict[str, Any] = {
    "id": {"type": "string"},
    "model": {"type": "string"},
    "created_at": {"type": "integer"},
    "status": {"type": "string", "enum": ["CREATED", "IN_PROGRESS", "COMPLETED", "FAILED"]},
    "started_at": _TIME,
    "completed_at": _TIME,
    "failed_at": _TIME,
}


# Embeddings (gateway/embeddings.py): no stricter than its checks (the per-model `dimensions`
# maximum and the token limits are the gateway's 400s, not the description's).
_EMBED_ERRORS = ("400", "401", "402", "404", "405", "413", "429", "502", "503", "504")
_TEXT: dict[str, Any] = {"type": "string", "minLength": 1}


def _embeddings_path(operation: str, summary: str, request: str) -> dict[str, Any]:
    return {
        "post": {
            "operationId": operation,
            "summary": summary,
            "security": _SECURED,
            "parameters": [_TAGS_HEADER],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": f"#/components/schemas/{request}"}}
                },
            },
            "responses": {
                "200": {
                    "description": "One vector per text (per chunk, by document), with "
                    "`usage.cost` in our prices.",
                    "headers": {"X-Request-Id": {"schema": {"type": "string"}}},
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/EmbeddingsResponse"}
                        }
                    },
                },
                **{code: _ERROR for code in _EMBED_ERRORS},
            },
        }
    }


_EMBEDDING_SCHEMAS: dict[str, Any] = {
    "EmbeddingsRequest": {
        "type": "object",
        "required": ["model", "input"],
        "properties": {
            "model": {"type": "string", "minLength": 1, "example": "pplx-embed-v1-4b"},
            "input": {
                "oneOf": [
                    _TEXT,
                    {"type": "array", "minItems": 1, "maxItems": 512, "items": _TEXT},
                ],
                "example": ["What is an embedding?"],
            },
            "dimensions": {"type": "integer", "minimum": 128, "nullable": True},
            "user": _END_USER,
            "encoding_format": {
                "type": "string",
                "enum": ["base64_int8", "base64_binary", "float", "base64"],
                "nullable": True,
            },
        },
    },
    "ContextualizedEmbeddingsRequest": {
        "type": "object",
        "required": ["model", "input"],
        "properties": {
            "model": {"type": "string", "minLength": 1, "example": "pplx-embed-context-v1-4b"},
            "input": {
                "type": "array",
                "minItems": 1,
                "maxItems": 512,
                "items": {"type": "array", "minItems": 1, "items": _TEXT},
                "example": [["First chunk.", "Second chunk."]],
            },
            "dimensions": {"type": "integer", "minimum": 128, "nullable": True},
            "user": _END_USER,
            "encoding_format": {
                "type": "string",
                "enum": ["base64_int8", "base64_binary"],
                "nullable": True,
            },
        },
    },
    "EmbeddingsResponse": {
        "type": "object",
        "required": ["object", "data", "model", "usage"],
        "properties": {
            "object": {"type": "string", "enum": ["list"]},
            "data": {"type": "array", "items": {"type": "object"}},
            "model": {"type": "string"},
            "usage": {
                "type": "object",
                "required": ["prompt_tokens", "total_tokens", "cost"],
                "properties": {
                    "prompt_tokens": {"type": "integer"},
                    "total_tokens": {"type": "integer"},
                    "cost": {
                        "type": "object",
                        "required": ["currency", "input_cost", "total_cost"],
                        "properties": {
                            "currency": {"type": "string", "enum": ["USD"]},
                            "input_cost": {"type": "number"},
                            "total_cost": {"type": "number"},
                        },
                    },
                },
            },
        },
    },
}


SPEC: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "Portal gateway",
        "version": "1",
        "description": "OpenAI/Perplexity-compatible chat completions, metered per API key.",
    },
    "paths": {
        "/chat/completions": {"post": {**_CHAT, "operationId": "chat_completions"}},
        "/v1/chat/completions": {"post": {**_CHAT, "operationId": "v1_chat_completions"}},
        "/v1/models": {
            "get": {
                "operationId": "v1_models",
                "summary": "List the enabled models",
                "security": [{"bearerAuth": []}],
                "responses": {
                    "200": {
                        "description": "The models",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/ModelList"}
                            }
                        },
                    },
                    "401": _ERROR,
                    "503": _ERROR,
                },
            }
        },
        **_agent_paths("/v1/responses", "v1_responses"),
        **_agent_paths("/v1/agent", "v1_agent"),
        **_ASYNC_PATHS,
        "/search": _search_path("search"),
        "/v1/search": _search_path("v1_search"),
        "/v1/embeddings": _embeddings_path(
            "v1_embeddings", "Create embeddings (metered per input token)", "EmbeddingsRequest"
        ),
        "/v1/contextualizedembeddings": _embeddings_path(
            "v1_contextualized_embeddings",
            "Create contextualized embeddings: a vector per chunk, in its document's context",
            "ContextualizedEmbeddingsRequest",
        ),
    },
    "components": {
        "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        "responses": {
            "Error": {
                "description": "An error in the OpenAI shape",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            }
        },
        "schemas": {
            "ChatRequest": {
                "type": "object",
                "required": ["model", "messages"],
                "properties": {
                    "model": {"type": "string", "minLength": 1, "example": "sonar"},
                    "messages": {
                        "type": "array",
                        "minItems": 1,
                        # Messages are passed on as they are; only their being objects is checked.
                        "items": {"type": "object"},
                    },
                    "stream": {"type": "boolean"},
                    # The gateway adds include_usage to it, so it must be an object (or null).
                    "stream_options": {"type": "object", "nullable": True},
                    "user": _END_USER,
                    "safety_identifier": _END_USER,
                },
            },
            "AgentRequest": {
                "type": "object",
                "required": ["input"],
                "description": "Name a `model`, a `models` fallback list or an `effort` preset.",
                "properties": {
                    "input": {
                        "oneOf": [
                            {"type": "string", "minLength": 1},
                            # Items are checked by the gateway (type, role, content parts).
                            {"type": "array", "minItems": 1, "items": {"type": "object"}},
                        ],
                        "example": "What is the tallest building in the world today?",
                    },
                    "model": _NAME | {"example": "perplexity/sonar"},
                    "models": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": 5,
                        "items": {"type": "string", "minLength": 1},
                        "nullable": True,
                    },
                    "instructions": {"type": "string", "nullable": True},
                    "tools": {
                        "type": "array",
                        "nullable": True,
                        "items": {
                            "type": "object",
                            "required": ["type"],
                            "properties": {"type": {"type": "string"}},
                        },
                    },
                    "max_output_tokens": {"type": "integer", "minimum": 1, "nullable": True},
                    "stream": {"type": "boolean", "nullable": True},
                    "store": {"type": "boolean", "nullable": True},
                    "background": {"type": "boolean", "nullable": True},
                    "previous_response_id": _NAME,
                    "effort": _NAME,
                    "preset": _NAME | {"deprecated": True},
                    "metadata": {
                        "type": "object",
                        "nullable": True,
                        "maxProperties": 10,
                        "description": "Tags for usage reports, with the X-Portal-Tags header's "
                        "(same rules; the same key twice with different values is a 400).",
                        "additionalProperties": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": 64,
                            "pattern": f"^{_TAG}+$",
                        },
                    },
                    "user": _END_USER,
                    "safety_identifier": _END_USER,
                },
            },
            "AsyncRequest": {
                "type": "object",
                "required": ["request"],
                "properties": {
                    "request": {"$ref": "#/components/schemas/ChatRequest"},
                    "idempotency_key": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": 255,
                        "nullable": True,
                    },
                },
            },
            "AsyncJob": {
                "type": "object",
                "required": ["id", "model", "created_at", "status"],
                "properties": {
                    **_JOB_SUMMARY,
                    "error_message": {"type": "string", "nullable": True},
                    "response": {"type": "object", "nullable": True},
                },
            },
            "AsyncJobList": {
                "type": "object",
                "required": ["requests"],
                "properties": {
                    "requests": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["id", "model", "created_at", "status"],
                            "properties": _JOB_SUMMARY,
                        },
                    },
                    "next_token": {"type": "string", "nullable": True},
                },
            },
            "Response": {
                "type": "object",
                "required": ["id", "object", "status"],
                "properties": {
                    "id": {"type": "string"},
                    "object": {"type": "string", "enum": ["response"]},
                    "status": {"type": "string"},
                    "output": {"type": "array"},
                    "usage": {
                        "type": "object",
                        "nullable": True,
                        "properties": {"cost": {"type": "object"}},
                    },
                },
            },
            "ChatCompletion": {
                "type": "object",
                "required": ["choices", "usage"],
                "properties": {
                    "choices": {"type": "array"},
                    "usage": {
                        "type": "object",
                        "required": ["cost"],
                        "properties": {"cost": {"type": "object"}},
                    },
                },
            },
            **_SEARCH_SCHEMAS,
            **_EMBEDDING_SCHEMAS,
            "ModelList": {
                "type": "object",
                "required": ["object", "data"],
                "properties": {
                    "object": {"type": "string", "enum": ["list"]},
                    "data": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["id"],
                            "properties": {"id": {"type": "string"}},
                        },
                    },
                },
            },
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {
                        "type": "object",
                        "required": ["message", "type", "code"],
                        "properties": {
                            "message": {"type": "string"},
                            "type": {"type": "string"},
                            "code": {"type": "string"},
                            "param": {"type": "string", "nullable": True},
                            # 402 budget_exceeded: the hard budget that refused the request.
                            "budget": {
                                "type": "object",
                                "properties": {
                                    "id": {"type": "integer"},
                                    "scope": {"type": "string", "enum": ["group", "key"]},
                                    "name": {"type": "string"},
                                    "amount": {"type": "number"},
                                    "window": {"type": "string"},
                                    "spent": {"type": "number"},
                                    "resets_at": {
                                        "type": "string",
                                        "format": "date-time",
                                        "nullable": True,
                                    },
                                },
                            },
                        },
                    }
                },
            },
        },
    },
}


def _key_restrictions(spec: dict[str, Any]) -> None:
    """Every operation that takes a key may also be refused by the key's restrictions: 403
    (`model_not_allowed`, `ip_not_allowed`; gateway/restrictions.py)."""
    for operations in spec["paths"].values():
        for operation in operations.values():
            responses = operation.get("responses", {}) if isinstance(operation, dict) else {}
            if "401" in responses:
                responses.setdefault("403", _ERROR)


_key_restrictions(SPEC)
SPEC_JSON = orjson.dumps(SPEC)

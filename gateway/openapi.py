"""The gateway's OpenAPI 3 description, served at /v1/openapi.json.

It describes what the gateway itself checks. Chat completions (`GatewayApp.read_json`): a JSON
object with a non-empty string `model`, a non-empty list of objects `messages`, an optional boolean
`stream` and an optional object `stream_options`; everything else is passed on to the model server
as it is. The Agent API (`gateway/responses/request.py`): the fields it types, each nullable (null
is the default) and no stricter than the parser, so a body the description refuses is one the
gateway refuses; finer rules (input item shapes, known model and effort names) are 400s or 404s.
Embeddings (gateway/embeddings.py): `model`, `input` (a text or up to 512; contextualized: up to
512 documents of chunks), `dimensions` (≥ 128; the model's maximum is the gateway's 400) and
`encoding_format`. The property-based tests in tests/gateway/test_fuzz.py generate requests
from it.
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

_CHAT: dict[str, Any] = {
    "summary": "Create a chat completion (metered)",
    "security": [{"bearerAuth": []}],
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
                        "maxProperties": 16,
                        "additionalProperties": {"type": "string", "maxLength": 512},
                    },
                    "user": _NAME,
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
                        },
                    }
                },
            },
        },
    },
}

SPEC_JSON = orjson.dumps(SPEC)

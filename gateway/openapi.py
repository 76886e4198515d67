"""The gateway's OpenAPI 3 description, served at /v1/openapi.json.

It describes what the gateway itself checks (see `GatewayApp.read_json`): a JSON object with a
non-empty string `model`, a non-empty list of objects `messages`, an optional boolean `stream` and
an optional object `stream_options`; everything else is passed on to the model server as it is.
The property-based tests in tests/gateway/test_fuzz.py generate requests from it.
"""

from __future__ import annotations

from typing import Any

import orjson

_ERROR = {"$ref": "#/components/responses/Error"}

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
                "text/event-stream": {"schema": {"type": "string"}},
            },
        },
        **{
            code: _ERROR
            for code in ("400", "401", "402", "404", "405", "413", "429", "502", "503", "504")
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

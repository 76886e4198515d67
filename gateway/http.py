"""HTTP pieces the gateway's routes share: the JSON reply and the errors in the gateway's shape."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from core.api_errors import GatewayError

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
JSON = b"application/json"
SSE = b"text/event-stream"


def not_found(path: str) -> GatewayError:
    return GatewayError(
        404, "not_found", f"There is no endpoint {path}. See /v1/openapi.json.",
        type_="invalid_request_error",
    )  # fmt: skip


def model_not_found(name: str, param: str = "model") -> GatewayError:
    return GatewayError(
        404, "model_not_found", f"The model “{name}” does not exist or is not enabled.",
        type_="invalid_request_error", param=param,
    )  # fmt: skip


def method_not_allowed(scope: Scope) -> GatewayError:
    method, path = scope["method"], scope["path"]
    return GatewayError(405, "method_not_allowed", f"{method} is not allowed on {path}.")


def upstream_error(message: str) -> GatewayError:
    return GatewayError(502, "upstream_error", message + " Nothing was charged.", type_="api_error")


def upstream_timeout() -> GatewayError:
    return GatewayError(
        504, "upstream_timeout", "The model server did not answer in time. Nothing was charged.",
        type_="api_error",
    )  # fmt: skip


async def respond(
    send: Send, status: int, body: bytes, headers: list, content_type: bytes = JSON
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})

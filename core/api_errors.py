"""Errors in the OpenAI shape, which every OpenAI-compatible SDK parses."""

from __future__ import annotations

import orjson


class GatewayError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        type_: str | None = None,
        param: str | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
        extra: dict | None = None,
    ) -> None:
        super().__init__(message)
        self.extra = extra or {}  # more fields of the error object (e.g. `budget`)
        self.status = status
        self.code = code
        self.message = message
        self.type = type_ or code
        self.param = param
        self.headers = headers or []

    def body(self) -> bytes:
        return orjson.dumps(
            {
                "error": {
                    "message": self.message,
                    "type": self.type,
                    "code": self.code,
                    "param": self.param,
                    **self.extra,
                }
            }
        )


def invalid_request(message: str, param: str | None = None) -> GatewayError:
    return GatewayError(400, "invalid_request_error", message, param=param)


def invalid_key(
    message: str = "Invalid API key. Check the key, or create one in the portal.",
) -> GatewayError:
    return GatewayError(401, "invalid_api_key", message, type_="authentication_error")


def unavailable(
    message: str = "The service is temporarily unavailable; try again shortly.",
) -> GatewayError:
    return GatewayError(
        503,
        "service_unavailable",
        message,
        type_="service_unavailable",
        headers=[(b"retry-after", b"2")],
    )

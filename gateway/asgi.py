"""Serve the gateway's routes with the lean GatewayApp and everything else with Django."""

from __future__ import annotations

from typing import Any

from gateway.app import GatewayApp, is_gateway_path


def wrap(django_app: Any) -> Any:
    gateway = GatewayApp()

    async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and is_gateway_path(scope["path"]):
            await gateway(scope, receive, send)
        elif scope["type"] == "lifespan":
            # Answer lifespan messages ourselves (Django has no lifespan support) and close
            # the gateway's pools on shutdown.
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await gateway.aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        else:
            await django_app(scope, receive, send)

    application.gateway = gateway  # type: ignore[attr-defined]
    return application

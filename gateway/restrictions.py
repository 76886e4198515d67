"""Key restrictions in the gateway (keys/restrictions.py; docs/gateway.md, "Key restrictions").

Checked from the cached key (gateway/keycache.py: no round trip), before admission, so a refusal
is never billed and writes no usage. Model, API and tool refusals share the code the issue names,
`model_not_allowed` (the message and `param` say what was refused); a client address outside the
key's ranges is `ip_not_allowed`. All are 403.
"""

from __future__ import annotations

import ipaddress

from core.api_errors import GatewayError
from gateway.catalogue import ModelInfo
from gateway.keycache import KeyInfo

# The API a family of admission counts in (GatewayApp.admit's `family`; None: chat).
FAMILY_APIS = {"agent": "agent", "search": "search", "embeddings": "embeddings",
               "async_create": "async"}  # fmt: skip


def not_allowed(message: str, *, code: str = "model_not_allowed", param: str | None = None
                ) -> GatewayError:  # fmt: skip
    return GatewayError(403, code, message, type_="permission_error", param=param)


def check_client(key: KeyInfo, address: str | None) -> None:
    """403 unless the key has no IP ranges or the client's address is in one of them."""
    if key.networks is None:
        return
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        ip = None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:10.1.2.3 is 10.1.2.3 (dual-stack sockets)
    if ip is None or not any(ip in network for network in key.networks):
        raise not_allowed(
            f"This API key may not be used from your address ({address or 'unknown'}). An "
            "Admin can change its allowed IP ranges on the API Keys page.",
            code="ip_not_allowed",
        )


def check_api(key: KeyInfo, api: str) -> None:
    if key.apis is not None and api not in key.apis:
        raise not_allowed(
            f"This API key may not use the {api} API (allowed: {', '.join(sorted(key.apis))})."
        )


def check_model(key: KeyInfo, model: ModelInfo, family: str | None) -> None:
    """The API of an admitted request and its model; the Search API's catalogue entries are
    search types, governed by the allowed APIs only."""
    api = FAMILY_APIS.get(family or "", "chat")
    check_api(key, api)
    if key.models is not None and api != "search" and model.name not in key.models:
        raise not_allowed(
            f"This API key may not use the model “{model.name}” (allowed: "
            f"{', '.join(sorted(key.models))}).",
            param="model",
        )


def check_tools(key: KeyInfo, tools: list[str], param: str = "tools") -> None:
    """403 naming the first tool the key may not use."""
    if key.tools is None:
        return
    for i, tool in enumerate(tools):
        if tool not in key.tools:
            raise not_allowed(
                f"This API key may not use the tool “{tool}” (allowed: "
                f"{', '.join(sorted(key.tools))}).",
                param=f"{param}[{i}].type",
            )

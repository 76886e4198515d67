"""Key restrictions: which models, APIs, tools and client addresses an API key may use.

Each is an allowlist and an empty list means "all". They are checked by the gateway (see
docs/gateway.md, "Key restrictions") from the key's cached state, so they cost no round trip;
this module only cleans and validates what Admins and the Management API send.

Model and tool names are checked for shape only, not against the catalogue (which lives in a
higher layer, `usage`): a key may name a model before the operator enables it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

# The APIs a key may be limited to: usage.metrics.APIS (a test checks that they match; `keys`
# sits below `usage` and cannot import it).
APIS = ("chat", "agent", "search", "embeddings", "async")
API_LABELS = {
    "chat": "Chat Completions",
    "agent": "Agent API",
    "search": "Search API",
    "embeddings": "Embeddings",
    "async": "Async Chat Completions",
}
MAX_ENTRIES = 50  # per list: a key's state is cached in every gateway worker
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,99}$")
FIELDS = ("models", "apis", "tools", "ip_ranges")


class RestrictionError(ValueError):
    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Restrictions:
    models: tuple[str, ...] = ()
    apis: tuple[str, ...] = ()
    tools: tuple[str, ...] = ()
    ip_ranges: tuple[str, ...] = ()


def split(raw: str | Iterable[str] | None) -> list[str]:
    """Entries of a comma-, space- or newline-separated text (or of a list), stripped."""
    if raw is None:
        return []
    items = re.split(r"[\s,]+", raw) if isinstance(raw, str) else list(raw)
    return [item.strip() for item in items if isinstance(item, str) and item.strip()]


def _unique(items: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def _bounded(items: list[str], field: str) -> None:
    if len(items) > MAX_ENTRIES:
        raise RestrictionError(f"At most {MAX_ENTRIES} entries.", field)


def clean_names(raw: str | Iterable[str] | None, field: str, what: str) -> tuple[str, ...]:
    items = split(raw)
    _bounded(items, field)
    for item in items:
        if not NAME.match(item):
            raise RestrictionError(f"“{item[:100]}” is not a valid {what} name.", field)
    return _unique(items)


def clean_apis(raw: str | Iterable[str] | None) -> tuple[str, ...]:
    items = split(raw)
    for item in items:
        if item not in APIS:
            raise RestrictionError(
                f"Unknown API “{item[:100]}”: choose from {', '.join(APIS)}.", "apis"
            )
    return tuple(api for api in APIS if api in items)  # in a fixed order


def clean_ip_ranges(raw: str | Iterable[str] | None) -> tuple[str, ...]:
    """CIDR ranges (IPv4 or IPv6; a bare address is a /32 or /128), normalised; host bits set
    (10.1.2.3/8) are refused as a likely typo."""
    items = split(raw)
    _bounded(items, "ip_ranges")
    ranges = []
    for item in items:
        try:
            network = ipaddress.ip_network(item, strict=True)
        except ValueError:
            raise RestrictionError(
                f"“{item[:100]}” is not an IP range in CIDR notation (e.g. 10.0.0.0/8, "
                "2001:db8::/32, or one address).",
                "ip_ranges",
            ) from None
        ranges.append(str(network))
    return _unique(ranges)


def clean(
    *,
    models: str | Iterable[str] | None = None,
    apis: str | Iterable[str] | None = None,
    tools: str | Iterable[str] | None = None,
    ip_ranges: str | Iterable[str] | None = None,
) -> Restrictions:
    """Validated, normalised restrictions; RestrictionError naming the field otherwise."""
    return Restrictions(
        models=clean_names(models, "models", "model"),
        apis=clean_apis(apis),
        tools=clean_names(tools, "tools", "tool"),
        ip_ranges=clean_ip_ranges(ip_ranges),
    )


def of_key(key: object) -> Restrictions:
    """The restrictions stored on an APIKey."""
    return Restrictions(
        models=tuple(getattr(key, "allowed_models", None) or ()),
        apis=tuple(getattr(key, "allowed_apis", None) or ()),
        tools=tuple(getattr(key, "allowed_tools", None) or ()),
        ip_ranges=tuple(getattr(key, "allowed_ips", None) or ()),
    )

"""The end user and tags of the request being served (usage.attribution has the rules).

`begin(scope)` runs first for every gateway request (GatewayApp.handle): it reads the
`X-Portal-Tags` header (a malformed one is a 400 before anything else) and starts the request's
attribution. Each API then adds what its body names (`with_body`: `user`/`safety_identifier`,
the Agent API's `metadata`) once it has parsed it, before admission. Metering (gateway/metering.py
Metering.meter) stamps the attribution on the metered request: `end_user` and `tags`, columns of
the usage event written by the same one statement (gateway/sql/meter.sql).

It is kept in a context variable: one value per request task (a background Agent API response
runs in a task created after the body was read, so it inherits it). The async runner, which meters
in a Celery worker, passes the values stored on its job instead.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from typing import Any

from core.api_errors import GatewayError, invalid_request
from gateway.http import Scope
from usage.attribution import (
    TAGS_HEADER_BYTES,
    AttributionError,
    merge_metadata,
    parse_end_user,
    parse_tags_header,
)


@dataclass(frozen=True)
class Attribution:
    end_user: str | None = None
    tags: dict[str, str] = field(default_factory=dict)

    def params(self) -> dict[str, Any]:
        """The metered request's fields (gateway.metering.METER_COLUMNS)."""
        return {"end_user": self.end_user, "tags": self.tags}


NOBODY = Attribution()
CURRENT: contextvars.ContextVar[Attribution] = contextvars.ContextVar(
    "portal_attribution", default=NOBODY
)


def _bad(exc: AttributionError) -> GatewayError:
    return invalid_request(exc.message, param=exc.param)


def begin(scope: Scope) -> Attribution:
    """The request's tags from its X-Portal-Tags header(s) (several lines are joined by commas)."""
    values = [v for name, v in scope["headers"] if name == TAGS_HEADER_BYTES]
    if not values:
        CURRENT.set(NOBODY)
        return NOBODY
    try:
        tags = parse_tags_header(b",".join(values).decode("latin-1"))
    except AttributionError as exc:
        CURRENT.set(NOBODY)
        raise _bad(exc) from None
    attribution = Attribution(None, tags) if tags else NOBODY
    CURRENT.set(attribution)
    return attribution


def with_body(body: dict[str, Any], *, prefix: str = "", metadata: bool = False) -> Attribution:
    """Add the end user a body names (`<prefix>user`) and, when `metadata`, its metadata tags."""
    current = CURRENT.get()
    try:
        end_user = parse_end_user(body, prefix)
        tags = merge_metadata(current.tags, body.get("metadata")) if metadata else current.tags
    except AttributionError as exc:
        raise _bad(exc) from None
    if end_user is None and tags is current.tags:
        return current
    attribution = Attribution(end_user, tags)
    CURRENT.set(attribution)
    return attribution


def current() -> Attribution:
    return CURRENT.get()

"""The Management API's plumbing that django-ninja does not provide: the gateway's OpenAI-shaped
errors, management-key authentication with the per-key rate limit and the read-only rule, and
cursor pagination. Routing, bodies, validation, serialization and the OpenAPI document are
django-ninja's (management/api.py, management/schemas.py).
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import logging
import re
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import redis
from django.conf import settings
from django.db.models import Model, Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.views.decorators.csrf import csrf_exempt

from core.api_errors import GatewayError
from core.redis import get_redis
from keys import secrets
from management.models import ManagementKey
from management.schemas import PageQuery
from management.selectors import management_key_for_secret
from management.services import management_key_mark_used

logger = logging.getLogger("portal.management")

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Public ids are 12 lowercase letters and digits (groups.models.new_public_id); anything else
# cannot name an object, so it is a 404 before any query.
_PUBLIC_ID = re.compile(r"^[a-z0-9]{1,24}$")


# --- errors ----------------------------------------------------------------------------------


class ApiError(GatewayError):
    """The gateway's OpenAI-shaped error, answered as a Django response."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        type_: str,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        pairs = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
        super().__init__(status, code, message, type_=type_, param=param, headers=pairs)

    def response(self) -> HttpResponse:
        response = HttpResponse(self.body(), status=self.status, content_type="application/json")
        for name, value in self.headers:
            response[name.decode("latin-1")] = value.decode("latin-1")
        return response


def unauthorized(message: str) -> ApiError:
    return ApiError(401, "invalid_api_key", message, type_="authentication_error")


def forbidden(message: str) -> ApiError:
    return ApiError(403, "permission_denied", message, type_="permission_error")


def not_found(message: str, param: str | None = None) -> ApiError:
    return ApiError(404, "not_found", message, type_="not_found_error", param=param)


def invalid(message: str, param: str | None = None, code: str = "validation_error") -> ApiError:
    """422: the request was understood but a value in it cannot be accepted."""
    return ApiError(422, code, message, type_="invalid_request_error", param=param)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "invalid_request_error", message, type_="invalid_request_error")


# --- authentication, authorization, rate limit -----------------------------------------------


class ManagementRequest(HttpRequest):
    """The request an endpoint receives: `authenticate` has set these."""

    management_key: ManagementKey
    group: Any
    management_rate_headers: dict[str, str]


def _authenticate(request: HttpRequest) -> ManagementKey:
    auth = request.headers.get("Authorization", "")
    if not auth:
        raise unauthorized(
            "Missing management key: send it as “Authorization: Bearer pplx-admin-…”. "
            "An Admin can create one on the API Keys page."
        )
    scheme, _, token = auth.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise unauthorized("Send the management key as “Authorization: Bearer <key>”.")
    prefix = settings.MANAGEMENT_KEY_PREFIX
    if not secrets.is_well_formed(token, prefix):
        if secrets.is_well_formed(token, settings.API_KEY_PREFIX):
            raise unauthorized(
                "This is an inference API key. The Management API needs a management key "
                f"({prefix}…), which an Admin can create on the API Keys page."
            )
        raise unauthorized(
            f"This is not a valid management key (they start with {prefix} and carry a checksum)."
        )
    key = management_key_for_secret(token)
    if key is None:
        raise unauthorized("This management key is unknown or has been revoked.")
    return key


def _rate_limit(key: ManagementKey) -> dict[str, str]:
    """Count the request in this minute's Redis counter for the key; 429 over the limit.

    A Redis outage lets requests through (logged): the limit protects the portal from a runaway
    script, and the database, not Redis, is the source of truth for everything the API changes.
    """
    limit = settings.MANAGEMENT_API_RATE_LIMIT
    now = time.time()
    window = int(now // 60)
    reset = 60 - int(now) % 60
    counter = f"portal:mrl:{key.pk}:{window}"
    try:
        pipe = get_redis().pipeline()
        pipe.incr(counter)
        pipe.expire(counter, 61)
        count = int(pipe.execute()[0])
    except redis.RedisError as exc:
        logger.warning("management API rate limit unavailable: %s", exc)
        return {}
    headers = {
        "X-RateLimit-Limit-Requests": str(limit),
        "X-RateLimit-Remaining-Requests": str(max(0, limit - count)),
        "X-RateLimit-Reset-Requests": f"{reset}s",
    }
    if count > limit:
        raise ApiError(
            429,
            "rate_limit_exceeded",
            f"Rate limit of {limit} requests per minute for this management key reached. "
            f"Retry in {reset} seconds.",
            type_="rate_limit_error",
            headers={**headers, "Retry-After": str(reset)},
        )
    return headers


def authenticate(request: HttpRequest) -> ManagementKey:
    """django-ninja's auth for every operation: the key, its rate limit, then its role.

    Runs before the request's parameters and body are read, so a caller without a valid key
    learns nothing about validation. Methods other than GET need an `admin` key.
    """
    key = _authenticate(request)
    request.management_rate_headers = _rate_limit(key)  # type: ignore[attr-defined]
    if request.method not in SAFE_METHODS and not key.can_write:
        raise forbidden(
            "This management key is read-only. Use a key with the admin role to make changes."
        )
    management_key_mark_used(key=key)
    request.management_key = key  # type: ignore[attr-defined]
    request.group = key.group  # type: ignore[attr-defined]
    return key


def finish(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Wrap a django-ninja URL view: a JSON 405, the rate-limit headers, no caching."""

    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.method not in SAFE_METHODS and not request.body.strip():
            request._body = b"{}"  # type: ignore[attr-defined]  # no body: no fields, as before
        response = view(request, *args, **kwargs)
        if isinstance(response, HttpResponseNotAllowed):
            allowed = ", ".join(sorted(m.strip() for m in response["Allow"].split(",")))
            response = ApiError(
                405,
                "method_not_allowed",
                f"{request.method} is not allowed here; use {allowed}.",
                type_="invalid_request_error",
                headers={"Allow": allowed},
            ).response()
        for name, value in getattr(request, "management_rate_headers", {}).items():
            response.setdefault(name, value)
        response.setdefault("Cache-Control", "no-store")
        return response

    wrapped.csrf_exempt = True  # type: ignore[attr-defined]
    return wrapped


@csrf_exempt
def unknown_endpoint(request: HttpRequest, rest: str = "") -> HttpResponse:
    """JSON 404 for any other path under /v1/management/."""
    return not_found(
        f"There is no Management API endpoint at {request.path}. "
        "See /v1/management/openapi.json for the list."
    ).response()


def check_public_id(value: str, what: str) -> str:
    """Return `value` if it can be a public id; else the 404 that an unknown id gets."""
    if not _PUBLIC_ID.match(value):
        raise not_found(f"No {what} with id “{value[:40]}” in this API group.")
    return value


def get_or_404(getter: Callable[..., Model], what: str, public_id: str, **kwargs: Any) -> Any:
    """Call a tenant-scoped selector; its 404 (another group's id too) becomes a JSON 404."""
    check_public_id(public_id, what)
    try:
        return getter(public_id=public_id, **kwargs)
    except Http404:
        raise not_found(f"No {what} with id “{public_id}” in this API group.") from None


# --- cursor pagination -----------------------------------------------------------------------


def _encode_cursor(moment: datetime, pk: int) -> str:
    raw = json.dumps([moment.isoformat(), pk], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        moment_text, pk = json.loads(raw)
        moment = datetime.fromisoformat(moment_text)
        if moment.tzinfo is None or not isinstance(pk, int) or isinstance(pk, bool):
            raise ValueError
        return moment, pk
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise invalid(
            "This cursor is not valid: pass the next_cursor of a previous page unchanged.",
            param="cursor",
        ) from None


def paginate(
    queryset: QuerySet[Any],
    page: PageQuery,
    serialize: Callable[[Any], dict[str, Any]],
    *,
    time_field: str,
) -> dict[str, Any]:
    """Return one page of `queryset`, newest first, by (time_field, id).

    The cursor is the (time, id) of the last row shown; the next page holds the rows strictly
    older. Rows inserted while a client pages are newer than every page already fetched, so they
    neither shift later pages (no row skipped or repeated) nor appear in them.
    """
    limit = page.limit
    queryset = queryset.order_by(f"-{time_field}", "-id")
    if page.cursor:
        moment, pk = _decode_cursor(page.cursor)
        queryset = queryset.filter(
            Q(**{f"{time_field}__lt": moment}) | Q(**{time_field: moment, "id__lt": pk})
        )
    rows = list(queryset[: limit + 1])
    has_more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = (
        _encode_cursor(getattr(rows[-1], time_field), rows[-1].pk) if has_more and rows else None
    )
    return {
        "object": "list",
        "data": [serialize(row) for row in rows],
        "has_more": has_more,
        "next_cursor": next_cursor,
    }

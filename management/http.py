"""The Management API's plumbing: OpenAI-shaped errors, key authentication, per-key rate limits,
JSON bodies and cursor pagination. Endpoints (management/api.py) stay thin over the apps' services.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import redis
from django.conf import settings
from django.db.models import Model, Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from gateway.errors import GatewayError
from keys import secrets
from management.models import ManagementKey
from management.selectors import management_key_for_secret
from management.services import management_key_mark_used
from portal.redis import get_redis

logger = logging.getLogger("portal.management")

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
# Public ids are 12 lowercase letters and digits (groups.models.new_public_id); anything else
# cannot name an object, so it is a 404 before any query.
_PUBLIC_ID = re.compile(r"^[a-z0-9]{1,24}$")
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,6})?([Zz]|[+-]\d{2}:\d{2})$")


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
    """The request an endpoint receives: `management_endpoint` has set these."""

    management_key: ManagementKey
    group: Any


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


Handler = Callable[..., HttpResponse]


def management_endpoint(**handlers: Handler) -> Callable[..., HttpResponse]:
    """Build a view for one URL from one handler per HTTP method (`get=…, post=…`).

    Every request is authenticated with a management key and counted against its rate limit;
    methods other than GET need an `admin` key. Handlers receive the request with
    `management_key` and `group` set and return a response or raise ApiError.
    """
    allowed = ", ".join(sorted(m.upper() for m in handlers))

    @csrf_exempt
    def view(request: HttpRequest, **kwargs: Any) -> HttpResponse:
        rate_headers: dict[str, str] = {}
        try:
            handler = handlers.get(request.method.lower() if request.method else "")
            if handler is None:
                raise ApiError(
                    405,
                    "method_not_allowed",
                    f"{request.method} is not allowed here; use {allowed}.",
                    type_="invalid_request_error",
                    headers={"Allow": allowed},
                )
            key = _authenticate(request)
            rate_headers = _rate_limit(key)
            if request.method not in SAFE_METHODS and not key.can_write:
                raise forbidden(
                    "This management key is read-only. Use a key with the admin role to make "
                    "changes."
                )
            management_key_mark_used(key=key)
            request.management_key = key  # type: ignore[attr-defined]
            request.group = key.group  # type: ignore[attr-defined]
            response = handler(request, **kwargs)
        except ApiError as exc:
            response = exc.response()
        except Http404:
            response = not_found("No such object in this API group.").response()
        for name, value in rate_headers.items():
            response.setdefault(name, value)
        response.setdefault("Cache-Control", "no-store")
        return response

    view.management_methods = tuple(handlers)  # type: ignore[attr-defined]
    return view


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


# --- JSON bodies ---------------------------------------------------------------------------


def _clean_text(value: str, name: str) -> str:
    if "\x00" in value:
        raise invalid(f"“{name}” must not contain NUL characters.", param=name)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise invalid(f"“{name}” is not valid Unicode text.", param=name) from None
    return value


class OversizedNumber:
    """A JSON integer too long to be any field's value: every field refuses it by type."""


def _parse_int(text: str) -> int | OversizedNumber:
    # Python refuses to read integers of over 4,300 digits, which would make the whole body
    # "not JSON"; no field takes more than 19 digits, so the field says what is wrong instead.
    return OversizedNumber() if len(text.lstrip("-")) > 30 else int(text)


def json_body(request: HttpRequest, allowed: Iterable[str]) -> dict[str, Any]:
    """Return the request's JSON object (an empty body is {}); unknown fields are a 422."""
    raw = request.body
    if not raw.strip():
        return {}
    try:
        payload = json.loads(raw, parse_int=_parse_int)
    except (ValueError, UnicodeDecodeError):
        raise bad_request("The request body is not valid JSON.") from None
    if not isinstance(payload, dict):
        raise bad_request("The request body must be a JSON object.")
    allowed = set(allowed)
    for name in payload:
        if name not in allowed:
            known = ", ".join(sorted(allowed)) or "none"
            raise invalid(f"Unknown field “{name[:40]}”. Known fields: {known}.", param=name[:64])
    return payload


def text_field(
    body: dict[str, Any], name: str, *, required: bool = False, max_length: int | None = None
) -> str | None:
    """Return a string field (None when absent); wrong types and bad text are 422s."""
    if name not in body:
        if required:
            raise invalid(f"“{name}” is required.", param=name)
        return None
    value = body[name]
    if not isinstance(value, str):
        raise invalid(f"“{name}” must be a string.", param=name)
    value = _clean_text(value, name)
    if max_length is not None and len(value) > max_length:
        raise invalid(f"“{name}” can be at most {max_length} characters.", param=name)
    return value


def query_text(request: HttpRequest, name: str, max_length: int = 200) -> str:
    """Return a query parameter ("" when absent). Present but empty is a 422, not a default."""
    value = request.GET.get(name, "")
    if name in request.GET and not value:
        raise invalid(f"“{name}” is empty; leave it out to use the default.", param=name)
    _clean_text(value, name)
    if len(value) > max_length:
        raise invalid(f"“{name}” can be at most {max_length} characters.", param=name)
    return value


def parse_datetime_field(value: Any, name: str) -> datetime | None:
    """Parse an RFC 3339 date-time with a time zone (or null)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid(f"“{name}” must be an RFC 3339 date-time string or null.", param=name)
    try:
        if not _RFC3339.match(_clean_text(value, name)):
            raise ValueError
        return datetime.fromisoformat(value.upper())
    except ValueError:
        raise invalid(
            f"“{name}” must be an RFC 3339 date-time with a time zone, such as "
            "2027-01-31T00:00:00Z.",
            param=name,
        ) from None


def int_field(value: Any, name: str, *, nullable: bool = True) -> int | None:
    if value is None and nullable:
        return None
    if isinstance(value, OversizedNumber):
        raise invalid(f"“{name}” is too large.", param=name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(f"“{name}” must be an integer{' or null' if nullable else ''}.", param=name)
    return value


# --- cursor pagination -----------------------------------------------------------------------


@dataclass
class Page:
    data: list[Any]
    has_more: bool
    next_cursor: str | None
    extra: dict[str, Any] = field(default_factory=dict)

    def response(self, serialize: Callable[[Any], dict[str, Any]]) -> JsonResponse:
        return JsonResponse(
            {
                "object": "list",
                "data": [serialize(row) for row in self.data],
                "has_more": self.has_more,
                "next_cursor": self.next_cursor,
                **self.extra,
            }
        )


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


def page_size(request: HttpRequest) -> int:
    raw = query_text(request, "limit", 10)
    if not raw:
        return DEFAULT_PAGE_SIZE
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE_SIZE:
        raise invalid(f"“limit” must be a whole number from 1 to {MAX_PAGE_SIZE}.", param="limit")
    return int(raw)


def paginate(request: HttpRequest, queryset: QuerySet[Any], *, time_field: str) -> Page:
    """Return one page of `queryset`, newest first, by (time_field, id).

    The cursor is the (time, id) of the last row shown; the next page holds the rows strictly
    older. Rows inserted while a client pages are newer than every page already fetched, so they
    neither shift later pages (no row skipped or repeated) nor appear in them.
    """
    limit = page_size(request)
    queryset = queryset.order_by(f"-{time_field}", "-id")
    cursor = query_text(request, "cursor")
    if cursor:
        moment, pk = _decode_cursor(cursor)
        queryset = queryset.filter(
            Q(**{f"{time_field}__lt": moment}) | Q(**{time_field: moment, "id__lt": pk})
        )
    rows = list(queryset[: limit + 1])
    has_more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = (
        _encode_cursor(getattr(rows[-1], time_field), rows[-1].pk) if has_more and rows else None
    )
    return Page(rows, has_more, next_cursor)


def created(data: dict[str, Any]) -> JsonResponse:
    return JsonResponse(data, status=201)

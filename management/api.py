"""Management API endpoints on django-ninja: thin handlers over the apps' selectors and services.

`authenticate` (management/http.py) checks the management key, counts the request against the
key's rate limit and refuses writes with a read-only key before any parameter is read; the
parameters and bodies are validated by the schemas in management/schemas.py, from which the
OpenAPI document is generated. Every handler works inside `request.group`, so another group's
object id is a 404 like an unknown one. Writes are audited by the services they call, with the
management key as the actor.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import zoneinfo
from collections import defaultdict
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.validators import EmailValidator
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI, Query, Status
from ninja.errors import HttpError
from ninja.errors import ValidationError as NinjaValidationError
from ninja.parser import Parser
from ninja.security import HttpBearer

from alerts.models import Alert, AlertKind, WebhookEndpoint
from alerts.selectors import (
    alert_get_for_group,
    alerts_for_group,
    deliveries_for_endpoint,
    webhook_endpoint_get_for_group,
    webhook_endpoints_for_group,
)
from alerts.services import (
    AlertError,
    AlertInput,
    alert_create,
    alert_delete,
    alert_update,
    webhook_endpoint_create,
    webhook_endpoint_delete,
    webhook_endpoint_test,
    webhook_endpoint_update,
)
from billing import pdf
from billing.budgets import BudgetError, budget_create, budget_delete, budget_update
from billing.models import Invoice
from billing.selectors import (
    BudgetStatus,
    budget_get_for_group,
    budget_spend,
    budgets_for_group,
    credit_account_get,
    credit_lots_for_account,
    invoice_get_for_group,
    invoices_for_group,
    ledger_transactions,
    tier_info,
)
from core.money import MAX_AMOUNT_MICROS
from core.replica import reading_from_replica
from groups.services import api_group_update
from keys.models import APIKey
from keys.restrictions import RestrictionError, Restrictions
from keys.restrictions import clean as clean_restrictions
from keys.selectors import api_key_get_for_group, api_keys_for_group
from keys.services import (
    MAX_MONTHLY_LIMIT_MICROS,
    APIKeyError,
    api_key_create,
    api_key_regenerate,
    api_key_restrict,
    api_key_revoke,
    api_key_update,
)
from management import schemas as s
from management.http import (
    ApiError,
    ManagementRequest,
    authenticate,
    bad_request,
    get_or_404,
    invalid,
    not_found,
    paginate,
)
from management.selectors import ai_model_by_name, billing_profile_for, group_details_form
from management.serializers import (
    alert_json,
    api_key_json,
    budget_json,
    credit_lot_json,
    group_json,
    invitation_json,
    invoice_detail_json,
    invoice_json,
    iso,
    ledger_entry_json,
    member_json,
    money,
    tier_json,
    totals_json,
    webhook_delivery_json,
    webhook_endpoint_json,
)
from members.models import Invitation
from members.selectors import (
    invitation_get_for_group,
    membership_get_for_group,
    memberships_for_group,
    pending_invitations,
)
from members.services import (
    InvitationLimitReached,
    MembershipError,
    invitation_create,
    invitation_revoke,
    membership_change_role,
    membership_remove,
)
from usage.attribution import MAX_TAG_KEY, AttributionError, parse_tag_filter, valid_tag_part
from usage.models import AIModel
from usage.periods import Period, PeriodError, resolve_period
from usage.rollups import METRICS
from usage.selectors import Totals, bucket_label, tool_names, usage_for, usage_rows
from usage.tiers import FAMILIES


class JsonParser(Parser):
    """JSON bodies; an integer literal too long to be a number we store stays a non-integer, so
    it is refused naming its field (422) instead of failing the whole body."""

    def parse_body(self, request: HttpRequest) -> Any:
        return json.loads(request.body, parse_int=_bounded_int)


def _bounded_int(text: str) -> int | str:
    return int(text) if len(text.lstrip("-")) <= 30 else text


class ManagementKeyAuth(HttpBearer):
    """Bearer management keys (`pplx-admin-…`); the errors are the gateway's (http.authenticate)."""

    def __call__(self, request: HttpRequest) -> Any:
        return authenticate(request)

    def authenticate(self, request: HttpRequest, token: str) -> Any:  # pragma: no cover
        return authenticate(request)


api = NinjaAPI(
    title="Management API",
    version="1.0.0",
    description=(
        "Manage one API group with a management key (`pplx-admin-…`) created by an Admin on the "
        "API Keys page. Keys with the `read_only` role may only call GET endpoints. Errors use "
        "the OpenAI shape. Lists are cursor-paginated, newest first. Money is integer "
        "micro-dollars (`*_micros`) plus a display string."
    ),
    auth=ManagementKeyAuth(),
    parser=JsonParser(),
    urls_namespace="management_api",
    openapi_url=None,
    docs_url=None,
)


# --- errors: the gateway's OpenAI shape --------------------------------------------------------


@api.exception_handler(ApiError)
def _api_error(request: HttpRequest, exc: ApiError) -> HttpResponse:
    return exc.response()


@api.exception_handler(Http404)
def _not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return not_found("No such object in this API group.").response()


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    if exc.status_code == 400:  # ninja: the body is not JSON
        return bad_request("The request body is not valid JSON.").response()
    return ApiError(exc.status_code, "error", str(exc), type_="invalid_request_error").response()


def _error_param(loc: tuple[Any, ...]) -> str | None:
    """The field an error is about: ("body", "payload", "name") → name, ("query", "limit") → limit."""
    parts = [str(p) for p in loc if isinstance(p, str)]
    if parts and parts[0] == "body":
        parts = parts[2:]
    elif parts and parts[0] in ("query", "path"):
        parts = parts[1:]
    return parts[0][:64] if parts else None


@api.exception_handler(NinjaValidationError)
def _validation_error(request: HttpRequest, exc: NinjaValidationError) -> HttpResponse:
    """422 `validation_error` naming the field, in today's shape (400 if the body is no object)."""
    error = exc.errors[0]
    loc, kind = tuple(error.get("loc", ())), error.get("type", "")
    param = _error_param(loc)
    if param is None:
        if loc[:1] == ("body",):
            return bad_request("The request body must be a JSON object.").response()
        return invalid(str(error.get("msg", "Invalid request."))).response()
    shown = f"“{param}”"
    if kind == "missing":
        message = f"{shown} is required."
    elif kind == "extra_forbidden":
        message = f"Unknown field {shown}."
    elif param.endswith("_micros"):  # money: integer micro-dollars only
        message = (
            f"{shown} must be a whole number of micro-dollars (1 USD = 1,000,000) from 1 to "
            + _MICROS_RANGE.get(param, f"{MAX_MONTHLY_LIMIT_MICROS}, or null.")
        )
    elif kind == "value_error":
        message = f"{shown} {error.get('ctx', {}).get('error', error.get('msg', ''))}."
    else:
        message = f"{shown}: {error.get('msg', 'invalid value')}."
    return invalid(message, param=param).response()


# The money fields whose bounds differ from the keys' monthly limit (the message's default).
_MICROS_RANGE = {"balance_threshold_micros": f"{MAX_AMOUNT_MICROS}."}


def _domain_error(exc: APIKeyError | MembershipError) -> Exception:
    """A service's refusal as a 422: `validation_error` naming the field, else `invalid_state`;
    the daily invitation limit is a 429."""
    if isinstance(exc, InvitationLimitReached):
        return ApiError(429, "invitation_limit_reached", str(exc), type_="rate_limit_error")
    if exc.field:
        return invalid(str(exc), param=exc.field)
    return invalid(str(exc), code="invalid_state")


def responses(ok: Any, *, status: int = 200, writes: bool = False) -> dict[int, Any]:
    """The documented responses of an operation: its own and the errors any caller may get."""
    documented: dict[int, Any] = {status: ok, 401: s.Error, 404: s.Error, 422: s.Error}
    documented[429] = s.Error
    if writes:
        documented |= {400: s.Error, 403: s.Error}
    return documented


ERROR_DESCRIPTIONS = {
    "400": "The body is not a JSON object (code invalid_request_error).",
    "401": "Missing, malformed, unknown or revoked management key (code invalid_api_key).",
    "403": "The key is read-only (code permission_denied).",
    "404": "No such object in this API group (code not_found).",
    "422": "A value cannot be accepted; `param` names it (code validation_error or invalid_state).",
    "429": "Rate limit of the management key reached (code rate_limit_exceeded).",
}
BASE = "/v1/management"


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document django-ninja generates from the operations and their schemas, with
    what a generator cannot know: the errors' meanings, Retry-After, the role writes need, and
    that a missing body is read as {} (management/http.py `finish`), so a body schema without
    required fields is optional."""
    doc = dict(api.get_openapi_schema(path_prefix=BASE))
    schemas = doc["components"]["schemas"]
    for operations in doc["paths"].values():
        for method, op in operations.items():
            for code, response in op["responses"].items():
                if str(code) in ERROR_DESCRIPTIONS:
                    response["description"] = ERROR_DESCRIPTIONS[str(code)]
                if str(code) == "429":
                    response["headers"] = {
                        "Retry-After": {
                            "schema": {"type": "integer"},
                            "description": "Seconds to wait.",
                        }
                    }
            if method != "get":
                op["x-requires-role"] = "admin"
            if body := op.get("requestBody"):
                ref = body["content"]["application/json"]["schema"].get("$ref", "")
                if not schemas.get(ref.rpartition("/")[2], {}).get("required"):
                    body["required"] = False
    return doc


# Hourly buckets are offered for spans up to this long (744 buckets), like a month's chart.
HOURLY_MAX_SPAN = timedelta(days=31)


# Hourly buckets are offered for spans up to this long (744 buckets), like a month's chart.


# --- reads from the replica ------------------------------------------------------------------


def _replica_reads(handler: Callable[..., Any]) -> Callable[..., Any]:
    """A GET endpoint reads the read replica, if one is configured and usable (core/replica.py);
    the key was authenticated on the primary before. The wrapper lives here so that
    django-ninja resolves the handler's annotations in this module."""
    run = reading_from_replica()(handler)

    @functools.wraps(handler)
    def wrapper(request: ManagementRequest, *args: Any, **kwargs: Any) -> Any:
        return run(request, *args, **kwargs)

    return wrapper


# --- group -----------------------------------------------------------------------------------


@api.get(
    "/group",
    response=responses(s.Group),
    operation_id="getGroup",
    tags=["Group"],
    summary="Get the API group's details",
    url_name="group",
)
def group_get(request: ManagementRequest) -> dict[str, Any]:
    return group_json(request.group)  # loaded with the key, this request


@api.patch(
    "/group",
    response=responses(s.Group, writes=True),
    operation_id="updateGroup",
    tags=["Group"],
    summary="Update the API group's details",
    description="Only the fields sent change; validated like the API Group page.",
)
def group_update(request: ManagementRequest, payload: s.GroupUpdate) -> dict[str, Any]:
    """Change organization details; validated by the API Group page's form."""
    form = group_details_form(group=request.group, changes=payload.model_dump(exclude_unset=True))
    if not form.is_valid():
        name, errors = next(iter(form.errors.items()))
        raise invalid(" ".join(str(e) for e in errors), param=name)
    group = api_group_update(
        group=form.instance, actor=request.management_key, request=request, **form.cleaned_data
    )
    return group_json(group)


# --- billing ---------------------------------------------------------------------------------


@api.get(
    "/billing",
    response=responses(s.Billing),
    operation_id="getBilling",
    tags=["Billing"],
    summary="Balance, usage tier and rate limits",
    url_name="billing",
)
def billing_get(request: ManagementRequest) -> dict[str, Any]:
    """Balance, usage tier and the rate limits it gives (per API family, shared by the group's
    keys), auto top-up settings."""
    account = credit_account_get(group=request.group)
    info = tier_info(account=account)
    profile = billing_profile_for(group=request.group)
    return {
        "object": "billing",
        **money("balance", account.balance_micros),
        **money("purchased", account.purchased_micros),
        "blocked": account.balance_micros <= 0,
        "tier": tier_json(info.tier),
        "next_tier": tier_json(info.next),
        "limits": [
            {
                "family": m.family,
                "model": None if m.family in FAMILIES else m.family,
                "requests_per_minute": m.rpm,
                "requests_per_second": m.rps,
                "published": m.source == "published",
            }
            for m in info.limits
        ],
        "auto_top_up": {
            "enabled": profile.auto_top_up_enabled,
            **money("threshold", profile.auto_top_up_threshold_micros),
            **money("amount", profile.auto_top_up_amount_micros),
        },
    }


@api.get(
    "/billing/transactions",
    response=responses(s.LedgerEntryList),
    operation_id="listTransactions",
    tags=["Billing"],
    summary="List ledger transactions",
    description="Credit purchases, top-ups, refunds and adjustments (usage is in /usage).",
    url_name="transactions",
)
@_replica_reads
def transactions_list(request: ManagementRequest, page: Query[s.PageQuery]) -> dict[str, Any]:
    """Ledger entries other than per-request usage, as on the Billing page; newest first."""
    account = credit_account_get(group=request.group)
    entries = ledger_transactions(account=account)
    return paginate(entries, page, ledger_entry_json, time_field="created_at")


@api.get(
    "/billing/credit-lots",
    response=responses(s.CreditLots),
    operation_id="getCreditLots",
    tags=["Billing"],
    summary="Promotional grants and paid credit remaining",
    description="What the balance is made of: each promotional grant's remaining amount and "
    "expiry, and the paid credit remaining. Usage spends promotional credit first (the "
    "soonest-expiring first), then paid credit, oldest first.",
    url_name="credit_lots",
)
def credit_lots_get(request: ManagementRequest) -> dict[str, Any]:
    """As the Billing page's "Credits by grant" (read-only)."""
    lots = credit_lots_for_account(account=credit_account_get(group=request.group))
    return {
        "object": "credit_lots",
        **money("promotional_remaining", lots.promotional_remaining_micros),
        **money("paid_remaining", lots.paid_remaining_micros),
        "grants": [credit_lot_json(lot) for lot in lots.grants],
    }


# --- usage -----------------------------------------------------------------------------------


@functools.cache
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


@dataclasses.dataclass(frozen=True)
class UsageQuery:
    period: Period
    key: APIKey | None
    model: AIModel | None
    api: str | None = None
    tool: str | None = None
    end_user: str | None = None
    tag: tuple[str, str] | None = None

    def filters(self) -> dict[str, Any]:
        """The keyword filters of usage.selectors.usage_for and usage_rows."""
        return {
            "key_id": self.key.pk if self.key else None,
            "model_id": self.model.pk if self.model else None,
            "api": self.api,
            "tool": self.tool,
            "end_user": self.end_user,
            "tag": self.tag,
        }


def _granular(period: Period, granularity: str) -> Period:
    if granularity not in ("hour", "day"):
        raise invalid("“granularity” must be hour or day.", param="granularity")
    if granularity == "hour" and period.end - period.start > HOURLY_MAX_SPAN:
        raise invalid(
            f"Hourly buckets cover at most {HOURLY_MAX_SPAN.days} days; use day, or a shorter range.",
            param="granularity",
        )
    return dataclasses.replace(period, granularity=granularity)


def _usage_query(request: ManagementRequest, query: s.UsageQuery) -> UsageQuery:
    """Resolve the range and filters the Usage Metrics page takes (same names, same rules)."""
    tz = query.tz or "UTC"
    if tz not in _zones():
        raise invalid(f"Unknown time zone “{tz[:64]}”; use an IANA name.", param="tz")
    try:
        period = resolve_period(preset=query.range, start=query.start, end=query.end, tz=tz)
    except PeriodError as exc:
        raise invalid(str(exc), param=exc.field) from None
    if query.granularity:
        period = _granular(period, query.granularity)
    key = None
    if query.key:
        key = get_or_404(api_key_get_for_group, "API key", query.key, group=request.group)
    model = None
    if model_name := query.model:
        model = ai_model_by_name(model_name)
        if model is None:
            raise invalid(f"There is no model “{model_name}”.", param="model")
    if query.tool is not None and query.tool not in tool_names():
        raise invalid(f"There is no tool “{query.tool}”.", param="tool")
    if query.end_user is not None and not query.end_user.isprintable():
        raise invalid("“end_user” must be printable characters.", param="end_user")
    tag = None
    if query.tag is not None:
        try:
            tag = parse_tag_filter(query.tag)
        except AttributionError as exc:
            raise invalid(exc.message, param="tag") from None
    return UsageQuery(period, key, model, query.api, query.tool, query.end_user, tag)


def _period_json(q: UsageQuery) -> dict[str, Any]:
    return {
        "start": iso(q.period.start),
        "end": iso(q.period.end),
        "tz": q.period.tz.key,
        "range": q.period.preset,
        "granularity": q.period.granularity,
        "key": q.key.public_id if q.key else None,
        "model": q.model.name if q.model else None,
        "api": q.api,
        "tool": q.tool,
        "end_user": q.end_user,
        "tag": f"{q.tag[0]}={q.tag[1]}" if q.tag else None,
    }


@api.get(
    "/usage",
    response=responses(s.Usage),
    operation_id="getUsage",
    tags=["Usage"],
    summary="Usage totals and time series",
    description="The numbers of the Usage Metrics page, to the micro-dollar.",
    url_name="usage",
)
@_replica_reads
def usage_get(request: ManagementRequest, query: Query[s.UsageQuery]) -> dict[str, Any]:
    """Totals and the time series of the Usage Metrics page (usage.selectors.usage_for)."""
    q = _usage_query(request, query)
    usage = usage_for(group=request.group, period=q.period, **q.filters())
    series = [
        {
            "start": iso(b.start),
            "end": iso(b.end),
            "label": b.label,
            "requests": usage.series["requests"][i],
            "tokens": usage.series["tokens"][i],
            **money("cost", usage.series["cost_micros"][i]),
        }
        for i, b in enumerate(q.period.buckets())
    ]
    return {
        "object": "usage",
        "period": _period_json(q),
        "totals": totals_json(usage.totals),
        "series": series,
    }


@api.get(
    "/usage/grouped",
    response=responses(s.UsageGrouped),
    operation_id="getUsageGrouped",
    tags=["Usage"],
    summary="Usage totals grouped by model, key, API, tool, end user, tag, day or hour",
    url_name="usage_grouped",
)
@_replica_reads
def usage_grouped(request: ManagementRequest, query: Query[s.UsageGroupedQuery]) -> dict[str, Any]:
    """Totals grouped by model, key or API, tool invocations and fees by tool (the dashboard's
    tables), or totals by day or hour."""
    by = query.by
    q = _usage_query(request, query)
    data: list[dict[str, Any]] = []
    tag_key = getattr(query, "tag_key", None)
    if tag_key is not None and not valid_tag_part(tag_key, MAX_TAG_KEY):
        raise invalid("“tag_key” is not a tag key.", param="tag_key")
    if by in ("model", "key", "api", "tool", "end_user", "tag"):
        usage = usage_for(group=request.group, period=q.period, tag_key=tag_key, **q.filters())
        if by == "end_user":
            data = [
                {"end_user": b.label, "totals": totals_json(b.totals)} for b in usage.by_end_user
            ]
        elif by == "tag":
            data = [{"tag": b.label, "totals": totals_json(b.totals)} for b in usage.by_tag]
        elif by == "model":
            data = [{"model": b.label, "totals": totals_json(b.totals)} for b in usage.by_model]
        elif by == "api":
            data = [{"api": b.obj, "totals": totals_json(b.totals)} for b in usage.by_api]
        elif by == "tool":
            data = [
                {
                    "tool": {
                        "name": t.tool,
                        "invocations": t.invocations,
                        **money("cost", t.cost_micros),
                    },
                    "totals": None,
                }
                for t in usage.by_tool
            ]
        else:
            data = [
                {
                    "key": {
                        "id": b.obj.public_id,
                        "name": b.obj.name,
                        "masked": b.obj.masked,
                        "status": b.obj.display_status,
                    },
                    "totals": totals_json(b.totals),
                }
                for b in usage.by_key
            ]
    else:
        period = _granular(q.period, by)
        q = dataclasses.replace(q, period=period)
        buckets: dict[Any, Totals] = defaultdict(Totals)
        rows = usage_rows(group=request.group, period=period, **q.filters())
        for bucket, _key, _model, _api, *values in rows:
            buckets[bucket].add(dict(zip(METRICS, (int(v or 0) for v in values), strict=True)))
        data = [
            {"bucket": bucket_label(b, period), "totals": totals_json(t)}
            for b, t in sorted(buckets.items(), key=lambda item: item[0])
        ]
    return {"object": "list", "by": by, "period": _period_json(q), "data": data, "has_more": False}


# --- API keys --------------------------------------------------------------------------------


@api.get(
    "/keys",
    response=responses(s.ApiKeyList),
    operation_id="listKeys",
    tags=["API keys"],
    summary="List API keys",
    url_name="keys",
)
@_replica_reads
def keys_list(request: ManagementRequest, page: Query[s.PageQuery]) -> dict[str, Any]:
    keys = api_keys_for_group(group=request.group)
    return paginate(keys, page, api_key_json, time_field="created_at")


@api.post(
    "/keys",
    response=responses(s.ApiKeyWithSecret, status=201, writes=True),
    operation_id="createKey",
    tags=["API keys"],
    summary="Create an API key",
    description="The response holds the secret; it is shown only this once.",
)
def keys_create(request: ManagementRequest, payload: s.ApiKeyCreate) -> Status:
    """Create an inference key; the response carries its secret, shown this once."""
    try:
        issued = api_key_create(
            group=request.group,
            name=payload.name,
            expires_at=payload.expires_at,
            monthly_limit_micros=payload.monthly_limit_micros,
            restrictions=_restrictions(payload.restrictions),
            actor=request.management_key,
            request=request,
        )
    except APIKeyError as exc:
        raise _domain_error(exc) from None
    return Status(201, {**api_key_json(issued.key), "secret": issued.secret})


def _restrictions(payload: s.KeyRestrictionsIn | None) -> Restrictions:
    """The restrictions sent, validated (422 naming `restrictions.<field>` otherwise)."""
    if payload is None:
        return Restrictions()
    try:
        return clean_restrictions(
            models=payload.models, apis=payload.apis, tools=payload.tools,
            ip_ranges=payload.ip_ranges,
        )  # fmt: skip
    except RestrictionError as exc:
        raise invalid(str(exc), param=f"restrictions.{exc.field}") from None


def _key(request: ManagementRequest, key_id: str) -> APIKey:
    return get_or_404(api_key_get_for_group, "API key", key_id, group=request.group)


@api.get(
    "/keys/{key_id}",
    response=responses(s.ApiKey),
    operation_id="getKey",
    tags=["API keys"],
    summary="Get an API key",
    url_name="key",
)
@_replica_reads
def key_get(request: ManagementRequest, key_id: str) -> dict[str, Any]:
    return api_key_json(_key(request, key_id))


@api.patch(
    "/keys/{key_id}",
    response=responses(s.ApiKey, writes=True),
    operation_id="updateKey",
    tags=["API keys"],
    summary="Rename an API key or set its expiry, monthly limit and restrictions",
    description="null removes the expiry, the limit or the restrictions.",
)
def key_update(request: ManagementRequest, key_id: str, payload: s.ApiKeyUpdate) -> dict[str, Any]:
    """Rename a key or set its expiry, monthly limit and restrictions (null removes them); all
    or nothing."""
    key = _key(request, key_id)
    sent = payload.model_fields_set
    try:
        with transaction.atomic():
            if "restrictions" in sent:
                key = api_key_restrict(
                    key=key, restrictions=_restrictions(payload.restrictions),
                    actor=request.management_key, request=request,
                )  # fmt: skip
            key = _key_update(request, key, payload, sent)
    except APIKeyError as exc:
        raise _domain_error(exc) from None
    return api_key_json(key)


def _key_update(
    request: ManagementRequest, key: APIKey, payload: s.ApiKeyUpdate, sent: set[str]
) -> APIKey:
    return api_key_update(
        key=key,
        name=key.name if payload.name is None else payload.name,
        expires_at=payload.expires_at if "expires_at" in sent else key.expires_at,
        monthly_limit_micros=payload.monthly_limit_micros
        if "monthly_limit_micros" in sent
        else key.monthly_limit_micros,
        actor=request.management_key,
        request=request,
    )


@api.post(
    "/keys/{key_id}/revoke",
    response=responses(s.ApiKey, writes=True),
    operation_id="revokeKey",
    tags=["API keys"],
    summary="Revoke an API key",
    url_name="key_revoke",
)
def key_revoke(request: ManagementRequest, key_id: str, payload: s.NoBody) -> dict[str, Any]:
    key = api_key_revoke(key=_key(request, key_id), actor=request.management_key, request=request)
    return api_key_json(key)


@api.post(
    "/keys/{key_id}/regenerate",
    response=responses(s.ApiKeyWithSecret, writes=True),
    operation_id="regenerateKey",
    tags=["API keys"],
    summary="Give an API key a new secret",
    description="The old secret stops working at once, or after `grace_seconds` (at most 24 h; "
    "an older secret still in its grace period stops at once); the new one is shown only this "
    "once.",
    url_name="key_regenerate",
)
def key_regenerate(
    request: ManagementRequest, key_id: str, payload: s.ApiKeyRegenerate
) -> dict[str, Any]:
    try:
        issued = api_key_regenerate(
            key=_key(request, key_id), actor=request.management_key, request=request,
            grace_seconds=payload.grace_seconds,
        )  # fmt: skip
    except APIKeyError as exc:
        raise _domain_error(exc) from None
    return {**api_key_json(issued.key), "secret": issued.secret}


# --- budgets ---------------------------------------------------------------------------------


def _budget(request: ManagementRequest, budget_id: str) -> Any:
    if not (budget_id.isascii() and budget_id.isdigit() and len(budget_id) < 19):
        raise not_found(f"No budget with id “{budget_id[:40]}” in this API group.")
    try:
        return budget_get_for_group(group=request.group, budget_id=int(budget_id))
    except Http404:
        raise not_found(f"No budget with id “{budget_id}” in this API group.") from None


def _budget_out(budget: Any) -> dict[str, Any]:
    return budget_json(BudgetStatus(budget, *budget_spend(budget)))


def _budget_error(exc: BudgetError) -> Exception:
    names = {"amount": "amount_micros", "key": "key_id"}
    return invalid(str(exc), param=names.get(exc.field or "", exc.field))


@api.get(
    "/budgets",
    response=responses(s.BudgetList),
    operation_id="listBudgets",
    tags=["Budgets"],
    summary="List the group's and its keys' budgets, with what each window has spent",
    url_name="budgets",
)
def budgets_list(request: ManagementRequest) -> dict[str, Any]:
    rows = budgets_for_group(group=request.group)
    return {"object": "list", "data": [budget_json(r) for r in rows], "has_more": False}


@api.post(
    "/budgets",
    response=responses(s.Budget, status=201, writes=True),
    operation_id="createBudget",
    tags=["Budgets"],
    summary="Create a budget of the group, or of one of its keys (key_id)",
    description="One budget per window for the group and per key. A hard budget refuses "
    "requests with 402 budget_exceeded once spent; it is in force within about a second.",
)
def budgets_create(request: ManagementRequest, payload: s.BudgetCreate) -> Status:
    key = _key(request, payload.key_id) if payload.key_id is not None else None
    try:
        budget = budget_create(
            group=request.group, api_key=key, amount_micros=payload.amount_micros,
            window=payload.window, enforcement=payload.enforcement,
            actor=request.management_key, request=request,
        )  # fmt: skip
    except BudgetError as exc:
        raise _budget_error(exc) from None
    return Status(201, _budget_out(budget))


@api.get(
    "/budgets/{budget_id}",
    response=responses(s.Budget),
    operation_id="getBudget",
    tags=["Budgets"],
    summary="Get a budget and what its current window has spent",
    url_name="budget",
)
def budget_get(request: ManagementRequest, budget_id: str) -> dict[str, Any]:
    return _budget_out(_budget(request, budget_id))


@api.patch(
    "/budgets/{budget_id}",
    response=responses(s.Budget, writes=True),
    operation_id="updateBudget",
    tags=["Budgets"],
    summary="Change a budget's amount or enforcement",
    description="Its owner and window stay; delete it and create another to change them.",
)
def budget_patch(request: ManagementRequest, budget_id: str, payload: s.BudgetUpdate) -> Any:
    budget = _budget(request, budget_id)
    sent = payload.model_fields_set
    try:
        budget = budget_update(
            budget=budget,
            amount_micros=payload.amount_micros
            if "amount_micros" in sent
            else budget.amount_micros,
            enforcement=payload.enforcement if "enforcement" in sent else budget.enforcement,
            actor=request.management_key,
            request=request,
        )
    except BudgetError as exc:
        raise _budget_error(exc) from None
    return _budget_out(budget)


@api.delete(
    "/budgets/{budget_id}",
    response=responses(s.Budget, writes=True),
    operation_id="deleteBudget",
    tags=["Budgets"],
    summary="Delete a budget",
    url_name="budget_delete",
)
def budget_remove(request: ManagementRequest, budget_id: str) -> Any:
    budget = _budget(request, budget_id)
    out = _budget_out(budget)
    budget_delete(budget=budget, actor=request.management_key, request=request)
    return out


# --- alerts and webhook endpoints ------------------------------------------------------------

# The alerts services name the page's form fields; the API's fields are these.
_ALERT_PARAMS = {
    "budget": "budget_id",
    "balance_threshold": "balance_threshold_micros",
    "members": "member_ids",
    "webhooks": "webhook_endpoint_ids",
}
_THRESHOLD_FIELDS = {
    AlertKind.BUDGET: ("budget_id", "percent"),
    AlertKind.BALANCE: ("balance_threshold_micros",),
}


def _alert_error(exc: AlertError) -> Exception:
    if exc.field:
        return invalid(str(exc), param=_ALERT_PARAMS.get(exc.field, exc.field))
    return invalid(str(exc), code="invalid_state")


def _alert(request: ManagementRequest, alert_id: str) -> Alert:
    return get_or_404(alert_get_for_group, "alert", alert_id, group=request.group)


def _endpoint(request: ManagementRequest, endpoint_id: str) -> WebhookEndpoint:
    return get_or_404(
        webhook_endpoint_get_for_group, "webhook endpoint", endpoint_id, group=request.group
    )


def _alert_input(
    request: ManagementRequest, payload: s.AlertCreate | s.AlertUpdate, current: AlertInput
) -> AlertInput:
    """`current` with the fields sent; ids are looked up in the group (another group's: 404).
    A threshold field of the other kind is refused rather than ignored; changing the kind drops
    the old kind's threshold. The rules themselves are alerts.services' (`_validated`)."""
    sent = payload.model_fields_set
    kind = payload.kind if "kind" in sent and payload.kind is not None else current.kind
    for kind_, fields in _THRESHOLD_FIELDS.items():
        for name in fields:
            if kind_ != kind and name in sent:
                raise invalid(f"“{name}” is for {kind_} alerts; this is a {kind} alert.", name)
    data = dataclasses.replace(current, kind=kind)
    if kind != current.kind:
        data.budget = data.percent = data.balance_threshold_micros = None
    if "name" in sent:
        data.name = payload.name
    if "budget_id" in sent:
        data.budget = _budget(request, payload.budget_id)
    if "percent" in sent:
        data.percent = payload.percent
    if "balance_threshold_micros" in sent:
        data.balance_threshold_micros = payload.balance_threshold_micros
    if "member_ids" in sent:
        data.members = [
            get_or_404(membership_get_for_group, "member", member_id, group=request.group)
            for member_id in dict.fromkeys(payload.member_ids)
        ]
    if "extra_emails" in sent:
        data.extra_emails = list(payload.extra_emails)
    if "send_email" in sent:
        data.send_email = payload.send_email
    if "webhook_endpoint_ids" in sent:
        data.webhooks = [
            _endpoint(request, endpoint_id)
            for endpoint_id in dict.fromkeys(payload.webhook_endpoint_ids)
        ]
    if "enabled" in sent:
        data.enabled = payload.enabled
    return data


@api.get(
    "/alerts",
    response=responses(s.AlertList),
    operation_id="listAlerts",
    tags=["Alerts"],
    summary="List alerts",
    description="Budget-percentage and balance alerts, with their recipients and channels.",
    url_name="alerts",
)
@_replica_reads
def alerts_list(request: ManagementRequest, page: Query[s.PageQuery]) -> dict[str, Any]:
    alerts = alerts_for_group(group=request.group)
    return paginate(alerts, page, alert_json, time_field="created_at")


@api.post(
    "/alerts",
    response=responses(s.Alert, status=201, writes=True),
    operation_id="createAlert",
    tags=["Alerts"],
    summary="Create an alert",
    description="A percentage of a budget (kind budget: budget_id, percent 1–1000) or a "
    "balance below an amount (kind balance: balance_threshold_micros). It fires once per "
    "crossing per window to its e-mail recipients and webhook endpoints; it needs at least one.",
)
def alerts_create(request: ManagementRequest, payload: s.AlertCreate) -> Status:
    data = _alert_input(request, payload, AlertInput(name="", kind=payload.kind))
    try:
        alert = alert_create(
            group=request.group, data=data, actor=request.management_key, request=request
        )
    except AlertError as exc:
        raise _alert_error(exc) from None
    return Status(201, alert_json(alert))


@api.get(
    "/alerts/{alert_id}",
    response=responses(s.Alert),
    operation_id="getAlert",
    tags=["Alerts"],
    summary="Get an alert",
    url_name="alert",
)
@_replica_reads
def alert_get(request: ManagementRequest, alert_id: str) -> dict[str, Any]:
    return alert_json(_alert(request, alert_id))


@api.patch(
    "/alerts/{alert_id}",
    response=responses(s.Alert, writes=True),
    operation_id="updateAlert",
    tags=["Alerts"],
    summary="Change an alert",
    description="Only the fields sent change; a list replaces the whole list. A new kind or "
    "balance level re-arms the alert.",
)
def alert_patch(request: ManagementRequest, alert_id: str, payload: s.AlertUpdate) -> Any:
    alert = _alert(request, alert_id)
    data = _alert_input(request, payload, AlertInput.of(alert))
    try:
        alert = alert_update(alert=alert, data=data, actor=request.management_key, request=request)
    except AlertError as exc:
        raise _alert_error(exc) from None
    return alert_json(alert)


@api.delete(
    "/alerts/{alert_id}",
    response=responses(s.Alert, writes=True),
    operation_id="deleteAlert",
    tags=["Alerts"],
    summary="Delete an alert",
    url_name="alert_delete",
)
def alert_remove(request: ManagementRequest, alert_id: str) -> Any:
    alert = _alert(request, alert_id)
    out = alert_json(alert)
    alert_delete(alert=alert, actor=request.management_key, request=request)
    return out


@api.get(
    "/webhook-endpoints",
    response=responses(s.WebhookEndpointList),
    operation_id="listWebhookEndpoints",
    tags=["Alerts"],
    summary="List webhook endpoints",
    url_name="webhook_endpoints",
)
@_replica_reads
def webhook_endpoints_list(request: ManagementRequest, page: Query[s.PageQuery]) -> dict[str, Any]:
    endpoints = webhook_endpoints_for_group(group=request.group)
    return paginate(endpoints, page, webhook_endpoint_json, time_field="created_at")


@api.post(
    "/webhook-endpoints",
    response=responses(s.WebhookEndpointWithSecret, status=201, writes=True),
    operation_id="createWebhookEndpoint",
    tags=["Alerts"],
    summary="Add a webhook endpoint",
    description="The response holds the signing secret (whsec_…); it is shown only this once.",
)
def webhook_endpoints_create(
    request: ManagementRequest, payload: s.WebhookEndpointCreate
) -> Status:
    try:
        issued = webhook_endpoint_create(
            group=request.group, name=payload.name, url=payload.url,
            payload_format=payload.payload_format, actor=request.management_key, request=request,
        )  # fmt: skip
    except AlertError as exc:
        raise _alert_error(exc) from None
    return Status(201, {**webhook_endpoint_json(issued.endpoint), "secret": issued.secret})


@api.get(
    "/webhook-endpoints/{endpoint_id}",
    response=responses(s.WebhookEndpoint),
    operation_id="getWebhookEndpoint",
    tags=["Alerts"],
    summary="Get a webhook endpoint",
    url_name="webhook_endpoint",
)
@_replica_reads
def webhook_endpoint_get(request: ManagementRequest, endpoint_id: str) -> dict[str, Any]:
    return webhook_endpoint_json(_endpoint(request, endpoint_id))


@api.patch(
    "/webhook-endpoints/{endpoint_id}",
    response=responses(s.WebhookEndpoint, writes=True),
    operation_id="updateWebhookEndpoint",
    tags=["Alerts"],
    summary="Rename a webhook endpoint, change its URL or payload, or switch it off",
    description="Only the fields sent change; the signing secret stays.",
)
def webhook_endpoint_patch(
    request: ManagementRequest, endpoint_id: str, payload: s.WebhookEndpointUpdate
) -> dict[str, Any]:
    endpoint = _endpoint(request, endpoint_id)
    sent = payload.model_fields_set
    try:
        endpoint = webhook_endpoint_update(
            endpoint=endpoint,
            name=payload.name if "name" in sent else endpoint.name,
            url=payload.url if "url" in sent else endpoint.url,
            payload_format=payload.payload_format
            if "payload_format" in sent
            else endpoint.payload_format,
            enabled=payload.enabled if "enabled" in sent else endpoint.enabled,
            actor=request.management_key,
            request=request,
        )
    except AlertError as exc:
        raise _alert_error(exc) from None
    return webhook_endpoint_json(endpoint)


@api.delete(
    "/webhook-endpoints/{endpoint_id}",
    response=responses(s.WebhookEndpoint, writes=True),
    operation_id="deleteWebhookEndpoint",
    tags=["Alerts"],
    summary="Delete a webhook endpoint",
    description="Its deliveries go with it; alerts stop posting to it.",
    url_name="webhook_endpoint_delete",
)
def webhook_endpoint_remove(request: ManagementRequest, endpoint_id: str) -> dict[str, Any]:
    endpoint = _endpoint(request, endpoint_id)
    out = webhook_endpoint_json(endpoint)
    webhook_endpoint_delete(endpoint=endpoint, actor=request.management_key, request=request)
    return out


@api.get(
    "/webhook-endpoints/{endpoint_id}/deliveries",
    response=responses(s.WebhookDeliveryList),
    operation_id="listWebhookDeliveries",
    tags=["Alerts"],
    summary="List an endpoint's deliveries with each try's status code",
    description="Newest first. A delivery is tried until a 2xx answer, then after 1 min, 5 min, "
    "30 min, 2 h, 6 h and 12 h before it gives up.",
    url_name="webhook_deliveries",
)
@_replica_reads
def webhook_deliveries_list(
    request: ManagementRequest, endpoint_id: str, page: Query[s.PageQuery]
) -> dict[str, Any]:
    deliveries = deliveries_for_endpoint(endpoint=_endpoint(request, endpoint_id))
    return paginate(deliveries, page, webhook_delivery_json, time_field="created_at")


@api.post(
    "/webhook-endpoints/{endpoint_id}/test",
    response=responses(s.WebhookDelivery, status=202, writes=True),
    operation_id="testWebhookEndpoint",
    tags=["Alerts"],
    summary="Send a signed test event to a webhook endpoint",
    description="Queues a `test` event (as the Alerts page's “Send test”); the delivery's tries "
    "appear in its deliveries.",
    url_name="webhook_endpoint_test",
)
def webhook_endpoint_send_test(
    request: ManagementRequest, endpoint_id: str, payload: s.NoBody
) -> Status:
    endpoint = _endpoint(request, endpoint_id)
    delivery = webhook_endpoint_test(
        endpoint=endpoint, actor=request.management_key, request=request
    )
    # Read back: where tasks run eagerly (development), the first try has already been made.
    delivery = deliveries_for_endpoint(endpoint=endpoint).get(pk=delivery.pk)
    return Status(202, webhook_delivery_json(delivery))


# --- members and invitations -----------------------------------------------------------------


@api.get(
    "/members",
    response=responses(s.MemberList),
    operation_id="listMembers",
    tags=["Members"],
    summary="List members",
    url_name="members",
)
@_replica_reads
def members_list(request: ManagementRequest, query: Query[s.MembersQuery]) -> dict[str, Any]:
    members = memberships_for_group(group=request.group, role=query.role or "")
    return paginate(members, query, member_json, time_field="created_at")


def _member(request: ManagementRequest, member_id: str) -> Any:
    return get_or_404(membership_get_for_group, "member", member_id, group=request.group)


@api.get(
    "/members/{member_id}",
    response=responses(s.Member),
    operation_id="getMember",
    tags=["Members"],
    summary="Get a member",
    url_name="member",
)
@_replica_reads
def member_get(request: ManagementRequest, member_id: str) -> dict[str, Any]:
    return member_json(_member(request, member_id))


@api.patch(
    "/members/{member_id}",
    response=responses(s.Member, writes=True),
    operation_id="updateMember",
    tags=["Members"],
    summary="Change a member's role",
    description="The last Admin cannot be demoted.",
)
def member_update(
    request: ManagementRequest, member_id: str, payload: s.MemberUpdate
) -> dict[str, Any]:
    """Change a member's role; the last Admin cannot be demoted (members.services)."""
    membership = _member(request, member_id)
    try:
        membership = membership_change_role(
            membership=membership,
            role=payload.role,
            actor=request.management_key,
            request=request,
        )
    except MembershipError as exc:
        raise _domain_error(exc) from None
    return member_json(membership)


@api.delete(
    "/members/{member_id}",
    response=responses(s.Deleted, writes=True),
    operation_id="removeMember",
    tags=["Members"],
    summary="Remove a member",
    description="The last Admin cannot be removed.",
)
def member_remove(request: ManagementRequest, member_id: str) -> dict[str, Any]:
    """Remove a member from the group; the last Admin cannot be removed (members.services)."""
    membership = _member(request, member_id)
    try:
        membership_remove(membership=membership, actor=request.management_key, request=request)
    except MembershipError as exc:
        raise _domain_error(exc) from None
    return {"object": "member", "id": membership.public_id, "deleted": True}


@api.get(
    "/invitations",
    response=responses(s.InvitationList),
    operation_id="listInvitations",
    tags=["Members"],
    summary="List pending invitations",
    url_name="invitations",
)
@_replica_reads
def invitations_list(request: ManagementRequest, page: Query[s.PageQuery]) -> dict[str, Any]:
    """Pending invitations (as on the Members page), newest first."""
    invitations = pending_invitations(group=request.group)
    return paginate(invitations, page, invitation_json, time_field="created_at")


_email = EmailValidator()


@api.post(
    "/invitations",
    response=responses(s.Invitation, status=201, writes=True),
    operation_id="createInvitation",
    tags=["Members"],
    summary="Invite someone by e-mail",
)
def invitations_create(request: ManagementRequest, payload: s.InvitationCreate) -> Status:
    """Invite someone by e-mail (the invitation e-mail is sent as from the Members page)."""
    email = payload.email.strip()
    try:
        _email(email)
    except DjangoValidationError:
        raise invalid("“email” must be an e-mail address.", param="email") from None
    try:
        issued = invitation_create(
            group=request.group,
            email=email,
            role=payload.role,
            actor=request.management_key,
            request=request,
        )
    except MembershipError as exc:
        raise _domain_error(exc) from None
    return Status(201, invitation_json(issued.invitation))


def _invitation(request: ManagementRequest, invitation_id: str) -> Invitation:
    return get_or_404(invitation_get_for_group, "invitation", invitation_id, group=request.group)


@api.get(
    "/invitations/{invitation_id}",
    response=responses(s.Invitation),
    operation_id="getInvitation",
    tags=["Members"],
    summary="Get an invitation",
    url_name="invitation",
)
@_replica_reads
def invitation_get(request: ManagementRequest, invitation_id: str) -> dict[str, Any]:
    return invitation_json(_invitation(request, invitation_id))


@api.post(
    "/invitations/{invitation_id}/revoke",
    response=responses(s.Invitation, writes=True),
    operation_id="revokeInvitation",
    tags=["Members"],
    summary="Revoke a pending invitation",
    url_name="invitation_revoke",
)
def invitation_revoke_handler(
    request: ManagementRequest, invitation_id: str, payload: s.NoBody
) -> dict[str, Any]:
    invitation = _invitation(request, invitation_id)
    try:
        invitation_revoke(invitation=invitation, actor=request.management_key, request=request)
    except MembershipError as exc:
        raise _domain_error(exc) from None
    invitation.refresh_from_db()
    return invitation_json(invitation)


# --- invoices --------------------------------------------------------------------------------


@api.get(
    "/invoices",
    response=responses(s.InvoiceList),
    operation_id="listInvoices",
    tags=["Invoices"],
    summary="List invoices and credit notes",
    url_name="invoices",
)
@_replica_reads
def invoices_list(request: ManagementRequest, page: Query[s.PageQuery]) -> dict[str, Any]:
    """Invoices and credit notes, newest first (the Invoice history page's list)."""
    invoices = invoices_for_group(group=request.group)
    return paginate(invoices, page, invoice_json, time_field="issued_at")


def _invoice(request: ManagementRequest, invoice_id: str) -> Invoice:
    return get_or_404(invoice_get_for_group, "invoice", invoice_id, group=request.group)


@api.get(
    "/invoices/{invoice_id}",
    response=responses(s.InvoiceDetail),
    operation_id="getInvoice",
    tags=["Invoices"],
    summary="Get an invoice with its lines",
    url_name="invoice",
)
@_replica_reads
def invoice_get(request: ManagementRequest, invoice_id: str) -> dict[str, Any]:
    return invoice_detail_json(_invoice(request, invoice_id))


_PDF = {
    "responses": {
        200: {
            "description": "The PDF.",
            "content": {"application/pdf": {"schema": {"type": "string", "format": "binary"}}},
        }
    }
}


@api.get(
    "/invoices/{invoice_id}/pdf",
    response=responses(None),
    operation_id="getInvoicePdf",
    tags=["Invoices"],
    summary="Download an invoice as PDF",
    openapi_extra=_PDF,
    url_name="invoice_pdf",
)
@_replica_reads
def invoice_pdf_get(request: ManagementRequest, invoice_id: str) -> HttpResponse:
    doc = _invoice(request, invoice_id)
    return pdf.pdf_response(pdf.invoice_pdf(doc), f"{doc.number}.pdf")

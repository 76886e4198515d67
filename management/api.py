"""Management API endpoints: thin handlers over the apps' selectors and services.

Authentication, the per-key rate limit and the admin/read-only rule are applied by
`management_endpoint` (management/http.py); every handler works inside `request.group`, so
another group's object id is a 404 like an unknown one. Writes are audited by the services they
call, with the management key as the actor.
"""

from __future__ import annotations

import dataclasses
import functools
import zoneinfo
from collections import defaultdict
from datetime import timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import EmailValidator
from django.forms.models import model_to_dict
from django.http import HttpResponse, JsonResponse

from billing import pdf
from billing.models import BillingProfile, Invoice
from billing.selectors import (
    credit_account_get,
    invoice_get_for_group,
    invoices_for_group,
    ledger_transactions,
    tier_info,
)
from groups.forms import APIGroupForm
from groups.models import APIGroup
from groups.services import api_group_update
from keys.models import APIKey
from keys.selectors import api_key_get_for_group, api_keys_for_group
from keys.services import (
    APIKeyError,
    api_key_create,
    api_key_regenerate,
    api_key_revoke,
    api_key_update,
)
from management.http import (
    ApiError,
    ManagementRequest,
    created,
    get_or_404,
    int_field,
    invalid,
    json_body,
    management_endpoint,
    paginate,
    parse_datetime_field,
    query_text,
    text_field,
)
from management.serializers import (
    api_key_json,
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
)
from members.models import Invitation, Role
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
from usage.models import AIModel
from usage.periods import Period, PeriodError, resolve_period
from usage.rollups import METRICS
from usage.selectors import Totals, bucket_label, usage_for, usage_rows

# Hourly buckets are offered for spans up to this long (744 buckets), like a month's chart.
HOURLY_MAX_SPAN = timedelta(days=31)


def _domain_error(exc: APIKeyError | MembershipError) -> Exception:
    """A service's refusal as a 422: `validation_error` naming the field, else `invalid_state`;
    the daily invitation limit is a 429."""
    if isinstance(exc, InvitationLimitReached):
        return ApiError(429, "invitation_limit_reached", str(exc), type_="rate_limit_error")
    if exc.field:
        return invalid(str(exc), param=exc.field)
    return invalid(str(exc), code="invalid_state")


# --- group -----------------------------------------------------------------------------------

GROUP_FIELDS = list(APIGroupForm.Meta.fields)


def group_get(request: ManagementRequest) -> HttpResponse:
    return JsonResponse(group_json(request.group))  # loaded with the key, this request


def group_update(request: ManagementRequest) -> HttpResponse:
    """Change organization details; validated by the API Group page's form."""
    body = json_body(request, GROUP_FIELDS)
    for name in body:
        text_field(body, name)
    instance = APIGroup.objects.get(pk=request.group.pk)
    current = model_to_dict(instance, fields=GROUP_FIELDS)
    current["country"] = str(instance.country or "")
    form = APIGroupForm({**current, **body}, instance=instance)
    if not form.is_valid():
        name, errors = next(iter(form.errors.items()))
        raise invalid(" ".join(str(e) for e in errors), param=name)
    group = api_group_update(
        group=instance, actor=request.management_key, request=request, **form.cleaned_data
    )
    return JsonResponse(group_json(group))


group = management_endpoint(get=group_get, patch=group_update)


# --- billing ---------------------------------------------------------------------------------


def billing_get(request: ManagementRequest) -> HttpResponse:
    """Balance, usage tier and the per-model rate limits it gives, auto top-up settings."""
    account = credit_account_get(group=request.group)
    info = tier_info(account=account)
    profile = BillingProfile.objects.filter(group=request.group).first() or BillingProfile()
    return JsonResponse(
        {
            "object": "billing",
            **money("balance", account.balance_micros),
            **money("purchased", account.purchased_micros),
            "blocked": account.balance_micros <= 0,
            "tier": tier_json(info.tier),
            "next_tier": tier_json(info.next),
            "limits": [{"model": m.model, "requests_per_minute": m.rpm} for m in info.limits],
            "auto_top_up": {
                "enabled": profile.auto_top_up_enabled,
                **money("threshold", profile.auto_top_up_threshold_micros),
                **money("amount", profile.auto_top_up_amount_micros),
            },
        }
    )


def transactions_list(request: ManagementRequest) -> HttpResponse:
    """Ledger entries other than per-request usage, as on the Billing page; newest first."""
    account = credit_account_get(group=request.group)
    page = paginate(request, ledger_transactions(account=account), time_field="created_at")
    return page.response(ledger_entry_json)


billing = management_endpoint(get=billing_get)
transactions = management_endpoint(get=transactions_list)


# --- usage -----------------------------------------------------------------------------------


@functools.cache
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


@dataclasses.dataclass(frozen=True)
class UsageQuery:
    period: Period
    key: APIKey | None
    model: AIModel | None


def _granular(period: Period, granularity: str) -> Period:
    if granularity not in ("hour", "day"):
        raise invalid("“granularity” must be hour or day.", param="granularity")
    if granularity == "hour" and period.end - period.start > HOURLY_MAX_SPAN:
        raise invalid(
            f"Hourly buckets cover at most {HOURLY_MAX_SPAN.days} days; use day, or a shorter range.",
            param="granularity",
        )
    return dataclasses.replace(period, granularity=granularity)


def _usage_query(request: ManagementRequest) -> UsageQuery:
    """Read the range and filters the Usage Metrics page takes (same names, same rules)."""
    tz = query_text(request, "tz") or "UTC"
    if tz not in _zones():
        raise invalid(f"Unknown time zone “{tz[:64]}”; use an IANA name.", param="tz")
    preset, start, end = (query_text(request, n, 40) or None for n in ("range", "start", "end"))
    try:
        period = resolve_period(preset=preset, start=start, end=end, tz=tz)
    except PeriodError as exc:
        raise invalid(str(exc), param=exc.field) from None
    if granularity := query_text(request, "granularity", 10):
        period = _granular(period, granularity)
    key = None
    if key_id := query_text(request, "key", 40):
        key = get_or_404(api_key_get_for_group, "API key", key_id, group=request.group)
    model = None
    if model_name := query_text(request, "model", 100):
        model = AIModel.objects.filter(name=model_name).first()
        if model is None:
            raise invalid(f"There is no model “{model_name}”.", param="model")
    return UsageQuery(period, key, model)


def _period_json(q: UsageQuery) -> dict[str, Any]:
    return {
        "start": iso(q.period.start),
        "end": iso(q.period.end),
        "tz": q.period.tz.key,
        "range": q.period.preset,
        "granularity": q.period.granularity,
        "key": q.key.public_id if q.key else None,
        "model": q.model.name if q.model else None,
    }


def usage_get(request: ManagementRequest) -> HttpResponse:
    """Totals and the time series of the Usage Metrics page (usage.selectors.usage_for)."""
    q = _usage_query(request)
    usage = usage_for(
        group=request.group,
        period=q.period,
        key_id=q.key.pk if q.key else None,
        model_id=q.model.pk if q.model else None,
    )
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
    return JsonResponse(
        {
            "object": "usage",
            "period": _period_json(q),
            "totals": totals_json(usage.totals),
            "series": series,
        }
    )


GROUP_BY = ("model", "key", "day", "hour")


def usage_grouped(request: ManagementRequest) -> HttpResponse:
    """Totals grouped by model or key (the dashboard's tables), or by day or hour."""
    by = query_text(request, "by", 10)
    if by not in GROUP_BY:
        raise invalid(f"“by” must be one of: {', '.join(GROUP_BY)}.", param="by")
    q = _usage_query(request)
    key_id, model_id = (q.key.pk if q.key else None), (q.model.pk if q.model else None)
    data: list[dict[str, Any]] = []
    if by in ("model", "key"):
        usage = usage_for(group=request.group, period=q.period, key_id=key_id, model_id=model_id)
        if by == "model":
            data = [{"model": b.label, "totals": totals_json(b.totals)} for b in usage.by_model]
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
        rows = usage_rows(group=request.group, period=period, key_id=key_id, model_id=model_id)
        for bucket, _key, _model, *values in rows:
            buckets[bucket].add(dict(zip(METRICS, (int(v or 0) for v in values), strict=True)))
        data = [
            {"bucket": bucket_label(b, period), "totals": totals_json(t)}
            for b, t in sorted(buckets.items(), key=lambda item: item[0])
        ]
    return JsonResponse(
        {"object": "list", "by": by, "period": _period_json(q), "data": data, "has_more": False}
    )


usage = management_endpoint(get=usage_get)
usage_by = management_endpoint(get=usage_grouped)


# --- API keys --------------------------------------------------------------------------------

KEY_FIELDS = ("name", "expires_at", "monthly_limit_micros")


def keys_list(request: ManagementRequest) -> HttpResponse:
    return paginate(
        request, api_keys_for_group(group=request.group), time_field="created_at"
    ).response(api_key_json)


def keys_create(request: ManagementRequest) -> HttpResponse:
    """Create an inference key; the response carries its secret, shown this once."""
    body = json_body(request, KEY_FIELDS)
    name = text_field(body, "name", required=True)
    expires_at = parse_datetime_field(body.get("expires_at"), "expires_at")
    limit = int_field(body.get("monthly_limit_micros"), "monthly_limit_micros")
    try:
        issued = api_key_create(
            group=request.group,
            name=name or "",
            expires_at=expires_at,
            monthly_limit_micros=limit,
            actor=request.management_key,
            request=request,
        )
    except APIKeyError as exc:
        raise _domain_error(exc) from None
    return created({**api_key_json(issued.key), "secret": issued.secret})


def _key(request: ManagementRequest, key_id: str) -> APIKey:
    return get_or_404(api_key_get_for_group, "API key", key_id, group=request.group)


def key_get(request: ManagementRequest, key_id: str) -> HttpResponse:
    return JsonResponse(api_key_json(_key(request, key_id)))


def key_update(request: ManagementRequest, key_id: str) -> HttpResponse:
    """Rename a key or set its expiry and monthly limit (null removes them)."""
    key = _key(request, key_id)
    body = json_body(request, KEY_FIELDS)
    name = text_field(body, "name")
    try:
        key = api_key_update(
            key=key,
            name=key.name if name is None else name,
            expires_at=parse_datetime_field(body["expires_at"], "expires_at")
            if "expires_at" in body
            else key.expires_at,
            monthly_limit_micros=int_field(body["monthly_limit_micros"], "monthly_limit_micros")
            if "monthly_limit_micros" in body
            else key.monthly_limit_micros,
            actor=request.management_key,
            request=request,
        )
    except APIKeyError as exc:
        raise _domain_error(exc) from None
    return JsonResponse(api_key_json(key))


def key_revoke(request: ManagementRequest, key_id: str) -> HttpResponse:
    json_body(request, ())
    key = api_key_revoke(key=_key(request, key_id), actor=request.management_key, request=request)
    return JsonResponse(api_key_json(key))


def key_regenerate(request: ManagementRequest, key_id: str) -> HttpResponse:
    json_body(request, ())
    try:
        issued = api_key_regenerate(
            key=_key(request, key_id), actor=request.management_key, request=request
        )
    except APIKeyError as exc:
        raise _domain_error(exc) from None
    return JsonResponse({**api_key_json(issued.key), "secret": issued.secret})


keys = management_endpoint(get=keys_list, post=keys_create)
key = management_endpoint(get=key_get, patch=key_update)
key_revoke_view = management_endpoint(post=key_revoke)
key_regenerate_view = management_endpoint(post=key_regenerate)


# --- members and invitations -----------------------------------------------------------------


def _role(value: Any, name: str = "role") -> str:
    if value not in Role.values:
        raise invalid(f"“{name}” must be one of: {', '.join(Role.values)}.", param=name)
    return str(value)


def members_list(request: ManagementRequest) -> HttpResponse:
    role = query_text(request, "role", 10)
    if role:
        _role(role)
    qs = memberships_for_group(group=request.group, role=role)
    return paginate(request, qs, time_field="created_at").response(member_json)


def _member(request: ManagementRequest, member_id: str) -> Any:
    return get_or_404(membership_get_for_group, "member", member_id, group=request.group)


def member_get(request: ManagementRequest, member_id: str) -> HttpResponse:
    return JsonResponse(member_json(_member(request, member_id)))


def member_update(request: ManagementRequest, member_id: str) -> HttpResponse:
    """Change a member's role; the last Admin cannot be demoted (members.services)."""
    membership = _member(request, member_id)
    body = json_body(request, ("role",))
    if "role" not in body:
        raise invalid("“role” is required.", param="role")
    try:
        membership = membership_change_role(
            membership=membership,
            role=_role(body["role"]),
            actor=request.management_key,
            request=request,
        )
    except MembershipError as exc:
        raise _domain_error(exc) from None
    return JsonResponse(member_json(membership))


def member_remove(request: ManagementRequest, member_id: str) -> HttpResponse:
    """Remove a member from the group; the last Admin cannot be removed (members.services)."""
    membership = _member(request, member_id)
    try:
        membership_remove(membership=membership, actor=request.management_key, request=request)
    except MembershipError as exc:
        raise _domain_error(exc) from None
    return JsonResponse({"object": "member", "id": membership.public_id, "deleted": True})


def invitations_list(request: ManagementRequest) -> HttpResponse:
    """Pending invitations (as on the Members page), newest first."""
    qs = pending_invitations(group=request.group)
    return paginate(request, qs, time_field="created_at").response(invitation_json)


_email = EmailValidator()


def invitations_create(request: ManagementRequest) -> HttpResponse:
    """Invite someone by e-mail (the invitation e-mail is sent as from the Members page)."""
    body = json_body(request, ("email", "role"))
    email = (text_field(body, "email", required=True, max_length=254) or "").strip()
    try:
        _email(email)
    except ValidationError:
        raise invalid("“email” must be an e-mail address.", param="email") from None
    role = _role(body.get("role", Role.MEMBER))
    try:
        issued = invitation_create(
            group=request.group,
            email=email,
            role=role,
            actor=request.management_key,
            request=request,
        )
    except MembershipError as exc:
        raise _domain_error(exc) from None
    return created(invitation_json(issued.invitation))


def _invitation(request: ManagementRequest, invitation_id: str) -> Invitation:
    return get_or_404(invitation_get_for_group, "invitation", invitation_id, group=request.group)


def invitation_get(request: ManagementRequest, invitation_id: str) -> HttpResponse:
    return JsonResponse(invitation_json(_invitation(request, invitation_id)))


def invitation_revoke_handler(request: ManagementRequest, invitation_id: str) -> HttpResponse:
    json_body(request, ())
    invitation = _invitation(request, invitation_id)
    try:
        invitation_revoke(invitation=invitation, actor=request.management_key, request=request)
    except MembershipError as exc:
        raise _domain_error(exc) from None
    invitation.refresh_from_db()
    return JsonResponse(invitation_json(invitation))


members = management_endpoint(get=members_list)
member = management_endpoint(get=member_get, patch=member_update, delete=member_remove)
invitations = management_endpoint(get=invitations_list, post=invitations_create)
invitation = management_endpoint(get=invitation_get)
invitation_revoke_view = management_endpoint(post=invitation_revoke_handler)


# --- invoices --------------------------------------------------------------------------------


def invoices_list(request: ManagementRequest) -> HttpResponse:
    """Invoices and credit notes, newest first (the Invoice history page's list)."""
    qs = invoices_for_group(group=request.group)
    return paginate(request, qs, time_field="issued_at").response(invoice_json)


def _invoice(request: ManagementRequest, invoice_id: str) -> Invoice:
    return get_or_404(invoice_get_for_group, "invoice", invoice_id, group=request.group)


def invoice_get(request: ManagementRequest, invoice_id: str) -> HttpResponse:
    return JsonResponse(invoice_detail_json(_invoice(request, invoice_id)))


def invoice_pdf_get(request: ManagementRequest, invoice_id: str) -> HttpResponse:
    doc = _invoice(request, invoice_id)
    return pdf.pdf_response(pdf.invoice_pdf(doc), f"{doc.number}.pdf")


invoices = management_endpoint(get=invoices_list)
invoice = management_endpoint(get=invoice_get)
invoice_pdf = management_endpoint(get=invoice_pdf_get)

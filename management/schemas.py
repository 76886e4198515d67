"""Typed request and response schemas of the Management API (pydantic, via django-ninja).

The OpenAPI document at /v1/management/openapi.json is generated from these. Request bodies are
closed (unknown fields are refused) and strict: a number is never read from a string or a float,
so a malformed amount (1e30, NaN, Infinity, 1e-9, "5") is refused naming its field. Money is
integer micro-dollars (`*_micros`) plus a `*_display` string; invoice totals are `*_cents`.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, create_model

from alerts.models import AlertKind, DeliveryStatus, PayloadFormat
from alerts.services import MAX_EXTRA_EMAILS
from billing.budgets import MAX_BUDGET_MICROS
from core.money import MAX_AMOUNT_MICROS
from keys import restrictions as key_restrictions
from keys.services import MAX_GRACE_SECONDS, MAX_MONTHLY_LIMIT_MICROS
from members.models import Role
from usage.periods import PRESETS

_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,6})?([Zz]|[+-]\d{2}:\d{2})$")


# --- input types ---------------------------------------------------------------------------


def clean_text(value: str) -> str:
    """Text a person could have typed: no NUL characters, no lone surrogates."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("is not valid Unicode text") from None
    return value


def _rfc3339(value: Any) -> Any:
    """An RFC 3339 date-time with a time zone (or null); dates, numbers and naive times are not."""
    if value is None or isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _RFC3339.match(clean_text(value)):
        raise ValueError(
            "must be an RFC 3339 date-time with a time zone, such as 2027-01-31T00:00:00Z"
        )
    return datetime.fromisoformat(value.upper())


def _not_empty(value: Any) -> Any:
    if value == "":
        raise ValueError("is empty; leave it out to use the default")
    return value


def _digits(value: Any) -> Any:
    """A query string integer: ASCII digits only (no sign, blanks, decimals or exponents)."""
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        raise ValueError("must be a whole number")
    return int(value) if isinstance(value, str) else value


Text = Annotated[str, AfterValidator(clean_text)]
DateTime = Annotated[datetime, BeforeValidator(_rfc3339)]
MonthlyLimit = Annotated[
    int,
    Field(
        ge=1,
        le=MAX_MONTHLY_LIMIT_MICROS,
        description="Micro-dollars per calendar month (1 USD = 1,000,000); null removes it.",
    ),
]
RoleName = Literal["admin", "member"]
assert set(RoleName.__args__) == set(Role.values)  # type: ignore[attr-defined]


# Query parameters: present but empty is an error, not the default.
QueryText = Annotated[str, BeforeValidator(_not_empty), AfterValidator(clean_text)]


class Body(BaseModel):
    """A closed, strict JSON object."""

    model_config = ConfigDict(extra="forbid", strict=True)


class GroupUpdate(Body):
    name: Annotated[Text, Field(max_length=100)] = None  # type: ignore[assignment]
    description: Annotated[Text, Field(max_length=500)] = None  # type: ignore[assignment]
    address_line1: Annotated[Text, Field(max_length=200)] = None  # type: ignore[assignment]
    address_line2: Annotated[Text, Field(max_length=200)] = None  # type: ignore[assignment]
    city: Annotated[Text, Field(max_length=100)] = None  # type: ignore[assignment]
    state: Annotated[Text, Field(max_length=100)] = None  # type: ignore[assignment]
    postal_code: Annotated[Text, Field(max_length=20)] = None  # type: ignore[assignment]
    country: Annotated[
        Text, Field(max_length=2, description="ISO 3166-1 alpha-2 code, or empty.")
    ] = None  # type: ignore[assignment]
    tax_id: Annotated[
        Text, Field(max_length=32, description="Checked per country (python-stdnum).")
    ] = None  # type: ignore[assignment]
    time_zone: Annotated[
        Text,
        Field(
            max_length=64,
            description="An IANA time zone (e.g. Europe/Paris): budget windows start at "
            "midnight here.",
        ),
    ] = None  # type: ignore[assignment]


RestrictionList = Annotated[list[str], Field(max_length=key_restrictions.MAX_ENTRIES)]


class KeyRestrictionsIn(Body):
    """Allowlists; an empty list (or a field left out) means "all"."""

    models: RestrictionList = Field(default_factory=list, description="Model names.")
    apis: list[ApiName] = Field(default_factory=list, description="APIs the key may call.")
    tools: RestrictionList = Field(
        default_factory=list, description="Agent API tool types, e.g. web_search."
    )
    ip_ranges: RestrictionList = Field(
        default_factory=list,
        description="Client IP ranges in CIDR notation (IPv4 or IPv6; one address is a /32 "
        "or /128).",
    )


ApiName = Literal["chat", "agent", "search", "embeddings", "async"]
assert ApiName.__args__ == key_restrictions.APIS  # type: ignore[attr-defined]


class ApiKeyCreate(Body):
    name: Annotated[Text, Field(min_length=1, max_length=100)]
    expires_at: DateTime | None = None
    monthly_limit_micros: MonthlyLimit | None = None
    restrictions: KeyRestrictionsIn | None = None


class ApiKeyUpdate(Body):
    name: Annotated[Text, Field(min_length=1, max_length=100)] = None  # type: ignore[assignment]
    expires_at: DateTime | None = None
    monthly_limit_micros: MonthlyLimit | None = None
    restrictions: KeyRestrictionsIn | None = Field(
        default=None, description="Replaces all four lists; null removes every restriction."
    )


class ApiKeyRegenerate(Body):
    grace_seconds: int = Field(
        default=0,
        ge=0,
        le=MAX_GRACE_SECONDS,
        description="How long the old secret keeps working (0: it stops at once; at most 24 h).",
    )


class MemberUpdate(Body):
    role: RoleName


class InvitationCreate(Body):
    email: Annotated[Text, Field(max_length=254, json_schema_extra={"format": "email"})]
    role: RoleName = "member"


BudgetAmount = Annotated[
    int,
    Field(ge=1, le=MAX_BUDGET_MICROS, description="Micro-dollars (1 USD = 1,000,000)."),
]
WindowName = Literal["daily", "weekly", "monthly", "lifetime"]
EnforcementName = Literal["hard", "soft"]


class BudgetCreate(Body):
    amount_micros: BudgetAmount
    window: WindowName = Field(
        description="daily, weekly (from Monday), monthly or lifetime; windows start at "
        "midnight in the group's time zone."
    )
    enforcement: EnforcementName = Field(
        "hard", description="hard: requests are refused (402 budget_exceeded) once it is spent; "
        "soft: alerts only.",
    )  # fmt: skip
    key_id: Annotated[
        Text, Field(max_length=40, description="An API key's id; leave out for the whole group.")
    ] = None  # type: ignore[assignment]


class BudgetUpdate(Body):
    amount_micros: BudgetAmount = None  # type: ignore[assignment]
    enforcement: EnforcementName = None  # type: ignore[assignment]


class NoBody(Body):
    """Actions take no fields; an empty body or {} is fine."""


AlertKindName = Literal["budget", "balance"]
assert set(AlertKindName.__args__) == set(AlertKind.values)  # type: ignore[attr-defined]
PayloadFormatName = Literal["json", "slack"]
assert set(PayloadFormatName.__args__) == set(PayloadFormat.values)  # type: ignore[attr-defined]
DeliveryStatusName = Literal["pending", "succeeded", "failed"]
assert set(DeliveryStatusName.__args__) == set(DeliveryStatus.values)  # type: ignore[attr-defined]

AlertName = Annotated[Text, Field(min_length=1, max_length=100)]
AlertBudgetId = Annotated[
    Text, Field(max_length=20, description="Budget alerts: the id of a budget of the group.")
]
Percent = Annotated[
    int,
    Field(
        ge=1, le=1000,
        description="Budget alerts: fires once per budget window when the spend reaches this "
        "share of the budget (e.g. 50, 80, 100).",
    ),
]  # fmt: skip
BalanceThreshold = Annotated[
    int,
    Field(
        ge=1, le=MAX_AMOUNT_MICROS,
        description="Balance alerts: fires when the credit balance falls below this many "
        "micro-dollars; re-arms when it is back at or above it.",
    ),
]  # fmt: skip
PublicIds = Annotated[list[Annotated[Text, Field(max_length=40)]], Field(max_length=100)]
ExtraEmails = Annotated[
    list[Annotated[Text, Field(max_length=254)]],
    Field(max_length=MAX_EXTRA_EMAILS, description="Other addresses to e-mail (at most 20)."),
]
MemberIds = Annotated[PublicIds, Field(description="Members of the group to e-mail (their ids).")]
EndpointIds = Annotated[
    PublicIds, Field(description="Webhook endpoints of the group to post to (their ids).")
]


class AlertCreate(Body):
    """An alert needs someone to tell: e-mail recipients (with send_email) or an endpoint."""

    name: AlertName
    kind: AlertKindName = Field(
        description="budget: a percentage of a budget (budget_id, percent); balance: the credit "
        "balance below an amount (balance_threshold_micros)."
    )
    budget_id: AlertBudgetId = None  # type: ignore[assignment]
    percent: Percent = None  # type: ignore[assignment]
    balance_threshold_micros: BalanceThreshold = None  # type: ignore[assignment]
    member_ids: MemberIds = Field(default_factory=list)
    extra_emails: ExtraEmails = Field(default_factory=list)
    send_email: bool = True
    webhook_endpoint_ids: EndpointIds = Field(default_factory=list)
    enabled: bool = True


class AlertUpdate(Body):
    """Only the fields sent change; lists replace the whole list. Changing `kind` drops the
    other kind's threshold."""

    name: AlertName = None  # type: ignore[assignment]
    kind: AlertKindName = None  # type: ignore[assignment]
    budget_id: AlertBudgetId = None  # type: ignore[assignment]
    percent: Percent = None  # type: ignore[assignment]
    balance_threshold_micros: BalanceThreshold = None  # type: ignore[assignment]
    member_ids: MemberIds = None  # type: ignore[assignment]
    extra_emails: ExtraEmails = None  # type: ignore[assignment]
    send_email: bool = None  # type: ignore[assignment]
    webhook_endpoint_ids: EndpointIds = None  # type: ignore[assignment]
    enabled: bool = None  # type: ignore[assignment]


EndpointName = Annotated[Text, Field(min_length=1, max_length=100)]
EndpointURL = Annotated[
    Text,
    Field(
        min_length=1, max_length=500,
        description="https:// (plain http only to localhost outside production). Each delivery "
        "is a POST signed with the endpoint's secret (Portal-Signature).",
    ),
]  # fmt: skip


class WebhookEndpointCreate(Body):
    name: EndpointName
    url: EndpointURL
    payload_format: PayloadFormatName = Field(
        "json", description='json: the signed JSON event; slack: {"text": …} for Slack-compatible '
        "incoming webhooks.",
    )  # fmt: skip


class WebhookEndpointUpdate(Body):
    name: EndpointName = None  # type: ignore[assignment]
    url: EndpointURL = None  # type: ignore[assignment]
    payload_format: PayloadFormatName = None  # type: ignore[assignment]
    enabled: bool = None  # type: ignore[assignment]


# --- query parameters ----------------------------------------------------------------------

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100


class PageQuery(BaseModel):
    limit: Annotated[
        int,
        Field(ge=1, le=MAX_PAGE_SIZE, description="Items per page (1–100)."),
        BeforeValidator(_digits),
        BeforeValidator(_not_empty),
    ] = DEFAULT_PAGE_SIZE
    cursor: Annotated[
        QueryText, Field(max_length=200, description="The `next_cursor` of the previous page.")
    ] = None  # type: ignore[assignment]


class UsageQuery(BaseModel):
    range: Annotated[
        QueryText,
        Field(
            max_length=40,
            description="A preset range; default 30d.",
            json_schema_extra={"enum": list(PRESETS)},
        ),
    ] = None  # type: ignore[assignment]
    start: Annotated[
        QueryText,
        Field(
            max_length=40,
            description="First day of a custom range (inclusive).",
            json_schema_extra={"format": "date"},
        ),
    ] = None  # type: ignore[assignment]
    end: Annotated[
        QueryText,
        Field(
            max_length=40,
            description="Last day of a custom range (inclusive).",
            json_schema_extra={"format": "date"},
        ),
    ] = None  # type: ignore[assignment]
    tz: Annotated[
        QueryText,
        Field(max_length=200, description="IANA time zone for days and buckets; default UTC."),
    ] = None  # type: ignore[assignment]
    granularity: Literal["hour", "day"] = Field(None, description="Bucket size; default by span.")  # type: ignore[arg-type]
    key: Annotated[QueryText, Field(max_length=40, description="Only this API key (its id).")] = (
        None  # type: ignore[assignment]
    )
    model: Annotated[
        QueryText, Field(max_length=100, description="Only this model (its name).")
    ] = None  # type: ignore[assignment]
    api: Literal["chat", "agent", "search", "embeddings", "async"] = Field(  # usage.metrics.APIS
        None,  # type: ignore[arg-type]
        description="Only this API: chat (chat completions), agent (the Agent API), search "
        "(the Search API), embeddings or async (async chat completions).",
    )
    tool: Annotated[
        QueryText,
        Field(
            max_length=50,
            description="Only the requests that called this tool of the Agent API (its name, "
            "such as web_search); their totals include every tool fee they paid.",
        ),
    ] = None  # type: ignore[assignment]
    end_user: Annotated[
        QueryText,
        Field(max_length=128, description="Only the requests sent with this end user (`user`)."),
    ] = None  # type: ignore[assignment]
    tag: Annotated[
        QueryText,
        Field(
            max_length=97,
            description="Only the requests carrying this tag, as key=value (X-Portal-Tags, "
            "Agent API metadata).",
        ),
    ] = None  # type: ignore[assignment]


GroupBy = Literal["model", "key", "api", "tool", "day", "hour", "end_user", "tag"]


class UsageGroupedQuery(UsageQuery):
    by: GroupBy = Field(description="How to group.")
    tag_key: Annotated[
        QueryText,
        Field(
            max_length=32,
            description="By tag: only this tag key's values, and a last row “(none)” for the "
            "requests without it (the rows then add up to the totals). Without it, a request "
            "counts under each of its tags.",
        ),
    ] = None  # type: ignore[assignment]


class MembersQuery(PageQuery):
    role: RoleName = Field(None, description="Only this role.")  # type: ignore[arg-type]


# --- responses -----------------------------------------------------------------------------

# Times are sent as the serializers write them (datetime.isoformat(), to the microsecond).
Timestamp = Annotated[str, Field(json_schema_extra={"format": "date-time"})]
Micros = Annotated[int, Field(description="Amount in micro-dollars (1 USD = 1,000,000).")]
Display = Annotated[str, Field(description="The amount for people, in dollars and cents.")]


class Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(Out):
    message: str
    type: str
    code: str
    param: str | None


class Error(Out):
    error: ErrorDetail


class Group(Out):
    object: Literal["group"]
    id: str
    name: str
    description: str
    address_line1: str
    address_line2: str
    city: str
    state: str
    postal_code: str
    country: str = Field(description="ISO 3166-1 alpha-2 code, or empty.")
    tax_id: str
    time_zone: str = Field(description="IANA time zone: budget windows start at midnight here.")
    created_at: Timestamp
    updated_at: Timestamp


class Tier(Out):
    number: int
    rate_limit_multiplier: int = Field(
        description="Applies only to models with no [limits] row: their requests per minute "
        "are rate_limit_rpm × this."
    )
    min_purchased_micros: Micros
    min_purchased_display: Display


class FamilyLimit(Out):
    family: str = Field(
        description='The API family: a chat model\'s name ("sonar", …), "agent", "search", '
        '"embeddings", "async_create", "async_get" or "async_list".'
    )
    model: str | None = Field(
        description="Kept for clients of the earlier shape (a limit per model): the chat model's "
        "name for a chat model's family, else null."
    )
    requests_per_minute: int | None
    requests_per_second: int | None
    published: bool = Field(
        description="False when Perplexity publishes no limit for this family (this portal's "
        "choice) or the model is limited by its own rate_limit_rpm."
    )


class AutoTopUp(Out):
    enabled: bool
    threshold_micros: Micros
    threshold_display: Display
    amount_micros: Micros
    amount_display: Display


class Billing(Out):
    object: Literal["billing"]
    balance_micros: Micros
    balance_display: Display
    purchased_micros: Micros
    purchased_display: Display
    blocked: bool
    tier: Tier
    next_tier: Tier | None
    limits: list[FamilyLimit]
    auto_top_up: AutoTopUp


class LedgerEntry(Out):
    object: Literal["ledger_entry"]
    kind: str
    kind_display: str
    amount_micros: Micros
    amount_display: Display
    description: str
    reference: str
    created_at: Timestamp


class CreditLot(Out):
    object: Literal["credit_lot"]
    kind: str = Field(description='"promotional" (may expire) or "paid" (never expires).')
    reference: str | None = Field(description="The ledger entry that granted it.")
    description: str
    original_micros: Micros
    original_display: Display
    remaining_micros: Micros
    remaining_display: Display
    expires_at: Timestamp | None
    expired_at: Timestamp | None
    expired_micros: Micros = Field(description="What left the balance when it expired.")
    created_at: Timestamp


class CreditLots(Out):
    object: Literal["credit_lots"]
    promotional_remaining_micros: Micros
    promotional_remaining_display: Display
    paid_remaining_micros: Micros
    paid_remaining_display: Display
    grants: list[CreditLot] = Field(
        description="Promotional grants: open ones, and those ended in the last 90 days."
    )


class Totals(Out):
    requests: int
    prompt_tokens: int
    completion_tokens: int
    citation_tokens: int
    reasoning_tokens: int
    search_queries: int
    cache_read_tokens: int
    cache_write_tokens: int
    tokens: int
    cost_micros: Micros
    cost_display: Display


class UsagePeriod(Out):
    start: Timestamp
    end: Timestamp
    tz: str
    range: str
    granularity: Literal["hour", "day"]
    key: str | None
    model: str | None
    api: Literal["chat", "agent", "search", "embeddings", "async"] | None  # usage.metrics.APIS
    tool: str | None
    end_user: str | None = None
    tag: str | None = None


class UsageBucket(Out):
    start: Timestamp
    end: Timestamp
    label: str
    requests: int
    tokens: int
    cost_micros: Micros
    cost_display: Display


class Usage(Out):
    object: Literal["usage"]
    period: UsagePeriod
    totals: Totals
    series: list[UsageBucket]


class KeyRef(Out):
    id: str
    name: str
    masked: str
    status: str


class ToolUse(Out):
    name: str
    invocations: int
    cost_micros: Micros
    cost_display: Display


class UsageGroup(Out):
    model: str | None = None
    key: KeyRef | None = None
    api: Literal["chat", "agent", "search", "embeddings", "async"] | None = (
        None  # usage.metrics.APIS
    )
    tool: ToolUse | None = Field(
        None, description="By tool: the tool's invocations and fees (a part of the requests' cost)."
    )
    bucket: str | None = Field(
        None,
        description="A date (by day) or the start of an hour (by hour), in the requested time zone.",
    )
    end_user: str | None = Field(
        None,
        description="By end user: its `user`; “(other)” beyond the daily cap, “(none)” for the "
        "requests without one.",
    )
    tag: str | None = Field(
        None,
        description="By tag: key=value; “key=(other)” or “(other)” beyond the daily caps, "
        "“(none)” (with tag_key) for the requests without that key.",
    )
    totals: Totals | None = Field(
        description="The requests' totals; null by tool (its fees are in `tool`)."
    )


class UsageGrouped(Out):
    object: Literal["list"]
    by: GroupBy
    period: UsagePeriod
    data: list[UsageGroup]
    has_more: bool


class KeyRestrictions(Out):
    models: list[str]
    apis: list[str]
    tools: list[str]
    ip_ranges: list[str]


class PreviousSecret(Out):
    masked: str
    last_four: str
    expires_at: Timestamp


class ApiKey(Out):
    object: Literal["api_key"]
    id: str
    name: str
    masked: str
    last_four: str
    status: Literal["active", "expired", "revoked"]
    expires_at: Timestamp | None
    monthly_limit_micros: Micros | None
    monthly_limit_display: Display | None
    created_at: Timestamp
    last_used_at: Timestamp | None
    regenerated_at: Timestamp | None
    revoked_at: Timestamp | None
    restrictions: KeyRestrictions
    previous_secret: PreviousSecret | None = Field(
        description="The secret before the last regeneration, while its grace period runs."
    )


class Budget(Out):
    object: Literal["budget"]
    id: str
    scope: Literal["group", "key"]
    key_id: str | None
    key_name: str | None
    amount_micros: Micros
    amount_display: Display
    window: WindowName
    enforcement: EnforcementName
    spent_micros: Micros = Field(description="Spent in the current window (committed usage).")
    spent_display: Display
    remaining_micros: Micros
    remaining_display: Display
    window_start: Timestamp
    window_end: Timestamp | None = Field(description="When it resets; null for lifetime.")
    time_zone: str
    created_at: Timestamp
    updated_at: Timestamp


class BudgetList(Out):
    object: Literal["list"]
    data: list[Budget]
    has_more: bool


class Alert(Out):
    object: Literal["alert"]
    id: str
    name: str
    kind: AlertKindName
    budget_id: str | None
    percent: int | None
    balance_threshold_micros: Micros | None
    balance_threshold_display: Display | None
    member_ids: list[str]
    extra_emails: list[str]
    send_email: bool
    webhook_endpoint_ids: list[str]
    enabled: bool
    created_at: Timestamp
    updated_at: Timestamp


class WebhookEndpoint(Out):
    object: Literal["webhook_endpoint"]
    id: str
    name: str
    url: str
    payload_format: PayloadFormatName
    enabled: bool
    secret_masked: str = Field(description="The signing secret's last four characters.")
    created_at: Timestamp
    updated_at: Timestamp


class WebhookEndpointWithSecret(WebhookEndpoint):
    secret: str = Field(description="The signing secret (whsec_…). Shown only in this response.")


class WebhookAttempt(Out):
    number: int
    started_at: Timestamp
    status_code: int | None = Field(description="The endpoint's answer; null: no answer.")
    duration_ms: int
    error: str = Field(description="The network error, if there was no answer.")
    response_snippet: str = Field(description="The first 500 characters of the answer.")


class WebhookDelivery(Out):
    object: Literal["webhook_delivery"]
    id: str
    endpoint_id: str
    event_id: str = Field(description="The same on every try (Portal-Event-Id).")
    event_type: str
    alert_id: str | None = Field(description="The alert that fired; null for a test event.")
    status: DeliveryStatusName = Field(
        description="pending: tried again on the back-off schedule; succeeded: a 2xx answer; "
        "failed: gave up after seven tries."
    )
    attempts: int
    last_status_code: int | None
    next_attempt_at: Timestamp | None
    created_at: Timestamp
    updated_at: Timestamp
    attempt_log: list[WebhookAttempt]


class ApiKeyWithSecret(ApiKey):
    secret: str = Field(description="The key itself. Shown only in this response.")


class Member(Out):
    object: Literal["member"]
    id: str
    email: str
    name: str
    role: RoleName
    joined_at: Timestamp


class Deleted(Out):
    object: Literal["member"]
    id: str
    deleted: bool


class Invitation(Out):
    object: Literal["invitation"]
    id: str
    email: str
    role: RoleName
    status: str
    created_at: Timestamp
    expires_at: Timestamp


class Invoice(Out):
    object: Literal["invoice"]
    id: str
    number: str
    kind: str
    status: str
    period_key: str
    period_start: Timestamp
    period_end: Timestamp
    issued_at: Timestamp
    currency: str
    total_cents: int
    total_display: Display
    usage_micros: Micros
    usage_display: Display
    opening_balance_micros: Micros
    opening_balance_display: Display
    purchases_micros: Micros
    purchases_display: Display
    refunds_micros: Micros
    refunds_display: Display
    other_credits_micros: Micros
    other_credits_display: Display
    closing_balance_micros: Micros
    closing_balance_display: Display
    corrects: str | None
    pdf_url: str


class InvoiceLine(Out):
    position: int
    section: str
    billed: bool
    label: str
    model: str
    key_name: str
    key_last_four: str
    service_period_key: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    citation_tokens: int
    reasoning_tokens: int
    search_queries: int
    cache_read_tokens: int
    cache_write_tokens: int
    tool: str = Field(description="A tool-fee line of the Agent API: the tool; else empty.")
    invocations: int = Field(description="A tool-fee line: the tool's invocations; else 0.")
    amount_micros: Micros
    amount_cents: int
    amount_display: Display


class Party(Out):
    name: str
    address: str
    tax_id: str


class InvoiceDetail(Invoice):
    bill_to: Party
    issuer: Party
    reason: str
    lines: list[InvoiceLine]


def list_of(item: type[Out]) -> type[Out]:
    """A page of a cursor-paginated list: newest first; pass `next_cursor` back as `cursor`."""
    return create_model(  # type: ignore[call-overload, no-any-return, unused-ignore]
        f"{item.__name__}List",
        __base__=Out,
        object=(Literal["list"], ...),  # type: ignore[arg-type, maybe-unrecognized-str-typeform, unused-ignore]
        data=(list[item], ...),  # type: ignore[valid-type]
        has_more=(bool, ...),
        next_cursor=(
            str | None,
            Field(description="Pass as `cursor` to get the next page; null on the last."),
        ),
    )


LedgerEntryList = list_of(LedgerEntry)
ApiKeyList = list_of(ApiKey)
MemberList = list_of(Member)
InvitationList = list_of(Invitation)
InvoiceList = list_of(Invoice)
AlertList = list_of(Alert)
WebhookEndpointList = list_of(WebhookEndpoint)
WebhookDeliveryList = list_of(WebhookDelivery)

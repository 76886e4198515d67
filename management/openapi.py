"""The OpenAPI 3 description of the Management API, served at /v1/management/openapi.json.

`ENDPOINTS` is the one list of operations: the OpenAPI document and the HTML reference page are
both built from it, and tests/management/test_openapi.py checks every operation against the URL
configuration and runs schemathesis against the document.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from billing.models import EntryKind, InvoiceKind, InvoiceStatus, LineSection
from keys.services import MAX_MONTHLY_LIMIT_MICROS
from members.models import InvitationStatus, Role
from usage.periods import PRESETS

Schema = dict[str, Any]


# --- schema helpers --------------------------------------------------------------------------


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def string(**extra: Any) -> Schema:
    return {"type": "string", **extra}


def integer(**extra: Any) -> Schema:
    return {"type": "integer", **extra}


def nullable(schema: Schema) -> Schema:
    return {**schema, "nullable": True}


def obj(properties: dict[str, Schema], required: list[str] | None = None) -> Schema:
    """A closed object; every property is required unless `required` says otherwise."""
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
        "additionalProperties": False,
    }


def money(name: str, *, null: bool = False) -> dict[str, Schema]:
    micros = integer(description="Amount in micro-dollars (1 USD = 1,000,000).")
    display = string(description="The amount for people, in dollars and cents, e.g. $1.24.")
    if null:
        micros, display = nullable(micros), nullable(display)
    return {f"{name}_micros": micros, f"{name}_display": display}


def cents(name: str) -> dict[str, Schema]:
    return {f"{name}_cents": integer(), f"{name}_display": string()}


DATE_TIME = string(format="date-time")
NULL_DATE_TIME = nullable(DATE_TIME)

SCHEMAS: dict[str, Schema] = {
    "Error": obj(
        {
            "error": obj(
                {
                    "message": string(),
                    "type": string(),
                    "code": string(),
                    "param": nullable(string()),
                }
            )
        }
    ),
    "Group": obj(
        {
            "object": string(enum=["group"]),
            "id": string(),
            "name": string(),
            "description": string(),
            "address_line1": string(),
            "address_line2": string(),
            "city": string(),
            "state": string(),
            "postal_code": string(),
            "country": string(description="ISO 3166-1 alpha-2 code, or empty."),
            "tax_id": string(),
            "created_at": DATE_TIME,
            "updated_at": DATE_TIME,
        }
    ),
    "GroupUpdate": obj(
        {
            "name": string(maxLength=100),
            "description": string(maxLength=500),
            "address_line1": string(maxLength=200),
            "address_line2": string(maxLength=200),
            "city": string(maxLength=100),
            "state": string(maxLength=100),
            "postal_code": string(maxLength=20),
            "country": string(maxLength=2, description="ISO 3166-1 alpha-2 code, or empty."),
            "tax_id": string(maxLength=32),
        },
        required=[],
    ),
    "Tier": obj(
        {
            "number": integer(),
            "rate_limit_multiplier": integer(),
            **money("min_purchased"),
        }
    ),
    "Billing": obj(
        {
            "object": string(enum=["billing"]),
            **money("balance"),
            **money("purchased"),
            "blocked": {"type": "boolean"},
            "tier": ref("Tier"),
            "next_tier": nullable(ref("Tier")),
            "limits": {
                "type": "array",
                "items": obj({"model": string(), "requests_per_minute": integer()}),
            },
            "auto_top_up": obj(
                {"enabled": {"type": "boolean"}, **money("threshold"), **money("amount")}
            ),
        }
    ),
    "LedgerEntry": obj(
        {
            "object": string(enum=["ledger_entry"]),
            "kind": string(enum=list(EntryKind.values)),
            "kind_display": string(),
            **money("amount"),
            "description": string(),
            "reference": string(),
            "created_at": DATE_TIME,
        }
    ),
    "Totals": obj(
        {
            "requests": integer(),
            "prompt_tokens": integer(),
            "completion_tokens": integer(),
            "citation_tokens": integer(),
            "reasoning_tokens": integer(),
            "search_queries": integer(),
            "tokens": integer(),
            **money("cost"),
        }
    ),
    "UsagePeriod": obj(
        {
            "start": DATE_TIME,
            "end": DATE_TIME,
            "tz": string(),
            "range": string(),
            "granularity": string(enum=["hour", "day"]),
            "key": nullable(string()),
            "model": nullable(string()),
        }
    ),
    "Usage": obj(
        {
            "object": string(enum=["usage"]),
            "period": ref("UsagePeriod"),
            "totals": ref("Totals"),
            "series": {
                "type": "array",
                "items": obj(
                    {
                        "start": DATE_TIME,
                        "end": DATE_TIME,
                        "label": string(),
                        "requests": integer(),
                        "tokens": integer(),
                        **money("cost"),
                    }
                ),
            },
        }
    ),
    "UsageGrouped": obj(
        {
            "object": string(enum=["list"]),
            "by": string(enum=["model", "key", "day", "hour"]),
            "period": ref("UsagePeriod"),
            "has_more": {"type": "boolean"},
            "data": {
                "type": "array",
                "items": obj(
                    {
                        "model": string(),
                        "key": obj(
                            {
                                "id": string(),
                                "name": string(),
                                "masked": string(),
                                "status": string(),
                            }
                        ),
                        "bucket": string(
                            description="A date (by day) or the start of an hour (by hour), "
                            "in the requested time zone."
                        ),
                        "totals": ref("Totals"),
                    },
                    required=["totals"],
                ),
            },
        }
    ),
    "ApiKey": obj(
        {
            "object": string(enum=["api_key"]),
            "id": string(),
            "name": string(),
            "masked": string(),
            "last_four": string(),
            "status": string(enum=["active", "expired", "revoked"]),
            "expires_at": NULL_DATE_TIME,
            **money("monthly_limit", null=True),
            "created_at": DATE_TIME,
            "last_used_at": NULL_DATE_TIME,
            "regenerated_at": NULL_DATE_TIME,
            "revoked_at": NULL_DATE_TIME,
        }
    ),
    "ApiKeyCreate": obj(
        {
            "name": string(minLength=1, maxLength=100),
            "expires_at": nullable(string(format="date-time")),
            "monthly_limit_micros": nullable(integer(minimum=1, maximum=MAX_MONTHLY_LIMIT_MICROS)),
        },
        required=["name"],
    ),
    "ApiKeyUpdate": obj(
        {
            "name": string(minLength=1, maxLength=100),
            "expires_at": nullable(string(format="date-time")),
            "monthly_limit_micros": nullable(integer(minimum=1, maximum=MAX_MONTHLY_LIMIT_MICROS)),
        },
        required=[],
    ),
    "Member": obj(
        {
            "object": string(enum=["member"]),
            "id": string(),
            "email": string(),
            "name": string(),
            "role": string(enum=list(Role.values)),
            "joined_at": DATE_TIME,
        }
    ),
    "MemberUpdate": obj({"role": string(enum=list(Role.values))}),
    "Deleted": obj(
        {"object": string(enum=["member"]), "id": string(), "deleted": {"type": "boolean"}}
    ),
    "Invitation": obj(
        {
            "object": string(enum=["invitation"]),
            "id": string(),
            "email": string(),
            "role": string(enum=list(Role.values)),
            "status": string(enum=list(InvitationStatus.values)),
            "created_at": DATE_TIME,
            "expires_at": DATE_TIME,
        }
    ),
    "InvitationCreate": obj(
        {
            "email": string(format="email", maxLength=254),
            "role": string(enum=list(Role.values)),
        },
        required=["email"],
    ),
    "Invoice": obj(
        {
            "object": string(enum=["invoice"]),
            "id": string(),
            "number": string(),
            "kind": string(enum=list(InvoiceKind.values)),
            "status": string(enum=list(InvoiceStatus.values)),
            "period_key": string(),
            "period_start": DATE_TIME,
            "period_end": DATE_TIME,
            "issued_at": DATE_TIME,
            "currency": string(),
            **cents("total"),
            **money("usage"),
            **money("opening_balance"),
            **money("purchases"),
            **money("refunds"),
            **money("other_credits"),
            **money("closing_balance"),
            "corrects": nullable(string()),
            "pdf_url": string(),
        }
    ),
    "InvoiceLine": obj(
        {
            "position": integer(),
            "section": string(enum=list(LineSection.values)),
            "billed": {"type": "boolean"},
            "label": string(),
            "model": string(),
            "key_name": string(),
            "key_last_four": string(),
            "service_period_key": string(),
            "requests": integer(),
            "prompt_tokens": integer(),
            "completion_tokens": integer(),
            "citation_tokens": integer(),
            "reasoning_tokens": integer(),
            "search_queries": integer(),
            "amount_micros": integer(),
            **cents("amount"),
        }
    ),
}
_party = obj({"name": string(), "address": string(), "tax_id": string()})
SCHEMAS["InvoiceDetail"] = {
    **SCHEMAS["Invoice"],
    "properties": {
        **SCHEMAS["Invoice"]["properties"],
        "bill_to": _party,
        "issuer": _party,
        "reason": string(),
        "lines": {"type": "array", "items": ref("InvoiceLine")},
    },
}
SCHEMAS["InvoiceDetail"]["required"] = list(SCHEMAS["InvoiceDetail"]["properties"])
SCHEMAS["ApiKeyWithSecret"] = {
    **SCHEMAS["ApiKey"],
    "properties": {
        **SCHEMAS["ApiKey"]["properties"],
        "secret": string(description="The key itself. Shown only in this response."),
    },
    "required": [*SCHEMAS["ApiKey"]["required"], "secret"],
}


def list_of(item: str) -> Schema:
    return obj(
        {
            "object": string(enum=["list"]),
            "data": {"type": "array", "items": ref(item)},
            "has_more": {"type": "boolean"},
            "next_cursor": nullable(
                string(description="Pass as `cursor` to get the next page; null on the last.")
            ),
        }
    )


# --- parameters ------------------------------------------------------------------------------


def query(name: str, schema: Schema, description: str, required: bool = False) -> Schema:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "schema": schema,
        "description": description,
    }


def path_id(name: str, what: str) -> Schema:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": string(),
        "description": f"The {what}'s id.",
    }


PAGINATION = [
    query("limit", integer(minimum=1, maximum=100, default=20), "Items per page (1–100)."),
    query("cursor", string(), "The `next_cursor` of the previous page."),
]
USAGE_FILTERS = [
    query("range", string(enum=list(PRESETS)), "A preset range; default 30d."),
    query("start", string(format="date"), "First day of a custom range (inclusive)."),
    query("end", string(format="date"), "Last day of a custom range (inclusive)."),
    query("tz", string(), "IANA time zone for days and buckets; default UTC."),
    query("granularity", string(enum=["hour", "day"]), "Bucket size; default by span."),
    query("key", string(), "Only this API key (its id)."),
    query("model", string(), "Only this model (its name)."),
]


# --- operations ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # OpenAPI path, e.g. /v1/management/keys/{key_id}
    url_name: str  # in the management_api namespace
    operation_id: str
    summary: str
    response: str | None  # schema name; None for a PDF
    status: int = 200
    tag: str = ""
    description: str = ""
    parameters: list[Schema] = field(default_factory=list)
    body: str | None = None
    body_required: bool = False

    @property
    def writes(self) -> bool:
        return self.method != "get"


BASE = "/v1/management"
E = Endpoint
ENDPOINTS: list[Endpoint] = [
    E("get", f"{BASE}/group", "group", "getGroup", "Get the API group's details", "Group",
      tag="Group"),
    E("patch", f"{BASE}/group", "group", "updateGroup", "Update the API group's details", "Group",
      tag="Group", body="GroupUpdate",
      description="Only the fields sent change; validated like the API Group page."),
    E("get", f"{BASE}/billing", "billing", "getBilling", "Balance, usage tier and rate limits",
      "Billing", tag="Billing"),
    E("get", f"{BASE}/billing/transactions", "transactions", "listTransactions",
      "List ledger transactions", "LedgerEntryList", tag="Billing", parameters=PAGINATION,
      description="Credit purchases, top-ups, refunds and adjustments (usage is in /usage)."),
    E("get", f"{BASE}/usage", "usage", "getUsage", "Usage totals and time series", "Usage",
      tag="Usage", parameters=USAGE_FILTERS,
      description="The numbers of the Usage Metrics page, to the micro-dollar."),
    E("get", f"{BASE}/usage/grouped", "usage_grouped", "getUsageGrouped",
      "Usage totals grouped by model, key, day or hour", "UsageGrouped", tag="Usage",
      parameters=[query("by", string(enum=["model", "key", "day", "hour"]), "How to group.",
                        required=True), *USAGE_FILTERS]),
    E("get", f"{BASE}/keys", "keys", "listKeys", "List API keys", "ApiKeyList", tag="API keys",
      parameters=PAGINATION),
    E("post", f"{BASE}/keys", "keys", "createKey", "Create an API key", "ApiKeyWithSecret",
      status=201, tag="API keys", body="ApiKeyCreate", body_required=True,
      description="The response holds the secret; it is shown only this once."),
    E("get", f"{BASE}/keys/{{key_id}}", "key", "getKey", "Get an API key", "ApiKey",
      tag="API keys", parameters=[path_id("key_id", "API key")]),
    E("patch", f"{BASE}/keys/{{key_id}}", "key", "updateKey",
      "Rename an API key or set its expiry and monthly limit", "ApiKey", tag="API keys",
      parameters=[path_id("key_id", "API key")], body="ApiKeyUpdate",
      description="null removes the expiry or the limit."),
    E("post", f"{BASE}/keys/{{key_id}}/revoke", "key_revoke", "revokeKey", "Revoke an API key",
      "ApiKey", tag="API keys", parameters=[path_id("key_id", "API key")]),
    E("post", f"{BASE}/keys/{{key_id}}/regenerate", "key_regenerate", "regenerateKey",
      "Give an API key a new secret", "ApiKeyWithSecret", tag="API keys",
      parameters=[path_id("key_id", "API key")],
      description="The old secret stops working at once; the new one is shown only this once."),
    E("get", f"{BASE}/members", "members", "listMembers", "List members", "MemberList",
      tag="Members", parameters=[query("role", string(enum=list(Role.values)), "Only this role."),
                                 *PAGINATION]),
    E("get", f"{BASE}/members/{{member_id}}", "member", "getMember", "Get a member", "Member",
      tag="Members", parameters=[path_id("member_id", "member")]),
    E("patch", f"{BASE}/members/{{member_id}}", "member", "updateMember",
      "Change a member's role", "Member", tag="Members",
      parameters=[path_id("member_id", "member")], body="MemberUpdate", body_required=True,
      description="The last Admin cannot be demoted."),
    E("delete", f"{BASE}/members/{{member_id}}", "member", "removeMember",
      "Remove a member", "Deleted", tag="Members", parameters=[path_id("member_id", "member")],
      description="The last Admin cannot be removed."),
    E("get", f"{BASE}/invitations", "invitations", "listInvitations",
      "List pending invitations", "InvitationList", tag="Members", parameters=PAGINATION),
    E("post", f"{BASE}/invitations", "invitations", "createInvitation",
      "Invite someone by e-mail", "Invitation", status=201, tag="Members",
      body="InvitationCreate", body_required=True),
    E("get", f"{BASE}/invitations/{{invitation_id}}", "invitation", "getInvitation",
      "Get an invitation", "Invitation", tag="Members",
      parameters=[path_id("invitation_id", "invitation")]),
    E("post", f"{BASE}/invitations/{{invitation_id}}/revoke", "invitation_revoke",
      "revokeInvitation", "Revoke a pending invitation", "Invitation", tag="Members",
      parameters=[path_id("invitation_id", "invitation")]),
    E("get", f"{BASE}/invoices", "invoices", "listInvoices", "List invoices and credit notes",
      "InvoiceList", tag="Invoices", parameters=PAGINATION),
    E("get", f"{BASE}/invoices/{{invoice_id}}", "invoice", "getInvoice",
      "Get an invoice with its lines", "InvoiceDetail", tag="Invoices",
      parameters=[path_id("invoice_id", "invoice")]),
    E("get", f"{BASE}/invoices/{{invoice_id}}/pdf", "invoice_pdf", "getInvoicePdf",
      "Download an invoice as PDF", None, tag="Invoices",
      parameters=[path_id("invoice_id", "invoice")]),
]  # fmt: skip

for _item in ("LedgerEntry", "ApiKey", "Member", "Invitation", "Invoice"):
    SCHEMAS[f"{_item}List"] = list_of(_item)


def _error(description: str, headers: dict[str, Any] | None = None) -> Schema:
    response: Schema = {
        "description": description,
        "content": {"application/json": {"schema": ref("Error")}},
    }
    if headers:
        response["headers"] = headers
    return response


def _operation(e: Endpoint) -> Schema:
    if e.response is None:
        ok: Schema = {
            "description": "The PDF.",
            "content": {"application/pdf": {"schema": string(format="binary")}},
        }
    else:
        ok = {"description": "OK", "content": {"application/json": {"schema": ref(e.response)}}}
    responses: Schema = {
        str(e.status): ok,
        "401": _error(
            "Missing, malformed, unknown or revoked management key (code invalid_api_key)."
        ),
        "404": _error("No such object in this API group (code not_found)."),
        "422": _error("A value cannot be accepted; `param` names it."),
        "429": _error(
            "Rate limit of the management key reached (code rate_limit_exceeded).",
            headers={"Retry-After": {"schema": integer(), "description": "Seconds to wait."}},
        ),
    }
    if e.writes:
        responses["400"] = _error("The body is not a JSON object.")
        responses["403"] = _error("The key is read-only (code permission_denied).")
    operation: Schema = {
        "operationId": e.operation_id,
        "summary": e.summary,
        "tags": [e.tag],
        "parameters": e.parameters,
        "responses": dict(sorted(responses.items())),
    }
    if e.description:
        operation["description"] = e.description
    if e.body:
        operation["requestBody"] = {
            "required": e.body_required,
            "content": {"application/json": {"schema": ref(e.body)}},
        }
    if e.writes:
        operation["x-requires-role"] = "admin"
    return operation


def openapi_document(server_url: str = "/") -> dict[str, Any]:
    """Return the OpenAPI 3.0 document of the Management API."""
    paths: dict[str, dict[str, Any]] = {}
    for e in ENDPOINTS:
        paths.setdefault(e.path, {})[e.method] = _operation(e)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Management API",
            "version": "1.0.0",
            "description": (
                "Manage one API group with a management key (`pplx-admin-…`) created by an "
                "Admin on the API Keys page. Keys with the `read_only` role may only call GET "
                "endpoints. Errors use the OpenAI shape. Lists are cursor-paginated, newest "
                "first. Money is integer micro-dollars (`*_micros`) plus a display string."
            ),
        },
        "servers": [{"url": server_url}],
        "security": [{"managementKey": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "managementKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A management key: Authorization: Bearer pplx-admin-…",
                }
            },
            "schemas": SCHEMAS,
        },
    }

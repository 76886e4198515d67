"""JSON shapes of the Management API. Money: integer `*_micros` plus a `*_display` string."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.urls import reverse

from alerts.models import Alert, WebhookDelivery, WebhookEndpoint
from billing.models import CreditLot, Invoice, InvoiceLine, LedgerEntry
from billing.selectors import BudgetStatus
from core.money import format_cents, format_usd
from groups.models import APIGroup
from keys.models import APIKey
from members.models import Invitation, Membership
from usage.metrics import counts_of
from usage.selectors import Totals
from usage.tiers import Tier


def iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def money(name: str, micros: int | None) -> dict[str, Any]:
    """`{name}_micros` and `{name}_display` (cents, rounded as everywhere: core/money.py)."""
    return {
        f"{name}_micros": micros,
        f"{name}_display": format_usd(micros) if micros is not None else None,
    }


def group_json(group: APIGroup) -> dict[str, Any]:
    return {
        "object": "group",
        "id": group.public_id,
        "name": group.name,
        "description": group.description,
        "address_line1": group.address_line1,
        "address_line2": group.address_line2,
        "city": group.city,
        "state": group.state,
        "postal_code": group.postal_code,
        "country": str(group.country or ""),
        "tax_id": group.tax_id,
        "time_zone": group.time_zone,
        "created_at": iso(group.created_at),
        "updated_at": iso(group.updated_at),
    }


def tier_json(tier: Tier | None) -> dict[str, Any] | None:
    if tier is None:
        return None
    return {
        "number": tier.number,
        "rate_limit_multiplier": tier.multiplier,
        **money("min_purchased", tier.min_purchased_micros),
    }


def ledger_entry_json(entry: LedgerEntry) -> dict[str, Any]:
    return {
        "object": "ledger_entry",
        "kind": entry.kind,
        "kind_display": entry.get_kind_display(),
        **money("amount", entry.amount_micros),
        "description": entry.description,
        "reference": entry.reference,
        "created_at": iso(entry.created_at),
    }


def api_key_json(key: APIKey) -> dict[str, Any]:
    return {
        "object": "api_key",
        "id": key.public_id,
        "name": key.name,
        "masked": key.masked,
        "last_four": key.last_four,
        "status": key.display_status,
        "expires_at": iso(key.expires_at),
        **money("monthly_limit", key.monthly_limit_micros),
        "created_at": iso(key.created_at),
        "last_used_at": iso(key.last_used_at),
        "regenerated_at": iso(key.regenerated_at),
        "revoked_at": iso(key.revoked_at),
        "restrictions": {
            "models": list(key.allowed_models or ()),
            "apis": list(key.allowed_apis or ()),
            "tools": list(key.allowed_tools or ()),
            "ip_ranges": list(key.allowed_ips or ()),
        },
        "previous_secret": {
            "masked": key.previous_masked,
            "last_four": key.previous_last_four,
            "expires_at": iso(key.previous_expires_at),
        }
        if key.previous_secret_active
        else None,
    }


def member_json(membership: Membership) -> dict[str, Any]:
    return {
        "object": "member",
        "id": membership.public_id,
        "email": membership.user.email,
        "name": membership.user.name,
        "role": membership.role,
        "joined_at": iso(membership.created_at),
    }


def invitation_json(invitation: Invitation) -> dict[str, Any]:
    return {
        "object": "invitation",
        "id": invitation.public_id,
        "email": invitation.email,
        "role": invitation.role,
        "status": invitation.status,
        "created_at": iso(invitation.created_at),
        "expires_at": iso(invitation.expires_at),
    }


def totals_json(totals: Totals) -> dict[str, Any]:
    return {
        "requests": totals.requests,
        **counts_of(totals),
        "tokens": totals.tokens,
        **money("cost", totals.cost_micros),
    }


def _cents(name: str, cents: int) -> dict[str, Any]:
    """Invoice amounts are stored in whole cents (already rounded when the invoice was issued)."""
    return {f"{name}_cents": cents, f"{name}_display": format_cents(cents)}


def invoice_json(invoice: Invoice) -> dict[str, Any]:
    return {
        "object": "invoice",
        "id": invoice.public_id,
        "number": invoice.number,
        "kind": invoice.kind,
        "status": invoice.status,
        "period_key": invoice.period_key,
        "period_start": iso(invoice.period_start),
        "period_end": iso(invoice.period_end),
        "issued_at": iso(invoice.issued_at),
        "currency": invoice.currency,
        **_cents("total", invoice.total_cents),
        **money("usage", invoice.usage_micros),
        **money("opening_balance", invoice.opening_balance_micros),
        **money("purchases", invoice.purchases_micros),
        **money("refunds", invoice.refunds_micros),
        **money("other_credits", invoice.other_credits_micros),
        **money("closing_balance", invoice.closing_balance_micros),
        "corrects": invoice.corrects.public_id if invoice.corrects else None,
        "pdf_url": reverse("management_api:invoice_pdf", kwargs={"invoice_id": invoice.public_id}),
    }


def invoice_line_json(line: InvoiceLine) -> dict[str, Any]:
    return {
        "position": line.position,
        "section": line.section,
        "billed": line.billed,
        "label": line.label,
        "model": line.model_name,
        "key_name": line.key_name,
        "key_last_four": line.key_last_four,
        "service_period_key": line.service_period_key,
        "requests": line.requests,
        **counts_of(line),
        "tool": line.tool,
        "invocations": line.invocations,
        "amount_micros": line.amount_micros,
        **_cents("amount", line.amount_cents),
    }


def invoice_detail_json(invoice: Invoice) -> dict[str, Any]:
    return {
        **invoice_json(invoice),
        "bill_to": {
            "name": invoice.bill_to_name,
            "address": invoice.bill_to_address,
            "tax_id": invoice.bill_to_tax_id,
        },
        "issuer": {
            "name": invoice.issuer_name,
            "address": invoice.issuer_address,
            "tax_id": invoice.issuer_tax_id,
        },
        "reason": invoice.reason,
        "lines": [invoice_line_json(line) for line in invoice.lines.all()],
    }


def credit_lot_json(lot: CreditLot) -> dict[str, Any]:
    return {
        "object": "credit_lot",
        "kind": lot.kind,
        "reference": lot.entry.reference if lot.entry else None,
        "description": lot.entry.description if lot.entry else "",
        **money("original", lot.original_micros),
        **money("remaining", lot.remaining_micros),
        "expires_at": iso(lot.expires_at),
        "expired_at": iso(lot.expired_at),
        "expired_micros": lot.expired_micros,
        "created_at": iso(lot.created_at),
    }


def budget_json(status: BudgetStatus) -> dict[str, Any]:
    """A budget with its current window's spend (billing.selectors.BudgetStatus)."""
    budget = status.budget
    key = budget.api_key
    return {
        "object": "budget",
        "id": str(budget.pk),
        "scope": "key" if key is not None else "group",
        "key_id": key.public_id if key is not None else None,
        "key_name": key.name if key is not None else None,
        **money("amount", budget.amount_micros),
        "window": budget.window,
        "enforcement": budget.enforcement,
        **money("spent", status.spent_micros),
        **money("remaining", status.remaining_micros),
        "window_start": iso(status.window_start),
        "window_end": iso(status.window_end),
        "time_zone": budget.group.time_zone,
        "created_at": iso(budget.created_at),
        "updated_at": iso(budget.updated_at),
    }


def alert_json(alert: Alert) -> dict[str, Any]:
    return {
        "object": "alert",
        "id": alert.public_id,
        "name": alert.name,
        "kind": alert.kind,
        "budget_id": str(alert.budget_id) if alert.budget_id is not None else None,
        "percent": alert.percent,
        **money("balance_threshold", alert.balance_threshold_micros),
        "member_ids": sorted(m.public_id for m in alert.members.all()),
        "extra_emails": list(alert.extra_emails),
        "send_email": alert.send_email,
        "webhook_endpoint_ids": sorted(w.public_id for w in alert.webhooks.all()),
        "enabled": alert.enabled,
        "created_at": iso(alert.created_at),
        "updated_at": iso(alert.updated_at),
    }


def webhook_endpoint_json(endpoint: WebhookEndpoint) -> dict[str, Any]:
    return {
        "object": "webhook_endpoint",
        "id": endpoint.public_id,
        "name": endpoint.name,
        "url": endpoint.url,
        "payload_format": endpoint.payload_format,
        "enabled": endpoint.enabled,
        "secret_masked": endpoint.masked_secret,
        "created_at": iso(endpoint.created_at),
        "updated_at": iso(endpoint.updated_at),
    }


def webhook_delivery_json(delivery: WebhookDelivery) -> dict[str, Any]:
    """A delivery with its tries (alerts.selectors.deliveries_for_endpoint prefetches them)."""
    tries = list(delivery.attempt_log.all())
    return {
        "object": "webhook_delivery",
        "id": str(delivery.pk),
        "endpoint_id": delivery.endpoint.public_id,
        "event_id": delivery.event_id,
        "event_type": delivery.event_type,
        "alert_id": delivery.firing.alert.public_id if delivery.firing is not None else None,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "last_status_code": tries[-1].status_code if tries else None,
        "next_attempt_at": iso(delivery.next_attempt_at),
        "created_at": iso(delivery.created_at),
        "updated_at": iso(delivery.updated_at),
        "attempt_log": [
            {
                "number": t.number,
                "started_at": iso(t.started_at),
                "status_code": t.status_code,
                "duration_ms": t.duration_ms,
                "error": t.error,
                "response_snippet": t.response_snippet,
            }
            for t in tries
        ],
    }

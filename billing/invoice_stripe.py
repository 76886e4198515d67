"""Mirror an issued invoice to Stripe, so the customer also has Stripe's hosted copy.

Steps, each idempotent (Stripe idempotency keys derived from our invoice number, and the Stripe
invoice id saved as soon as it exists so a retried task resumes instead of starting over):
create a draft invoice for the group's Stripe customer that takes no pending items → attach one
invoice item per billed line (its displayed cents, labelled `MODEL (LAST4)`) → finalize → mark it
paid out of band (usage is paid from prepaid credits). Stripe's total equals our total because
the items are our displayed lines.

Switched by INVOICE_STRIPE_MIRROR (off with localstripe, which has no invoices).
"""

from __future__ import annotations

import logging

from billing import stripe_api
from billing.models import BILLED_SECTIONS, BillingProfile, Invoice

log = logging.getLogger(__name__)


def invoice_mirror(invoice: Invoice) -> str:
    """Mirror the invoice; return Stripe's invoice id ("" when the group has no customer).

    A Stripe failure is recorded on the invoice (`stripe_error`, shown to staff) and re-raised so
    the task retries; the next run resumes from the saved Stripe invoice id.
    """
    try:
        return _mirror(invoice)
    except stripe_api.StripeFailure as exc:
        Invoice.objects.filter(pk=invoice.pk).update(stripe_error=f"Stripe: {exc}"[:255])
        raise


def _mirror(invoice: Invoice) -> str:
    profile = BillingProfile.objects.filter(group_id=invoice.group_id).first()
    customer_id = profile.stripe_customer_id if profile else ""
    if not customer_id:
        return ""
    key = f"portal-{invoice.number}"
    meta = {"portal_invoice": invoice.number, "portal_group": invoice.group.public_id}
    stripe_invoice = (
        stripe_api.invoice_retrieve(invoice.stripe_invoice_id)
        if invoice.stripe_invoice_id
        else None
    )
    if stripe_invoice is None:
        stripe_invoice = stripe_api.invoice_create(
            customer_id=customer_id,
            idempotency_key=f"{key}-create",
            metadata=meta,
            description=f"{invoice.number} · usage {invoice.period_key} (paid from credits)",
        )
        Invoice.objects.filter(pk=invoice.pk).update(stripe_invoice_id=stripe_invoice["id"])
    sid = stripe_invoice["id"]
    if stripe_invoice.get("status") == "draft":
        for line in invoice.lines.filter(section__in=BILLED_SECTIONS).order_by("position"):
            if line.amount_cents == 0:
                continue
            stripe_api.invoice_item_create(
                customer_id=customer_id,
                invoice_id=sid,
                amount_cents=line.amount_cents,
                description=f"{line.label} — {line.requests:,} requests",
                idempotency_key=f"{key}-line-{line.position}",
                metadata={**meta, "portal_line": str(line.position)},
            )
        stripe_invoice = stripe_api.invoice_finalize(sid, idempotency_key=f"{key}-finalize")
    if stripe_invoice.get("status") == "open":
        stripe_invoice = stripe_api.invoice_pay_out_of_band(sid, idempotency_key=f"{key}-pay")
    error = ""
    if stripe_invoice.get("total") != invoice.total_cents:
        error = (
            f"Stripe's total is {stripe_invoice.get('total')} cents, ours {invoice.total_cents}."
        )
        log.error("invoice %s mirrored with a different total: %s", invoice.number, error)
    Invoice.objects.filter(pk=invoice.pk).update(
        stripe_invoice_id=sid,
        stripe_hosted_url=stripe_invoice.get("hosted_invoice_url") or "",
        stripe_error=error,
    )
    return sid

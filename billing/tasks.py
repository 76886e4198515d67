"""Billing's Celery tasks: each fetches by id and calls a service.

Services queue these with `task.delay_on_commit(...)` and so import this module at the top; this
module therefore imports the services it calls inside each task (the only deferred imports
allowed, see CONVENTIONS.md), which breaks the service ↔ task import circle.
"""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings
from django.core.mail import send_mail
from django.db.models import F, Sum
from django.db.models.functions import Coalesce
from django.urls import reverse

from billing.invoicing.periods import period_from_key, period_just_closed
from billing.models import BillingProfile, CreditAccount, Invoice, Payment
from core.money import format_usd
from groups.models import APIGroup
from members.models import Role

log = logging.getLogger(__name__)


def _admin_emails(group: APIGroup) -> list[str]:
    return list(group.memberships.filter(role=Role.ADMIN).values_list("user__email", flat=True))


def _billing_url(group: APIGroup) -> str:
    return settings.SITE_URL.rstrip("/") + reverse(
        "billing:overview", kwargs={"group_id": group.public_id}
    )


@shared_task(acks_late=True, reject_on_worker_lost=True)
def auto_top_up(group_id: int) -> str | None:
    """Charge a group's automatic top-up if it is due; safe to run twice or concurrently."""
    from billing.payments import auto_top_up_run

    payment = auto_top_up_run(group_id=group_id)
    return payment.status if payment else None


@shared_task(acks_late=True, reject_on_worker_lost=True)
def charge_payment(payment_id: int) -> str:
    """Charge a credit purchase the billing page queued; safe to run twice or concurrently
    (`charge` locks the Payment and finds a PaymentIntent it made before by its metadata)."""
    from billing.payments import charge

    return charge(payment=Payment.objects.get(pk=payment_id)).status


@shared_task
def credit_watch() -> int:
    """Start due automatic top-ups and send low-balance alerts (runs every minute)."""
    from billing.payments import auto_top_up_due, low_balance_check

    started = 0
    for profile in BillingProfile.objects.select_related("group").filter(auto_top_up_enabled=True):
        if auto_top_up_due(group=profile.group):
            auto_top_up.delay(profile.group_id)
            started += 1
    for profile in BillingProfile.objects.select_related("group").filter(
        low_balance_alert_micros__isnull=False
    ):
        low_balance_check(group=profile.group)
    return started


@shared_task(autoretry_for=(OSError,), retry_backoff=True, max_retries=5)
def email_admins_about_payment(kind: str, payment_id: int) -> None:
    payment = Payment.objects.select_related("group").get(pk=payment_id)
    group = payment.group
    amount = format_usd(payment.amount_micros)
    url = _billing_url(group)
    if kind == "declined":
        subject = f"Auto top-up of {amount} for {group.name} was declined"
        body = (
            f"We tried to add {amount} of credits to the API group {group.name}, but the card was "
            f"declined: {payment.error_message}\n\nWe'll retry a few times a day. To avoid your API "
            f"keys being blocked when credits run out, update the card or add credits:\n{url}\n"
        )
    else:
        subject = f"Auto top-up of {amount} for {group.name} needs your confirmation"
        body = (
            f"Your bank asks you to confirm the automatic top-up of {amount} for {group.name}. "
            f"Open the Billing page and complete it:\n{url}?complete={payment.public_id}\n"
        )
    send_mail(subject, body, None, _admin_emails(group))


@shared_task(autoretry_for=(OSError,), retry_backoff=True, max_retries=5)
def email_admins_about_dispute(payment_id: int, dispute_id: str, amount: int, outcome: str) -> None:
    payment = Payment.objects.select_related("group").get(pk=payment_id)
    group = payment.group
    balance = CreditAccount.objects.get(group=group).balance_micros
    paid = f"the card payment of {format_usd(payment.amount_micros)} ({payment.public_id})"
    subject, text = {
        "opened": (
            f"{group.name}: a card payment was disputed",
            f"The card holder disputed {paid} with their bank. We have taken the disputed "
            f"{format_usd(amount)} of credits back until the bank decides.",
        ),
        "won": (
            f"{group.name}: the dispute was decided in your favour",
            f"The bank decided the dispute of {paid} in your favour: the {format_usd(amount)} "
            "of credits are yours again.",
        ),
        "lost": (
            f"{group.name}: the dispute was decided for the card holder",
            f"The bank decided the dispute of {paid} for the card holder: the "
            f"{format_usd(amount)} of credits taken back stay removed.",
        ),
    }[outcome]
    blocked = " Your API keys are blocked until you add credits." if balance <= 0 else ""
    send_mail(
        subject,
        f"{text}\n\nThe credit balance is now {format_usd(balance)}.{blocked}\n\n"
        f"Dispute {dispute_id}. Billing:\n{_billing_url(group)}\n",
        None,
        _admin_emails(group),
    )


@shared_task(autoretry_for=(OSError,), retry_backoff=True, max_retries=5)
def email_admins_top_up_capped(group_id: int, made: int) -> None:
    group = APIGroup.objects.get(pk=group_id)
    send_mail(
        f"Auto top-up for {group.name} paused: {made} top-ups in 24 hours",
        f"The API group {group.name} has been topped up automatically {made} times in the last "
        f"24 hours, the most we charge a card in a day ({settings.AUTO_TOPUP_DAILY_LIMIT}). "
        "Further automatic top-ups wait until the oldest of them is 24 hours old; until then, "
        f"when credits run out the API keys are blocked.\n\nCheck the auto top-up settings and "
        f"your usage, or add credits by hand:\n{_billing_url(group)}\n",
        None,
        _admin_emails(group),
    )


@shared_task(autoretry_for=(OSError,), retry_backoff=True, max_retries=5)
def email_low_balance(group_id: int, balance_micros: int) -> None:
    group = APIGroup.objects.get(pk=group_id)
    profile = BillingProfile.objects.get(group=group)
    send_mail(
        f"{group.name}: credit balance is low ({format_usd(balance_micros)})",
        f"The credit balance of {group.name} is {format_usd(balance_micros)}, under your alert "
        f"level of {format_usd(profile.low_balance_alert_micros or 0)}. When it reaches $0 the API "
        f"keys are blocked.\n\nAdd credits or turn on auto top-up:\n{_billing_url(group)}\n",
        None,
        _admin_emails(group),
    )


@shared_task(acks_late=True, autoretry_for=(Exception,), retry_backoff=True, max_retries=5)
def sync_customer(group_id: int) -> None:
    from billing.payments import customer_sync

    customer_sync(group=APIGroup.objects.get(pk=group_id))


@shared_task
def credit_lots_tick() -> dict[str, int]:
    """Close expired promotional credit lots and send expiry reminders (runs every minute)."""
    from billing.credits import credit_lot_reminders_due, credit_lots_expire_due

    return {"expired": credit_lots_expire_due(), "reminded": credit_lot_reminders_due()}


@shared_task(autoretry_for=(OSError,), retry_backoff=True, max_retries=5)
def email_credit_expiry_reminder(lot_id: int) -> None:
    from billing.models import CreditLot

    lot = CreditLot.objects.select_related("account__group", "entry").get(pk=lot_id)
    group = lot.account.group
    assert lot.expires_at is not None
    when = f"{lot.expires_at:%B %-d, %Y at %H:%M} UTC"
    left = format_usd(lot.remaining_micros)
    reason = f" ({lot.entry.description})" if lot.entry and lot.entry.description else ""
    send_mail(
        f"{group.name}: {left} of promotional credit expires on {lot.expires_at:%B %-d}",
        f"The promotional credit of {format_usd(lot.original_micros)} granted to {group.name}"
        f"{reason} expires on {when}. {left} of it is left; what is still unused then is "
        "removed from the balance.\n\nAPI usage spends promotional credit before paid credit, "
        f"the soonest-expiring first. Billing:\n{_billing_url(group)}\n",
        None,
        _admin_emails(group),
    )


@shared_task
def ledger_reconcile() -> list[int]:
    """Check balance = sum of entries for every account; log and return the ids that differ."""
    broken = list(
        CreditAccount.objects.annotate(total=Coalesce(Sum("entries__amount_micros"), 0))
        .exclude(balance_micros=F("total"))
        .values_list("id", flat=True)
    )
    if broken:
        log.error("ledger out of balance for accounts %s", broken)
    return broken


@shared_task
def generate_invoices_due(period_key: str | None = None) -> int:
    """Fan out one invoice task per group for the period that just closed (beat, 00:10 UTC)."""
    period = period_from_key(period_key) if period_key else period_just_closed()
    ids = list(APIGroup.objects.order_by("pk").values_list("pk", flat=True))
    for group_id in ids:
        generate_invoice.delay(group_id, period.key)
    return len(ids)


@shared_task(acks_late=True, reject_on_worker_lost=True)
def generate_invoice(group_id: int, period_key: str) -> str | None:
    """Issue one group's invoice for a period; a redelivered or repeated task changes nothing."""
    from billing.invoicing.generation import invoice_generate

    group = APIGroup.objects.get(pk=group_id)
    result = invoice_generate(group=group, period=period_from_key(period_key))
    return result.invoice.number if result.invoice else None


@shared_task(acks_late=True, autoretry_for=(Exception,), retry_backoff=True, max_retries=8)
def invoice_mirror_to_stripe(invoice_id: int) -> str:
    from billing.invoice_stripe import invoice_mirror

    return invoice_mirror(Invoice.objects.get(pk=invoice_id))


@shared_task
def usage_retention() -> dict[str, object]:
    """Drop the raw usage months past USAGE_RAW_RETENTION_MONTHS whose rollups and invoices are
    final (billing/usage_retention.py); nothing when the setting is unset."""
    from billing.usage_retention import apply_retention

    run = apply_retention()
    return {"dropped": run.dropped, "kept": run.kept}

"""The credit ledger: one account per API group and an append-only list of entries.

Money is integer micro-dollars (1 USD = 1,000,000 micros). The database keeps the invariant
balance = sum of entries: an AFTER INSERT trigger on billing_ledgerentry adds each entry's amount
to its account (and purchases to the cumulative total that decides the usage tier), and another
trigger refuses UPDATE and DELETE of entries. Every write path — the ORM services here and the
gateway's one-statement metering SQL — therefore keeps the balance right without remembering to.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class EntryKind(models.TextChoices):
    PURCHASE = "purchase", "Purchase"
    AUTO_TOP_UP = "auto_top_up", "Auto top-up"
    USAGE = "usage", "Usage"
    REFUND = "refund", "Refund"
    ADJUSTMENT = "adjustment", "Adjustment"
    PROMOTIONAL = "promotional", "Promotional credit"


# Kinds that count as money paid in (for usage tiers); refunds take it back out.
PAID_KINDS = (EntryKind.PURCHASE, EntryKind.AUTO_TOP_UP, EntryKind.REFUND)


class CreditAccount(models.Model):
    group = models.OneToOneField(
        "groups.APIGroup", on_delete=models.PROTECT, related_name="credit_account"
    )
    # Maintained by the database trigger; never written by application code.
    balance_micros = models.BigIntegerField(default=0, editable=False)
    purchased_micros = models.BigIntegerField(default=0, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"Credits of {self.group}"


class LedgerEntry(models.Model):
    account = models.ForeignKey(CreditAccount, on_delete=models.PROTECT, related_name="entries")
    kind = models.CharField(max_length=16, choices=EntryKind.choices)
    amount_micros = models.BigIntegerField(
        help_text="Signed: credits are positive, debits negative."
    )
    # Unique across the ledger: Stripe PaymentIntent id, usage request id, grant reference…
    reference = models.CharField(max_length=200, unique=True)
    description = models.CharField(max_length=255, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        verbose_name_plural = "ledger entries"
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["account", "-created_at"], name="billing_entry_account_idx"),
            models.Index(fields=["account", "kind", "created_at"], name="billing_entry_kind_idx"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=~models.Q(amount_micros=0), name="billing_entry_amount_nonzero"
            ),
            models.CheckConstraint(
                condition=(
                    models.Q(
                        kind__in=["purchase", "auto_top_up", "promotional"], amount_micros__gt=0
                    )
                    | models.Q(kind__in=["usage", "refund"], amount_micros__lt=0)
                    | models.Q(kind="adjustment")
                ),
                name="billing_entry_sign_matches_kind",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount_micros} ({self.reference})"


class BillingProfile(models.Model):
    """A group's Stripe customer and its credit settings (auto top-up, low-balance alert)."""

    group = models.OneToOneField(
        "groups.APIGroup", on_delete=models.CASCADE, related_name="billing"
    )
    stripe_customer_id = models.CharField(max_length=64, blank=True)
    auto_top_up_enabled = models.BooleanField(default=False)
    auto_top_up_threshold_micros = models.BigIntegerField(default=10_000_000)
    auto_top_up_amount_micros = models.BigIntegerField(default=50_000_000)
    low_balance_alert_micros = models.BigIntegerField(null=True, blank=True)
    low_balance_alerted = models.BooleanField(default=False)
    # A run of declined automatic top-ups: Admins are e-mailed once, retries back off.
    top_up_failures = models.PositiveIntegerField(default=0)
    top_up_failure_message = models.CharField(max_length=255, blank=True)
    top_up_retry_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(auto_top_up_threshold_micros__gte=0)
                & models.Q(auto_top_up_amount_micros__gt=0),
                name="billing_profile_top_up_positive",
            )
        ]


class PaymentMethod(models.Model):
    """A card saved at Stripe (mirrored: brand, last four, expiry)."""

    group = models.ForeignKey(
        "groups.APIGroup", on_delete=models.CASCADE, related_name="payment_methods"
    )
    stripe_id = models.CharField(max_length=64, unique=True)
    brand = models.CharField(max_length=32)
    last4 = models.CharField(max_length=4)
    exp_month = models.PositiveSmallIntegerField()
    exp_year = models.PositiveSmallIntegerField()
    is_default = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-is_default", "-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["group"],
                condition=models.Q(is_default=True),
                name="billing_one_default_card",
            )
        ]

    def __str__(self) -> str:
        return f"{self.brand.title()} •••• {self.last4}"


class PaymentKind(models.TextChoices):
    PURCHASE = "purchase", "Credit purchase"
    AUTO_TOP_UP = "auto_top_up", "Auto top-up"


class PaymentStatus(models.TextChoices):
    CREATING = "creating", "Processing"
    REQUIRES_ACTION = "requires_action", "Needs authentication"
    SUCCEEDED = "succeeded", "Paid"
    FAILED = "failed", "Declined"


IN_FLIGHT = ("creating", "requires_action")


class Payment(models.Model):
    """One charge of a saved card. The ledger is credited once per PaymentIntent."""

    public_id = models.CharField(max_length=24, unique=True)
    group = models.ForeignKey("groups.APIGroup", on_delete=models.CASCADE, related_name="payments")
    kind = models.CharField(max_length=16, choices=PaymentKind.choices)
    amount_micros = models.BigIntegerField()
    status = models.CharField(
        max_length=16, choices=PaymentStatus.choices, default=PaymentStatus.CREATING
    )
    stripe_payment_intent_id = models.CharField(max_length=64, unique=True, null=True, blank=True)
    error_message = models.CharField(max_length=255, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(amount_micros__gt=0), name="billing_payment_positive"
            ),
            # Never two automatic top-ups in flight for one group.
            models.UniqueConstraint(
                fields=["group"],
                condition=models.Q(kind="auto_top_up", status__in=IN_FLIGHT),
                name="billing_one_top_up_in_flight",
            ),
        ]


class StripeEvent(models.Model):
    """A webhook event id we have processed (each is handled once)."""

    event_id = models.CharField(max_length=64, unique=True)
    type = models.CharField(max_length=64)
    received_at = models.DateTimeField(auto_now_add=True)

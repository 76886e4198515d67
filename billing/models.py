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

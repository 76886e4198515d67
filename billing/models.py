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

from usage.metrics import tokens_of


class EntryKind(models.TextChoices):
    PURCHASE = "purchase", "Purchase"
    AUTO_TOP_UP = "auto_top_up", "Auto top-up"
    USAGE = "usage", "Usage"
    REFUND = "refund", "Refund"
    ADJUSTMENT = "adjustment", "Adjustment"
    PROMOTIONAL = "promotional", "Promotional credit"


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


# --- Invoices ------------------------------------------------------------------------------


class InvoiceKind(models.TextChoices):
    INVOICE = "invoice", "Invoice"
    CREDIT_NOTE = "credit_note", "Credit note"


class InvoiceStatus(models.TextChoices):
    # Usage is prepaid: an invoice is settled from credits the moment it is issued.
    PAID = "paid", "Paid from credits"
    ISSUED = "issued", "Issued"  # credit notes


class InvoiceSequence(models.Model):
    """The last number used per document prefix and year (gap-free: taken inside the
    transaction that inserts the document, so a rollback gives the number back)."""

    prefix = models.CharField(max_length=8)
    year = models.PositiveSmallIntegerField()
    last_number = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["prefix", "year"], name="billing_invoice_seq_unique")
        ]


class Invoice(models.Model):
    """A finalized invoice (or credit note). Immutable once written: a database trigger refuses
    changes to everything but the Stripe mirror fields, and refuses deletes."""

    public_id = models.CharField(max_length=24, unique=True)
    number = models.CharField(max_length=32, unique=True)
    kind = models.CharField(max_length=12, choices=InvoiceKind.choices)
    status = models.CharField(max_length=8, choices=InvoiceStatus.choices)
    group = models.ForeignKey("groups.APIGroup", on_delete=models.PROTECT, related_name="invoices")
    period_key = models.CharField(max_length=10, help_text='e.g. "2026-10" or "2026-W43"')
    period_start = models.DateTimeField()
    period_end = models.DateTimeField()
    issued_at = models.DateTimeField()
    currency = models.CharField(max_length=3, default="usd")
    # The customer and the issuer as they were when the invoice was finalized.
    bill_to_name = models.CharField(max_length=100)
    bill_to_address = models.TextField(blank=True)
    bill_to_tax_id = models.CharField(max_length=32, blank=True)
    issuer_name = models.CharField(max_length=200)
    issuer_address = models.TextField(blank=True)
    issuer_tax_id = models.CharField(max_length=64, blank=True)
    # Amounts. `total_cents` is the sum of the displayed (cent) usage lines; `usage_micros` the
    # exact sum of the same lines, equal to the ledger's usage debits they cover.
    usage_micros = models.BigIntegerField(default=0)
    total_cents = models.BigIntegerField(default=0)
    opening_balance_micros = models.BigIntegerField(default=0)
    purchases_micros = models.BigIntegerField(default=0)
    refunds_micros = models.BigIntegerField(default=0)
    other_credits_micros = models.BigIntegerField(default=0)
    closing_balance_micros = models.BigIntegerField(default=0)
    # Credit notes: the invoice they correct and why.
    corrects = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="credit_notes"
    )
    reason = models.CharField(max_length=255, blank=True)
    # Stripe's copy (the only fields that may change after finalization).
    stripe_invoice_id = models.CharField(max_length=64, blank=True)
    stripe_hosted_url = models.URLField(max_length=500, blank=True)
    stripe_error = models.CharField(max_length=255, blank=True)

    class Meta:
        ordering = ["-period_start", "-issued_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["group", "period_key"],
                condition=models.Q(kind="invoice"),
                name="billing_one_invoice_per_period",
            )
        ]
        indexes = [models.Index(fields=["group", "-issued_at"], name="billing_invoice_group_idx")]

    def __str__(self) -> str:
        return self.number


class LineSection(models.TextChoices):
    USAGE = "usage", "Usage"
    LATE_USAGE = "late_usage", "Usage from an earlier period"
    CREDIT = "credit", "Credit"  # credit-note lines (negative)
    PURCHASE = "purchase", "Credit purchase"  # informational: not part of the total
    REFUND = "refund", "Refund"
    OTHER = "other", "Promotional credit or adjustment"


# Sections whose lines make up the invoice total.
BILLED_SECTIONS = (LineSection.USAGE, LineSection.LATE_USAGE, LineSection.CREDIT)


class InvoiceLine(models.Model):
    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="lines")
    position = models.PositiveIntegerField()
    section = models.CharField(max_length=12, choices=LineSection.choices)
    label = models.CharField(max_length=200, help_text='e.g. "sonar-pro (743S)"')
    model_name = models.CharField(max_length=100, blank=True)
    key_name = models.CharField(max_length=100, blank=True)
    key_last_four = models.CharField(max_length=4, blank=True)
    api_key = models.ForeignKey(
        "keys.APIKey", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # The period whose usage this line bills (differs from the invoice's for late usage).
    service_period_key = models.CharField(max_length=10, blank=True)
    occurred_at = models.DateTimeField(null=True, blank=True)  # purchases, refunds
    reference = models.CharField(max_length=200, blank=True)
    requests = models.BigIntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    citation_tokens = models.BigIntegerField(default=0)
    reasoning_tokens = models.BigIntegerField(default=0)
    search_queries = models.BigIntegerField(default=0)
    cache_read_tokens = models.BigIntegerField(default=0, db_default=0)
    cache_write_tokens = models.BigIntegerField(default=0, db_default=0)
    # A tool-fee line of the Agent API (`web_search (743S)`): the tool and its invocations. A
    # model's usage line then bills its tokens only.
    tool = models.CharField(max_length=50, blank=True, default="", db_default="")
    invocations = models.BigIntegerField(default=0, db_default=0)
    amount_micros = models.BigIntegerField()
    amount_cents = models.BigIntegerField()

    class Meta:
        ordering = ["invoice", "position"]
        constraints = [
            models.UniqueConstraint(
                fields=["invoice", "position"], name="billing_invoice_line_position"
            )
        ]

    @property
    def billed(self) -> bool:
        return self.section in BILLED_SECTIONS

    @property
    def output_tokens(self) -> int:
        """What the invoice shows as output tokens: every token but the prompt's."""
        return tokens_of(self) - self.prompt_tokens


# --- spend controls ---------------------------------------------------------------------------


class BudgetWindow(models.TextChoices):
    """The period a budget counts spend over; each starts at midnight in the group's time zone
    (groups.APIGroup.time_zone): a day, a week from Monday, a calendar month, or for ever."""

    DAILY = "daily", "Daily"
    WEEKLY = "weekly", "Weekly"
    MONTHLY = "monthly", "Monthly"
    LIFETIME = "lifetime", "Lifetime"


class BudgetEnforcement(models.TextChoices):
    """Hard: requests are refused (402 budget_exceeded) once it is spent. Soft: alerts only."""

    HARD = "hard", "Hard (refuse requests)"
    SOFT = "soft", "Soft (alerts only)"


class Budget(models.Model):
    """A spend budget of a whole API group (api_key is None) or of one of its keys."""

    group = models.ForeignKey("groups.APIGroup", on_delete=models.CASCADE, related_name="budgets")
    api_key = models.ForeignKey(
        "keys.APIKey", null=True, blank=True, on_delete=models.CASCADE, related_name="budgets"
    )
    amount_micros = models.BigIntegerField()
    window = models.CharField(max_length=16, choices=BudgetWindow.choices)
    enforcement = models.CharField(
        max_length=8, choices=BudgetEnforcement.choices, default=BudgetEnforcement.HARD
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["group", "api_key", "window"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(amount_micros__gt=0), name="billing_budget_amount_gt_0"
            ),
            models.UniqueConstraint(
                fields=["group", "api_key", "window"],
                name="billing_budget_one_per_window",
                nulls_distinct=False,
            ),
        ]

    def __str__(self) -> str:
        who = self.api_key.name if self.api_key is not None else "group"
        return f"{who}: {self.amount_micros / 1_000_000:.2f} {self.window} ({self.enforcement})"

"""The model catalogue with its prices, and the usage events the gateway records.

Prices are integer micro-dollars per unit block: per 1M tokens, per 1K searches, per 1K
requests. Perplexity's list prices are all whole micros per token or request, but operators may
set any price; see `usage.pricing` for how a request's cost is computed and rounded.
"""

from __future__ import annotations

from django.db import models


class ContextSize(models.TextChoices):
    LOW = "low", "Low"
    MEDIUM = "medium", "Medium"
    HIGH = "high", "High"


class AIModel(models.Model):
    name = models.CharField(max_length=100, unique=True, help_text="The name clients send.")
    enabled = models.BooleanField(default=True)
    upstream_base_url = models.CharField(
        max_length=300,
        default="simulator://",
        help_text="OpenAI-compatible base URL, e.g. https://api.perplexity.ai or "
        "http://vllm:8000/v1; simulator:// is the built-in simulator (demo/tests).",
    )
    upstream_api_key_env = models.CharField(
        max_length=100,
        blank=True,
        help_text="Name of the environment variable holding the upstream API key.",
    )
    upstream_model = models.CharField(
        max_length=100, blank=True, help_text="Model name upstream (defaults to the name)."
    )
    input_per_m = models.BigIntegerField("input tokens, micros per 1M", default=0)
    output_per_m = models.BigIntegerField("output tokens, micros per 1M", default=0)
    citation_per_m = models.BigIntegerField("citation tokens, micros per 1M", default=0)
    reasoning_per_m = models.BigIntegerField("reasoning tokens, micros per 1M", default=0)
    search_per_k = models.BigIntegerField("search queries, micros per 1K", default=0)
    request_low_per_k = models.BigIntegerField(
        "request fee (low context), micros per 1K", default=0
    )
    request_medium_per_k = models.BigIntegerField(
        "request fee (medium context), micros per 1K", default=0
    )
    request_high_per_k = models.BigIntegerField(
        "request fee (high context), micros per 1K", default=0
    )
    rate_limit_rpm = models.PositiveIntegerField("requests per minute per key (tier 0)", default=50)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "model"
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(input_per_m__gte=0)
                & models.Q(output_per_m__gte=0)
                & models.Q(citation_per_m__gte=0)
                & models.Q(reasoning_per_m__gte=0)
                & models.Q(search_per_k__gte=0)
                & models.Q(request_low_per_k__gte=0)
                & models.Q(request_medium_per_k__gte=0)
                & models.Q(request_high_per_k__gte=0),
                name="usage_aimodel_prices_not_negative",
            )
        ]

    def __str__(self) -> str:
        return self.name


class UsageEvent(models.Model):
    """One successful, metered gateway request. Written once per request id by the gateway."""

    request_id = models.CharField(max_length=64, unique=True)
    group = models.ForeignKey("groups.APIGroup", on_delete=models.PROTECT, related_name="+")
    api_key = models.ForeignKey("keys.APIKey", on_delete=models.PROTECT, related_name="+")
    model = models.ForeignKey(AIModel, on_delete=models.PROTECT, related_name="+")
    prompt_tokens = models.IntegerField(default=0)
    completion_tokens = models.IntegerField(default=0)
    citation_tokens = models.IntegerField(default=0)
    reasoning_tokens = models.IntegerField(default=0)
    search_queries = models.IntegerField(default=0)
    search_context_size = models.CharField(
        max_length=8, choices=ContextSize.choices, default=ContextSize.LOW
    )
    input_cost_micros = models.BigIntegerField(default=0)
    output_cost_micros = models.BigIntegerField(default=0)
    citation_cost_micros = models.BigIntegerField(default=0)
    reasoning_cost_micros = models.BigIntegerField(default=0)
    search_cost_micros = models.BigIntegerField(default=0)
    request_cost_micros = models.BigIntegerField(default=0)
    cost_micros = models.BigIntegerField(help_text="Total; the ledger's usage debit equals it.")
    streamed = models.BooleanField(default=False)
    latency_ms = models.IntegerField(default=0)
    created_at = models.DateTimeField()

    class Meta:
        indexes = [
            models.Index(fields=["group", "created_at"], name="usage_event_group_time_idx"),
            models.Index(fields=["api_key", "created_at"], name="usage_event_key_time_idx"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(cost_micros__gte=0), name="usage_event_cost_ge_0"
            )
        ]


class UsageSums(models.Model):
    """The summed metrics every rollup table carries."""

    requests = models.BigIntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    citation_tokens = models.BigIntegerField(default=0)
    reasoning_tokens = models.BigIntegerField(default=0)
    search_queries = models.BigIntegerField(default=0)
    cost_micros = models.BigIntegerField(default=0)

    class Meta:
        abstract = True


class UsageRollup(UsageSums):
    """Usage summed per hour (UTC) × group × key × model; the dashboards read these.

    Kept by `usage.rollups.rollup_hours` (recomputes whole hours from raw events, so re-running
    it or late events never double count). `period` is "hour" or "day" (UTC days).
    """

    period = models.CharField(max_length=4)
    start = models.DateTimeField()
    group = models.ForeignKey("groups.APIGroup", on_delete=models.CASCADE, related_name="+")
    api_key = models.ForeignKey("keys.APIKey", on_delete=models.CASCADE, related_name="+")
    model = models.ForeignKey(AIModel, on_delete=models.CASCADE, related_name="+")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["period", "group", "start", "api_key", "model"], name="usage_rollup_unique"
            )
        ]
        indexes = [
            models.Index(fields=["group", "period", "start"], name="usage_rollup_lookup_idx")
        ]


class RollupState(models.Model):
    """Everything created before `rolled_through` is in the rollups (one row)."""

    rolled_through = models.DateTimeField(null=True)


class UsageGroupHour(UsageSums):
    """Usage summed per hour (UTC) × group, for charts in any time zone (few rows per range)."""

    group = models.ForeignKey("groups.APIGroup", on_delete=models.CASCADE, related_name="+")
    start = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["group", "start"], name="usage_group_hour_unique")
        ]

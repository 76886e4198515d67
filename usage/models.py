"""The model catalogue with its prices, and the usage events the gateway records.

Prices are integer micro-dollars per unit block: per 1M tokens, per 1K searches, per 1K
requests. Perplexity's list prices are all whole micros per token or request, but operators may
set any price; see `usage.pricing` for how a request's cost is computed and rounded.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Value


class ContextSize(models.TextChoices):
    LOW = "low", "Low"
    MEDIUM = "medium", "Medium"
    HIGH = "high", "High"


class API(models.TextChoices):
    """The APIs a request is metered on (usage.metrics.APIS)."""

    CHAT = "chat", "Chat Completions"
    AGENT = "agent", "Agent API"
    SEARCH = "search", "Search API"
    EMBEDDINGS = "embeddings", "Embeddings"
    ASYNC = "async", "Async Chat Completions"


class UpstreamAPI(models.TextChoices):
    """What a model's upstream speaks (usage.metrics.UPSTREAM_APIS)."""

    CHAT_COMPLETIONS = "chat_completions", "Chat Completions"
    RESPONSES = "responses", "Responses"


# The values AIModel.api may take (the comma list in the order of usage.metrics.APIS). A model
# served on "chat" is also served on "async" (async chat completions run chat models), so
# "async" is never listed; "search" and "embeddings" models are served on that API only.
MODEL_APIS = ("chat", "agent", "chat,agent", "search", "embeddings")


class AIModel(models.Model):
    name = models.CharField(max_length=100, unique=True, help_text="The name clients send.")
    enabled = models.BooleanField(default=True)
    api = models.CharField(
        max_length=20,
        default="chat",
        help_text='The APIs the model is served on, a comma list of "chat" (Sonar chat '
        'completions) and "agent" (the Agent API): "chat", "agent" or "chat,agent".',
    )
    upstream_api = models.CharField(
        max_length=20,
        choices=UpstreamAPI.choices,
        default=UpstreamAPI.CHAT_COMPLETIONS,
        help_text="What the upstream speaks: a Responses upstream is proxied, a chat "
        "completions one is translated both ways on the Agent API.",
    )
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
    cache_read_per_m = models.BigIntegerField("cache-read tokens, micros per 1M", default=0)
    cache_write_per_m = models.BigIntegerField("cache-write tokens, micros per 1M", default=0)
    request_low_per_k = models.BigIntegerField(
        "request fee (low context), micros per 1K", default=0
    )
    request_medium_per_k = models.BigIntegerField(
        "request fee (medium context), micros per 1K", default=0
    )
    request_high_per_k = models.BigIntegerField(
        "request fee (high context), micros per 1K", default=0
    )
    rate_limit_rpm = models.PositiveIntegerField(
        "requests per minute per API group (tier 0)",
        default=50,
        help_text="Used only when the model's API family has no RateLimit (an operator's own "
        "model): the group's limit on this model is this × the tier's multiplier (usage.tiers).",
    )
    # Embeddings models only (api = "embeddings"): the vector length (the largest `dimensions` a
    # request may ask for, and the default), and whether the model embeds chunks in the context
    # of their document (served on /v1/contextualizedembeddings, not /v1/embeddings).
    dimensions = models.PositiveIntegerField(
        "embedding dimensions (maximum and default)", default=0
    )
    contextualized = models.BooleanField(
        default=False, help_text="A contextualized embeddings model (input: documents of chunks)."
    )
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
            ),
            models.CheckConstraint(
                condition=models.Q(cache_read_per_m__gte=0) & models.Q(cache_write_per_m__gte=0),
                name="usage_aimodel_cache_prices_not_negative",
            ),
            models.CheckConstraint(
                condition=models.Q(api__in=MODEL_APIS), name="usage_aimodel_api_valid"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def apis(self) -> frozenset[str]:
        """The APIs it is served on ({"chat"}, {"agent"} or both)."""
        return frozenset(self.api.split(","))


class ToolPrice(models.Model):
    """The fee for each invocation of a built-in tool of the Agent API (`[tools.<name>]`).

    A tool without an enabled ToolPrice is refused when a request asks for it.
    """

    name = models.CharField(
        max_length=50, unique=True, help_text='The tool type, e.g. "web_search".'
    )
    fee_per_k = models.BigIntegerField("fee, micros per 1K invocations", default=0)
    enabled = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(fee_per_k__gte=0), name="usage_toolprice_fee_not_negative"
            )
        ]

    def __str__(self) -> str:
        return self.name


class Preset(models.Model):
    """An effort preset of the Agent API (`[presets.<name>]`): the model it runs on and the
    request settings it implies (`effort`, or the deprecated `preset`; `aliases` are old names)."""

    name = models.CharField(max_length=50, unique=True)
    model = models.ForeignKey(AIModel, on_delete=models.PROTECT, related_name="+")
    aliases = models.JSONField(default=list, blank=True)
    settings = models.JSONField(
        default=dict,
        blank=True,
        help_text="max_steps, reasoning_effort, max_output_tokens, tools (a list of tool types).",
    )
    enabled = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class RateLimit(models.Model):
    """The request limit of one API family, counted per API group (shared by all its keys), at
    each usage tier (`[limits.<family>]` in usage/catalogue.toml; usage.tiers.FAMILIES).

    `per_minute` / `per_second` are lists of 6 whole numbers (tiers 0..5), or null when the family
    has no limit of that window. A chat model with no row of its own is limited by its
    `rate_limit_rpm` instead.
    """

    name = models.CharField(
        max_length=100,
        unique=True,
        help_text='The API family: a chat model\'s name ("sonar", …), "agent", "search", '
        '"embeddings", "async_create", "async_get" or "async_list".',
    )
    per_minute = models.JSONField(
        null=True, blank=True, help_text="Requests per minute at tiers 0..5, or null."
    )
    per_second = models.JSONField(
        null=True, blank=True, help_text="Requests per second at tiers 0..5, or null."
    )
    published = models.BooleanField(
        default=True,
        help_text="False when Perplexity publishes no limit for this family (the numbers are "
        "the operator's choice; the Billing page says so).",
    )
    enabled = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(per_minute__isnull=False) | models.Q(per_second__isnull=False),
                name="usage_ratelimit_has_a_window",
            )
        ]

    def __str__(self) -> str:
        return self.name


class UsageEvent(models.Model):
    """One successful, metered gateway request. Written once per request id by the gateway.

    The table is partitioned by month on `created_at` (usage/partitions.py, migration 0011): its
    unique key is (request_id, created_at), and a retried metering of a request carries the same
    `created_at` (docs/gateway.md, "Exactly once")."""

    request_id = models.CharField(max_length=64)
    group = models.ForeignKey("groups.APIGroup", on_delete=models.PROTECT, related_name="+")
    api_key = models.ForeignKey("keys.APIKey", on_delete=models.PROTECT, related_name="+")
    model = models.ForeignKey(AIModel, on_delete=models.PROTECT, related_name="+")
    # The columns added for the Agent API have database defaults too, so a gateway still running
    # the previous release during a deploy (its metering statement lists only the old columns)
    # keeps metering.
    api = models.CharField(
        max_length=16, choices=API.choices, default=API.CHAT, db_default=API.CHAT
    )
    prompt_tokens = models.IntegerField(default=0)
    completion_tokens = models.IntegerField(default=0)
    citation_tokens = models.IntegerField(default=0)
    reasoning_tokens = models.IntegerField(default=0)
    search_queries = models.IntegerField(default=0)
    cache_read_tokens = models.IntegerField(default=0, db_default=0)
    cache_write_tokens = models.IntegerField(default=0, db_default=0)
    search_context_size = models.CharField(
        max_length=8, choices=ContextSize.choices, default=ContextSize.LOW
    )
    input_cost_micros = models.BigIntegerField(default=0)
    output_cost_micros = models.BigIntegerField(default=0)
    citation_cost_micros = models.BigIntegerField(default=0)
    reasoning_cost_micros = models.BigIntegerField(default=0)
    search_cost_micros = models.BigIntegerField(default=0)
    request_cost_micros = models.BigIntegerField(default=0)
    cache_read_cost_micros = models.BigIntegerField(default=0, db_default=0)
    cache_write_cost_micros = models.BigIntegerField(default=0, db_default=0)
    tools_cost_micros = models.BigIntegerField(default=0, db_default=0)
    tool_calls = models.JSONField(
        default=dict,
        db_default=Value({}, output_field=models.JSONField()),
        blank=True,
        help_text='Per tool: {"web_search": {"invocations": 2, "cost_micros": 5000}}.',
    )
    cost_micros = models.BigIntegerField(help_text="Total; the ledger's usage debit equals it.")
    streamed = models.BooleanField(default=False)
    latency_ms = models.IntegerField(default=0)
    created_at = models.DateTimeField()
    # Who the request was for (usage.attribution): the end user (`user`) and tags, as given.
    end_user = models.CharField(max_length=128, null=True, blank=True, db_default=None)
    tags = models.JSONField(
        default=dict,
        db_default=Value({}, output_field=models.JSONField()),
        blank=True,
        help_text='{"team": "search", "env": "prod"}',
    )

    class Meta:
        indexes = [
            models.Index(fields=["group", "created_at"], name="usage_event_group_time_idx"),
            models.Index(fields=["api_key", "created_at"], name="usage_event_key_time_idx"),
            # Only requests that name an end user pay for this index.
            models.Index(
                fields=["group", "end_user", "created_at"],
                name="usage_event_end_user_idx",
                condition=models.Q(end_user__isnull=False),
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(cost_micros__gte=0), name="usage_event_cost_ge_0"
            ),
            # The exactly-once key (gateway/sql/meter.sql); on a partitioned table a unique key
            # must contain the partition key.
            models.UniqueConstraint(
                fields=["request_id", "created_at"], name="usage_event_request_once"
            ),
        ]


class UsageSums(models.Model):
    """The summed metrics every rollup table carries."""

    requests = models.BigIntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    citation_tokens = models.BigIntegerField(default=0)
    reasoning_tokens = models.BigIntegerField(default=0)
    search_queries = models.BigIntegerField(default=0)
    cache_read_tokens = models.BigIntegerField(default=0, db_default=0)
    cache_write_tokens = models.BigIntegerField(default=0, db_default=0)
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
    api = models.CharField(
        max_length=16, choices=API.choices, default=API.CHAT, db_default=API.CHAT
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["period", "group", "start", "api_key", "model", "api"],
                name="usage_rollup_unique_api",
            )
        ]
        indexes = [
            models.Index(fields=["group", "period", "start"], name="usage_rollup_lookup_idx")
        ]


class UsageToolRollup(models.Model):
    """Tool invocations and their fees summed per hour (UTC) × group × key × model × API × tool,
    kept with UsageRollup (same periods, same recomputation) from the events' `tool_calls`."""

    period = models.CharField(max_length=4)
    start = models.DateTimeField()
    group = models.ForeignKey("groups.APIGroup", on_delete=models.CASCADE, related_name="+")
    api_key = models.ForeignKey("keys.APIKey", on_delete=models.CASCADE, related_name="+")
    model = models.ForeignKey(AIModel, on_delete=models.CASCADE, related_name="+")
    api = models.CharField(max_length=16, choices=API.choices, default=API.CHAT)
    tool = models.CharField(max_length=50)
    invocations = models.BigIntegerField(default=0)
    cost_micros = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["period", "group", "start", "api_key", "model", "api", "tool"],
                name="usage_tool_rollup_unique",
            )
        ]
        indexes = [
            models.Index(fields=["group", "period", "start"], name="usage_tool_rollup_lookup_idx")
        ]


class RollupState(models.Model):
    """Everything created before `rolled_through` is in the rollups (one row)."""

    rolled_through = models.DateTimeField(null=True)
    raw_from = models.DateTimeField(
        null=True,
        help_text="Raw usage events created before it were dropped (retention); "
        "rollups and invoices keep them.",
    )


class UsageGroupHour(UsageSums):
    """Usage summed per hour (UTC) × group, for charts in any time zone (few rows per range)."""

    group = models.ForeignKey("groups.APIGroup", on_delete=models.CASCADE, related_name="+")
    start = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["group", "start"], name="usage_group_hour_unique")
        ]


class Dimension(models.TextChoices):
    """What a UsageDimensionRollup row is summed by (usage.attribution)."""

    END_USER = "end_user", "End user"
    TAG = "tag", "Tag"  # value "key=value"; "key=(other)" or "(other)" beyond the caps
    TAG_KEY = "tag_key", "Tag key"  # UsageDimensionName only


class UsageDimensionRollup(UsageSums):
    """Usage summed per hour or UTC day × group × end user, and × tag pair, kept with the other
    rollups (usage.rollups). Bounded: per group and UTC day only the names UsageDimensionName
    admits get rows of their own; everything else is summed under "(other)". A request counts
    once under its end user (none: no row), and once under each of its tags."""

    period = models.CharField(max_length=4)
    start = models.DateTimeField()
    group = models.ForeignKey("groups.APIGroup", on_delete=models.CASCADE, related_name="+")
    dimension = models.CharField(max_length=8, choices=Dimension.choices)
    value = models.CharField(max_length=200)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["period", "group", "start", "dimension", "value"],
                name="usage_dimension_rollup_unique",
            )
        ]
        indexes = [
            models.Index(fields=["group", "period", "start"], name="usage_dimension_rollup_idx")
        ]


class UsageDimensionName(models.Model):
    """The end users, tag keys and tag pairs that roll up under their own names, per group and
    UTC day: the first ones seen, up to settings.USAGE_END_USERS_PER_DAY, USAGE_TAG_KEYS_PER_DAY
    and USAGE_TAGS_PER_DAY. Only ever added to, so a value's bucket never changes."""

    group = models.ForeignKey("groups.APIGroup", on_delete=models.CASCADE, related_name="+")
    day = models.DateTimeField()
    dimension = models.CharField(max_length=8, choices=Dimension.choices)
    value = models.CharField(max_length=200)
    first_seen = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["group", "day", "dimension", "value"], name="usage_dimension_name_unique"
            )
        ]

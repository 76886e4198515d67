"""The gateway's own table: async chat completions jobs (`/async/chat/completions`).

The gateway reads and creates them with raw SQL on its psycopg pool (gateway/sql/async_*.sql);
the Celery worker runs them with the ORM (gateway/async_runner.py). The money is not here: a
completed job's charge is its usage event (request id = the job id) and that event's ledger debit.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Value


class AsyncStatus(models.TextChoices):
    """perplexity.generated.api.AsyncProcessingStatus."""

    CREATED = "CREATED", "Created"
    IN_PROGRESS = "IN_PROGRESS", "In progress"
    COMPLETED = "COMPLETED", "Completed"
    FAILED = "FAILED", "Failed"


class AsyncJob(models.Model):
    """One async chat completion: the request as sent, its state and, once done, its response."""

    id = models.CharField(primary_key=True, max_length=64)
    group = models.ForeignKey("groups.APIGroup", on_delete=models.CASCADE, related_name="+")
    api_key = models.ForeignKey("keys.APIKey", on_delete=models.CASCADE, related_name="+")
    model = models.ForeignKey("usage.AIModel", on_delete=models.PROTECT, related_name="+")
    model_name = models.CharField(max_length=100, help_text="The model as the client named it.")
    request = models.JSONField(help_text="The chat completions body, as the client sent it.")
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)
    status = models.CharField(
        max_length=16, choices=AsyncStatus.choices, default=AsyncStatus.CREATED
    )
    created_at = models.DateTimeField()
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)
    error_message = models.TextField(null=True, blank=True)
    # The chat completion with our usage.cost; written in the transaction that meters it, so a
    # job with a response has been charged exactly once, whatever happens to the worker next.
    response = models.JSONField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0, help_text="Runs started (worker claims).")
    # CREATED: not re-queued by the sweeper before this; IN_PROGRESS: the runner's lease.
    lease_until = models.DateTimeField(null=True, blank=True)
    # The end user (`request.user`) and X-Portal-Tags of the create, for its usage event.
    end_user = models.CharField(max_length=128, null=True, blank=True, db_default=None)
    tags = models.JSONField(
        default=dict, db_default=Value({}, output_field=models.JSONField()), blank=True
    )

    class Meta:
        indexes = [
            models.Index(fields=["group", "-created_at", "-id"], name="async_job_group_time_idx"),
            models.Index(
                fields=["lease_until"],
                name="async_job_open_idx",
                condition=models.Q(status__in=["CREATED", "IN_PROGRESS"]),
            ),
            models.Index(fields=["created_at"], name="async_job_created_idx"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["group", "idempotency_key"],
                condition=models.Q(idempotency_key__isnull=False),
                name="async_job_idempotency_uniq",
            )
        ]

    def __str__(self) -> str:
        return f"{self.id} ({self.status})"

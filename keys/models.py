from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from groups.models import new_public_id


class KeyStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    REVOKED = "revoked", "Revoked"


class SecretKey(models.Model):
    """What every kind of key shares: a name, the prefix and last four characters people see, a
    SHA-256 of the secret (the secret itself is never stored), a status, who made and revoked it."""

    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=20)
    secret_hash = models.CharField(max_length=64, unique=True)
    last_four = models.CharField(max_length=4)
    status = models.CharField(max_length=8, choices=KeyStatus.choices, default=KeyStatus.ACTIVE)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return f"{self.name} ({self.masked})"

    @property
    def masked(self) -> str:
        return f"{self.prefix}…{self.last_four}"


class APIKey(SecretKey):
    """An inference key of an API group."""

    public_id = models.CharField(max_length=24, unique=True, default=new_public_id, editable=False)
    group = models.ForeignKey("groups.APIGroup", on_delete=models.CASCADE, related_name="api_keys")
    expires_at = models.DateTimeField(null=True, blank=True)
    monthly_limit_micros = models.BigIntegerField(
        null=True, blank=True, help_text="Spend limit per calendar month (UTC); empty: none."
    )
    regenerated_at = models.DateTimeField(null=True, blank=True)
    # Restrictions (keys/restrictions.py): allowlists, each empty meaning "all".
    allowed_models = models.JSONField(default=list, blank=True)
    allowed_apis = models.JSONField(default=list, blank=True)
    allowed_tools = models.JSONField(default=list, blank=True)
    allowed_ips = models.JSONField(default=list, blank=True, help_text="CIDR ranges.")
    # Rotation with a grace period: the secret before the last regeneration keeps working until
    # previous_expires_at (the gateway caches that time with the key: no change event needed).
    previous_secret_hash = models.CharField(max_length=64, null=True, blank=True, unique=True)
    previous_last_four = models.CharField(max_length=4, blank=True, default="")
    previous_expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "API key"
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["group", "status"], name="keys_group_status_idx")]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(monthly_limit_micros__isnull=True)
                | models.Q(monthly_limit_micros__gt=0),
                name="keys_limit_positive",
            ),
        ]

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    @property
    def display_status(self) -> str:
        if self.status == KeyStatus.REVOKED:
            return "revoked"
        return "expired" if self.is_expired else "active"

    @property
    def previous_secret_active(self) -> bool:
        """The secret before the last regeneration still works (its grace period runs)."""
        return (
            self.previous_secret_hash is not None
            and self.previous_expires_at is not None
            and self.previous_expires_at > timezone.now()
            and self.status == KeyStatus.ACTIVE
        )

    @property
    def previous_masked(self) -> str:
        return f"{self.prefix}…{self.previous_last_four}"

    @property
    def restriction_summary(self) -> list[tuple[str, str]]:
        """The key's restrictions as (label, text) pairs for display; empty when it has none."""
        parts = [
            ("Models", self.allowed_models),
            ("APIs", self.allowed_apis),
            ("Tools", self.allowed_tools),
            ("IPs", self.allowed_ips),
        ]
        return [(label, ", ".join(values)) for label, values in parts if values]


class KeyChange(models.Model):
    """A durable note, committed with the change itself, that a key's cached state changed.

    The portal also writes the new state to Redis and announces it (keys/cache.py), but after the
    commit and at Redis' mercy. Gateway workers read the notes of the last minutes with one small
    indexed query every few hundred milliseconds and rewrite the Redis entry from PostgreSQL, so
    a revocation whose Redis update failed still takes effect within a second once Redis is back.
    Notes older than KEY_CHANGE_KEEP are deleted by the next change.
    """

    id = models.BigAutoField(primary_key=True)
    secret_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.secret_hash[:8]}… at {self.created_at:%Y-%m-%d %H:%M:%S}"

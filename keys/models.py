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

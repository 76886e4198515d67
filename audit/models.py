from __future__ import annotations

from django.conf import settings
from django.db import models


class AuditEvent(models.Model):
    """One administrative action in a group. Append-only: the database refuses UPDATE/DELETE."""

    group = models.ForeignKey(
        "groups.APIGroup", on_delete=models.PROTECT, related_name="audit_events"
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Kept so the record still says who acted after the user is deleted.
    actor_email = models.EmailField(blank=True)
    # Set instead of `actor` when a management key acted through the Management API. Keys are
    # revoked, never deleted (PROTECT: SET_NULL would UPDATE this append-only table).
    actor_management_key = models.ForeignKey(
        "management.ManagementKey",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="audit_events",
    )
    action = models.CharField(max_length=64, db_index=True)
    target_type = models.CharField(max_length=64, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    target_repr = models.CharField(max_length=255, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["group", "-created_at"], name="audit_group_created_idx")]

    def __str__(self) -> str:
        return (
            f"{self.created_at:%Y-%m-%d %H:%M} {self.actor_label} {self.action} {self.target_repr}"
        )

    @property
    def actor_label(self) -> str:
        """Who acted, for people: an e-mail, a management key, or "system"."""
        if self.actor_management_key_id is not None:
            return f"management key {self.actor_management_key}"
        return self.actor_email or "system"

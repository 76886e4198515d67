from __future__ import annotations

from django.conf import settings
from django.db import models

from groups.models import new_public_id
from keys.models import KeyStatus


class ManagementRole(models.TextChoices):
    ADMIN = "admin", "Admin"
    READ_ONLY = "read_only", "Read-only"


class ManagementKey(models.Model):
    """A key for the Management API (`/v1/management/…`) of one API group.

    Separate from inference keys: its own prefix (`pplx-admin-`), never accepted by the gateway,
    and a role: `admin` may change the group through the API, `read_only` may only read. Like
    inference keys, only a SHA-256 of the secret is stored. Keys are revoked, never deleted, so
    the audit events they acted in keep pointing at them.
    """

    # Lets the audit service tell a key acting from a signed-in user (see audit.services).
    is_management_key = True

    public_id = models.CharField(max_length=24, unique=True, default=new_public_id, editable=False)
    group = models.ForeignKey(
        "groups.APIGroup", on_delete=models.CASCADE, related_name="management_keys"
    )
    name = models.CharField(max_length=100)
    role = models.CharField(max_length=16, choices=ManagementRole.choices)
    prefix = models.CharField(max_length=32)
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
        verbose_name = "management key"
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["group", "status"], name="mgmt_key_group_status_idx")]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(role__in=["admin", "read_only"]), name="mgmt_key_role_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.masked})"

    @property
    def masked(self) -> str:
        return f"{self.prefix}…{self.last_four}"

    @property
    def is_active(self) -> bool:
        return self.status == KeyStatus.ACTIVE

    @property
    def can_write(self) -> bool:
        return self.role == ManagementRole.ADMIN

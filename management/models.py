from __future__ import annotations

from django.db import models

from groups.models import new_public_id
from keys.models import KeyStatus, SecretKey


class ManagementRole(models.TextChoices):
    ADMIN = "admin", "Admin"
    READ_ONLY = "read_only", "Read-only"


class ManagementKey(SecretKey):
    """A key for the Management API (`/v1/management/…`) of one API group.

    Separate from inference keys: its own prefix (`pplx-admin-`), never accepted by the gateway,
    and a role: `admin` may change the group through the API, `read_only` may only read. Like
    inference keys, only a SHA-256 of the secret is stored (keys.models.SecretKey). Keys are
    revoked, never deleted, so the audit events they acted in keep pointing at them.
    """

    # Lets the audit service tell a key acting from a signed-in user (see audit.services).
    is_management_key = True

    public_id = models.CharField(max_length=24, unique=True, default=new_public_id, editable=False)
    group = models.ForeignKey(
        "groups.APIGroup", on_delete=models.CASCADE, related_name="management_keys"
    )
    role = models.CharField(max_length=16, choices=ManagementRole.choices)
    prefix = models.CharField(max_length=32)

    class Meta:
        verbose_name = "management key"
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["group", "status"], name="mgmt_key_group_status_idx")]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(role__in=["admin", "read_only"]), name="mgmt_key_role_valid"
            ),
        ]

    @property
    def is_active(self) -> bool:
        return self.status == KeyStatus.ACTIVE

    @property
    def can_write(self) -> bool:
        return self.role == ManagementRole.ADMIN

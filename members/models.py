from __future__ import annotations

from django.conf import settings
from django.db import models


class Role(models.TextChoices):
    ADMIN = "admin", "Admin"
    MEMBER = "member", "Member"


class Membership(models.Model):
    """A user's place in an API group, with the role that decides what they may change."""

    group = models.ForeignKey(
        "groups.APIGroup", on_delete=models.CASCADE, related_name="memberships"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["group", "user"], name="members_membership_unique"),
            models.CheckConstraint(
                condition=models.Q(role__in=["admin", "member"]),
                name="members_membership_role_valid",
            ),
        ]
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"{self.user} in {self.group} ({self.role})"

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN

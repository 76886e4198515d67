from __future__ import annotations

import secrets
import string

from django.db import models
from django_countries.fields import CountryField

_ALPHABET = string.ascii_lowercase + string.digits


def new_public_id() -> str:
    """Return a random, URL-safe group id (no numeric ids appear in URLs)."""
    return "".join(secrets.choice(_ALPHABET) for _ in range(12))


class APIGroup(models.Model):
    """An organization's workspace: it owns billing, keys, members and usage."""

    public_id = models.CharField(max_length=24, unique=True, default=new_public_id, editable=False)
    name = models.CharField("organization name", max_length=100)
    description = models.TextField(max_length=500, blank=True)
    address_line1 = models.CharField("address line 1", max_length=200, blank=True)
    address_line2 = models.CharField("address line 2", max_length=200, blank=True)
    city = models.CharField(max_length=100, blank=True)
    state = models.CharField("state / region", max_length=100, blank=True)
    postal_code = models.CharField("ZIP / postal code", max_length=20, blank=True)
    country = CountryField(blank=True)
    tax_id = models.CharField("tax ID", max_length=32, blank=True)
    admins_require_mfa = models.BooleanField(
        "Admins must use two-factor authentication",
        default=False,
        help_text="Admins without an authenticator app are sent to set one up before they can "
        "use this group's pages.",
    )
    time_zone = models.CharField(
        max_length=64,
        default="UTC",
        help_text="An IANA time zone (e.g. Europe/Paris): budget windows start at midnight here.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "API group"
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name

"""Create, rename, limit, revoke and regenerate API keys. Every change is audited."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.services import acting_user, audit_record
from keys import cache, secrets
from keys.models import APIKey, KeyStatus

# The largest monthly limit a key may have ($1,000,000): far above any real need, and a bound
# that keeps API input inside a bigint.
MAX_MONTHLY_LIMIT_MICROS = 1_000_000 * 1_000_000


class APIKeyError(ValueError):
    """A key change that cannot be made; the message says why and `field` names the input."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class IssuedKey:
    key: APIKey
    secret: str  # shown to the user exactly once


def _publish_on_commit(key: APIKey, *, old_hash: str | None = None) -> None:
    state = cache.key_state(key)
    secret_hash = key.secret_hash
    # Durable, in this transaction: the gateway repairs its cache from these notes even when the
    # Redis update below fails (keys/cache.py).
    cache.record_change(secret_hash, *([old_hash] if old_hash else []))

    def publish() -> None:
        cache.publish(secret_hash, state)
        if old_hash:
            cache.publish(old_hash, cache.REVOKED)

    transaction.on_commit(publish)


def clean_key_name(name: str) -> str:
    """The name of any kind of key, stripped; APIKeyError when empty or too long."""
    name = (name or "").strip()
    if not name:
        raise APIKeyError("Give the key a name.", field="name")
    if len(name) > 100:
        raise APIKeyError("Key names can be at most 100 characters.", field="name")
    return name


def _validate(name: str, expires_at: datetime | None, monthly_limit_micros: int | None) -> str:
    name = clean_key_name(name)
    if expires_at is not None and expires_at <= timezone.now():
        raise APIKeyError("The expiry date must be in the future.", field="expires_at")
    if monthly_limit_micros is not None and monthly_limit_micros <= 0:
        raise APIKeyError("A monthly limit must be more than $0.", field="monthly_limit_micros")
    if monthly_limit_micros is not None and monthly_limit_micros > MAX_MONTHLY_LIMIT_MICROS:
        raise APIKeyError(
            "That limit is larger than this portal supports.", field="monthly_limit_micros"
        )
    return name


@transaction.atomic
def api_key_create(
    *,
    group: Any,
    name: str,
    actor: Any | None = None,
    expires_at: datetime | None = None,
    monthly_limit_micros: int | None = None,
    request: Any = None,
) -> IssuedKey:
    """Create a key and return it with its secret (which is never stored)."""
    name = _validate(name, expires_at, monthly_limit_micros)
    secret = secrets.generate()
    key = APIKey.objects.create(
        group=group,
        name=name,
        prefix=settings.API_KEY_PREFIX,
        secret_hash=secrets.hash_key(secret),
        last_four=secrets.last_four(secret),
        expires_at=expires_at,
        monthly_limit_micros=monthly_limit_micros,
        created_by=acting_user(actor),
    )
    audit_record(group=group, actor=actor, action="key.create", target=key, request=request)
    _publish_on_commit(key)
    return IssuedKey(key, secret)


@transaction.atomic
def api_key_update(
    *,
    key: APIKey,
    name: str,
    expires_at: datetime | None,
    monthly_limit_micros: int | None,
    actor: Any | None = None,
    request: Any = None,
) -> APIKey:
    """Rename a key or change its expiry and monthly limit."""
    key = APIKey.objects.select_for_update().get(pk=key.pk)
    if key.status == KeyStatus.REVOKED:
        raise APIKeyError("A revoked key cannot be changed.")
    if expires_at != key.expires_at:
        name = _validate(name, expires_at, monthly_limit_micros)
    else:
        name = _validate(name, None, monthly_limit_micros)
    changes = {
        field: [str(getattr(key, field)), str(value)]
        for field, value in (
            ("name", name),
            ("expires_at", expires_at),
            ("monthly_limit_micros", monthly_limit_micros),
        )
        if getattr(key, field) != value
    }
    if not changes:
        return key
    key.name, key.expires_at, key.monthly_limit_micros = name, expires_at, monthly_limit_micros
    key.save(update_fields=["name", "expires_at", "monthly_limit_micros"])
    audit_record(
        group=key.group, actor=actor, action="key.update", target=key, request=request, data=changes
    )
    _publish_on_commit(key)
    return key


@transaction.atomic
def api_key_revoke(*, key: APIKey, actor: Any | None = None, request: Any = None) -> APIKey:
    """Revoke a key for good; the gateway refuses it within a second."""
    key = APIKey.objects.select_for_update().get(pk=key.pk)
    if key.status == KeyStatus.REVOKED:
        return key
    key.status = KeyStatus.REVOKED
    key.revoked_at = timezone.now()
    key.revoked_by = acting_user(actor)
    key.save(update_fields=["status", "revoked_at", "revoked_by"])
    audit_record(group=key.group, actor=actor, action="key.revoke", target=key, request=request)
    _publish_on_commit(key)
    return key


@transaction.atomic
def api_key_regenerate(*, key: APIKey, actor: Any | None = None, request: Any = None) -> IssuedKey:
    """Give a key a new secret (same name, settings and history); the old secret dies at once."""
    key = APIKey.objects.select_for_update().get(pk=key.pk)
    if key.status == KeyStatus.REVOKED:
        raise APIKeyError("A revoked key cannot be regenerated; create a new key instead.")
    old_hash = key.secret_hash
    secret = secrets.generate()
    key.secret_hash = secrets.hash_key(secret)
    key.last_four = secrets.last_four(secret)
    key.prefix = settings.API_KEY_PREFIX
    key.regenerated_at = timezone.now()
    key.save(update_fields=["secret_hash", "last_four", "prefix", "regenerated_at"])
    audit_record(
        group=key.group,
        actor=actor,
        action="key.regenerate",
        target=key,
        request=request,
        data={"new_last_four": key.last_four},
    )
    _publish_on_commit(key, old_hash=old_hash)
    return IssuedKey(key, secret)

"""Create, rename, limit, revoke and regenerate API keys. Every change is audited."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from audit.services import acting_user, audit_record
from keys import cache, secrets
from keys.models import APIKey, KeyStatus
from keys.restrictions import Restrictions, of_key

# The largest monthly limit a key may have ($1,000,000): far above any real need, and a bound
# that keeps API input inside a bigint.
MAX_MONTHLY_LIMIT_MICROS = 1_000_000 * 1_000_000
# The longest an old secret may keep working after a regeneration.
MAX_GRACE_SECONDS = 24 * 3600


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
    """After commit: the key's fresh state for its secret and, during a grace period, for its
    previous secret (restrictions and revocations apply to both); `old_hash` dies now."""
    states = {key.secret_hash: cache.key_state(key)}
    if key.previous_secret_hash:
        states[key.previous_secret_hash] = cache.key_state(key, previous=True)
    if old_hash and old_hash not in states:
        states[old_hash] = cache.REVOKED
    # Durable, in this transaction: the gateway repairs its cache from these notes even when the
    # Redis update below fails (keys/cache.py).
    cache.record_change(*states)

    def publish() -> None:
        for secret_hash, state in states.items():
            cache.publish(secret_hash, state)

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
    restrictions: Restrictions | None = None,
    request: Any = None,
) -> IssuedKey:
    """Create a key and return it with its secret (which is never stored)."""
    name = _validate(name, expires_at, monthly_limit_micros)
    restrictions = restrictions or Restrictions()
    secret = secrets.generate()
    key = APIKey.objects.create(
        group=group,
        name=name,
        prefix=settings.API_KEY_PREFIX,
        secret_hash=secrets.hash_key(secret),
        last_four=secrets.last_four(secret),
        expires_at=expires_at,
        monthly_limit_micros=monthly_limit_micros,
        allowed_models=list(restrictions.models),
        allowed_apis=list(restrictions.apis),
        allowed_tools=list(restrictions.tools),
        allowed_ips=list(restrictions.ip_ranges),
        created_by=acting_user(actor),
    )
    audit_record(
        group=group,
        actor=actor,
        action="key.create",
        target=key,
        request=request,
        data=_restriction_data(restrictions) or None,
    )
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
def api_key_regenerate(
    *, key: APIKey, actor: Any | None = None, request: Any = None, grace_seconds: int = 0
) -> IssuedKey:
    """Give a key a new secret (same name, settings and history). The old secret dies at once,
    or keeps working for `grace_seconds` (at most MAX_GRACE_SECONDS) while clients move; a
    secret still in an earlier grace period dies now."""
    if isinstance(grace_seconds, bool) or not 0 <= grace_seconds <= MAX_GRACE_SECONDS:
        raise APIKeyError(
            f"The grace period must be from 0 to {MAX_GRACE_SECONDS} seconds (24 hours).",
            field="grace_seconds",
        )
    key = APIKey.objects.select_for_update().get(pk=key.pk)
    if key.status == KeyStatus.REVOKED:
        raise APIKeyError("A revoked key cannot be regenerated; create a new key instead.")
    old_hash, old_four = key.secret_hash, key.last_four
    dying = key.previous_secret_hash  # an earlier grace period ends now
    now = timezone.now()
    secret = secrets.generate()
    key.secret_hash = secrets.hash_key(secret)
    key.last_four = secrets.last_four(secret)
    key.prefix = settings.API_KEY_PREFIX
    key.regenerated_at = now
    data: dict[str, Any] = {"new_last_four": key.last_four}
    if grace_seconds:
        key.previous_secret_hash = old_hash
        key.previous_last_four = old_four
        key.previous_expires_at = now + timedelta(seconds=grace_seconds)
        data |= {
            "old_last_four": old_four,
            "grace_seconds": grace_seconds,
            "old_works_until": key.previous_expires_at.isoformat(),
        }
    else:
        key.previous_secret_hash, key.previous_last_four, key.previous_expires_at = None, "", None
    key.save(
        update_fields=[
            "secret_hash", "last_four", "prefix", "regenerated_at",
            "previous_secret_hash", "previous_last_four", "previous_expires_at",
        ]
    )  # fmt: skip
    audit_record(
        group=key.group,
        actor=actor,
        action="key.regenerate",
        target=key,
        request=request,
        data=data,
    )
    if dying and dying != key.previous_secret_hash:
        cache.record_change(dying)
        transaction.on_commit(lambda: cache.publish(dying, cache.REVOKED))
    _publish_on_commit(key, old_hash=None if grace_seconds else old_hash)
    return IssuedKey(key, secret)


def _restriction_data(restrictions: Restrictions) -> dict[str, list[str]]:
    return {
        field: list(values)
        for field, values in (
            ("allowed_models", restrictions.models),
            ("allowed_apis", restrictions.apis),
            ("allowed_tools", restrictions.tools),
            ("allowed_ips", restrictions.ip_ranges),
        )
        if values
    }


@transaction.atomic
def api_key_restrict(
    *, key: APIKey, restrictions: Restrictions, actor: Any | None = None, request: Any = None
) -> APIKey:
    """Set a key's allowed models, APIs, tools and client IP ranges (empty: all); the gateway
    applies them within a second, to the previous secret too during a grace period."""
    key = APIKey.objects.select_for_update().get(pk=key.pk)
    if key.status == KeyStatus.REVOKED:
        raise APIKeyError("A revoked key cannot be changed.")
    before = of_key(key)
    if before == restrictions:
        return key
    changes = {
        field: [list(old), list(new)]
        for field, old, new in (
            ("allowed_models", before.models, restrictions.models),
            ("allowed_apis", before.apis, restrictions.apis),
            ("allowed_tools", before.tools, restrictions.tools),
            ("allowed_ips", before.ip_ranges, restrictions.ip_ranges),
        )
        if old != new
    }
    key.allowed_models = list(restrictions.models)
    key.allowed_apis = list(restrictions.apis)
    key.allowed_tools = list(restrictions.tools)
    key.allowed_ips = list(restrictions.ip_ranges)
    key.save(update_fields=["allowed_models", "allowed_apis", "allowed_tools", "allowed_ips"])
    audit_record(
        group=key.group, actor=actor, action="key.restrict", target=key, request=request,
        data=changes,
    )  # fmt: skip
    _publish_on_commit(key)
    return key


@transaction.atomic
def api_key_grace_end(*, key: APIKey) -> bool:
    """Forget a key's previous secret once its grace period is over, and audit its end (the
    gateway already refuses it: its cached state carries the end). False if nothing to do."""
    key = APIKey.objects.select_for_update().get(pk=key.pk)
    if key.previous_secret_hash is None or (
        key.previous_expires_at is not None and key.previous_expires_at > timezone.now()
    ):
        return False
    old_hash, old_four, ended = (
        key.previous_secret_hash,
        key.previous_last_four,
        key.previous_expires_at,
    )
    key.previous_secret_hash, key.previous_last_four, key.previous_expires_at = None, "", None
    key.save(update_fields=["previous_secret_hash", "previous_last_four", "previous_expires_at"])
    audit_record(
        group=key.group, actor=None, action="key.old_secret_end", target=key,
        data={"old_last_four": old_four, "ended_at": ended.isoformat() if ended else None},
    )  # fmt: skip
    _publish_on_commit(key, old_hash=old_hash)
    return True


def api_key_grace_sweep() -> int:
    """End every grace period that is over (a periodic task); return how many ended."""
    due = APIKey.objects.filter(
        previous_secret_hash__isnull=False, previous_expires_at__lte=timezone.now()
    ).only("pk")
    return sum(api_key_grace_end(key=key) for key in due)

"""What the gateway knows about a key, cached in Redis under the SHA-256 of the secret.

After any change to a key (revoke, regenerate, rename, limits) the service writes the fresh
state here after commit — a revoked or regenerated secret's entry says "revoked" — and announces
the hash on the channel CHANGES. Gateway workers keep entries in memory: while subscribed to
CHANGES, until a message drops them (at most KEY_CACHE_LIVE seconds); while not subscribed (Redis
restarting), for at most `settings.GATEWAY_KEY_CACHE_SECONDS` (≤ 1 s). The gateway fills missing
entries with SET NX, so a fill racing with a change never overwrites the newer state.

Fail closed: the Redis update runs after the commit and can fail (Redis unreachable), which would
leave the old state in Redis for KEY_TTL and in the workers' memory. So every change also writes a
KeyChange row *in its own transaction* (record_change); each gateway worker reads the recent rows
every KEY_CHANGES_POLL seconds (gateway/keycache.py) and rewrites those entries from PostgreSQL. A
change is therefore in force within about a second even if its announcement was lost, as soon as
both PostgreSQL and Redis are reachable again.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import orjson
import redis
from django.utils import timezone

from core.redis import get_redis
from keys.models import APIKey, KeyChange, KeyStatus

KEY_TTL = 300  # seconds a Redis entry lives; a change older than that has no stale entry left
KEY_CHANGE_KEEP = timedelta(hours=1)  # KeyChange rows are kept this long (≫ KEY_TTL)
CHANGES = "portal:key-changes"  # pub/sub channel: the hash of each key whose state changed
logger = logging.getLogger(__name__)


def redis_key(secret_hash: str) -> str:
    return f"portal:key:{secret_hash}"


def key_state(key: APIKey, *, previous: bool = False) -> dict:
    """The cached state of the key's secret, or (`previous`) of its secret before the last
    regeneration: the same key, active only until its grace period ends (`expires_at` is then
    the earlier of the key's expiry and that end, so the gateway stops accepting it on time
    without a change event)."""
    expires_at = key.expires_at
    active = key.status == KeyStatus.ACTIVE
    if previous:
        end = key.previous_expires_at
        active = active and end is not None
        if end is not None and (expires_at is None or end < expires_at):
            expires_at = end
    return {
        "id": key.pk,
        "group_id": key.group_id,
        "name": key.name,
        "last_four": key.last_four,
        "active": active,
        "expires_at": expires_at.timestamp() if expires_at else None,
        "monthly_limit_micros": key.monthly_limit_micros,
        "allowed_models": list(key.allowed_models or ()),
        "allowed_apis": list(key.allowed_apis or ()),
        "allowed_tools": list(key.allowed_tools or ()),
        "allowed_ips": list(key.allowed_ips or ()),
    }


REVOKED = {"active": False}


def publish(secret_hash: str, state: dict) -> None:
    try:
        pipe = get_redis().pipeline(transaction=False)
        pipe.set(redis_key(secret_hash), orjson.dumps(state), ex=KEY_TTL)
        pipe.publish(CHANGES, secret_hash)
        pipe.execute()
    except redis.RedisError:
        logger.warning("could not publish key state for %s…", secret_hash[:8])


def record_change(*secret_hashes: str) -> None:
    """Note, in the caller's transaction, that these keys' cached state changed (see above)."""
    KeyChange.objects.bulk_create(KeyChange(secret_hash=h) for h in secret_hashes)
    KeyChange.objects.filter(created_at__lt=timezone.now() - KEY_CHANGE_KEEP).delete()

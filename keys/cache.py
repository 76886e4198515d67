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


def key_state(key: APIKey) -> dict:
    return {
        "id": key.pk,
        "group_id": key.group_id,
        "name": key.name,
        "last_four": key.last_four,
        "active": key.status == KeyStatus.ACTIVE,
        "expires_at": key.expires_at.timestamp() if key.expires_at else None,
        "monthly_limit_micros": key.monthly_limit_micros,
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

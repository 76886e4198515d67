"""One Redis client per process for the portal's own keys (balance and key caches, limits)."""

from __future__ import annotations

import functools
import logging

import redis
from django.conf import settings


@functools.cache
def get_redis() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=1)


def safe_delete(*keys: str) -> None:
    """Delete cache keys; a Redis outage must not fail the database write that caused it.

    Every cached value also expires on its own (see the TTLs where they are set), so a missed
    delete heals itself.
    """
    try:
        get_redis().delete(*keys)
    except redis.RedisError:
        logging.getLogger(__name__).warning("could not delete cache keys %s", keys)

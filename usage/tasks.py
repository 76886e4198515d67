from __future__ import annotations

from celery import shared_task

from usage.partitions import ensure_ahead
from usage.rollups import rollup_recent


@shared_task
def rollup_usage() -> str:
    """Bring the usage rollups up to date (runs every minute)."""
    return rollup_recent().isoformat()


@shared_task
def usage_partitions_ahead() -> list[str]:
    """Create this month's usage partition and the next USAGE_PARTITIONS_AHEAD (idempotent)."""
    return ensure_ahead()

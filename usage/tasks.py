from __future__ import annotations

from celery import shared_task

from usage.rollups import rollup_recent


@shared_task
def rollup_usage() -> str:
    """Bring the usage rollups up to date (runs every minute)."""
    return rollup_recent().isoformat()

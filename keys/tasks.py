from __future__ import annotations

from celery import shared_task

from keys.services import api_key_grace_sweep


@shared_task
def key_grace_sweep() -> int:
    """Forget (and audit the end of) previous secrets whose grace period is over."""
    return api_key_grace_sweep()

"""The gateway's Celery tasks: async chat completions jobs (gateway/async_runner.py).

The runner queues `run_async_job` (the sweeper) and so imports this module at the top; this module
therefore imports the runner inside each task (the only deferred imports allowed, see
CONVENTIONS.md).
"""

from __future__ import annotations

from celery import shared_task


@shared_task(acks_late=True, reject_on_worker_lost=True)
def run_async_job(job_id: str) -> str:
    """Run one async job; a redelivered or repeated task charges nothing twice."""
    from gateway.async_runner import run_job

    return run_job(job_id)


@shared_task
def async_sweep() -> int:
    """Queue again the async jobs whose worker died or that no worker took (every minute)."""
    from gateway.async_runner import sweep

    return sweep()


@shared_task
def async_purge() -> int:
    """Delete async jobs older than ASYNC_RESULT_TTL (hourly)."""
    from gateway.async_runner import purge

    return purge()

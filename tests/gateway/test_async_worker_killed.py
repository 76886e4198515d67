"""A real Celery worker is SIGKILLed while running an async job: before the metering commit and
after it (before COMPLETED). The redelivered task (acks_late) finishes it; it is charged once."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
import warnings

import pytest
from django.db import connection
from django.utils import timezone

from billing.models import CreditAccount, LedgerEntry
from gateway.models import AsyncJob
from keys.services import api_key_create
from portal import launcher
from portal.celery import app as celery_app
from portal.launcher import kill_group, stop_group, wait_for
from usage.catalogue import catalogue_sync
from usage.models import AIModel, UsageEvent

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def start_worker(env: dict[str, str]) -> subprocess.Popen:
    command = launcher.worker_command(pool="solo", loglevel="WARNING", heartbeat=False)
    return launcher.spawn(command, env=env)


@pytest.mark.parametrize("point", ["async_calling", "async_metered"])
def test_killed_worker_job_is_finished_and_charged_once(funded_group, point):
    catalogue_sync()
    model = AIModel.objects.get(name="sonar-deep-research")
    job = AsyncJob.objects.create(
        id=uuid.uuid4().hex, group=funded_group,
        api_key=api_key_create(group=funded_group, name="Jobs").key, model=model,
        model_name=model.name, request={"model": model.name, "messages": [{"role": "user",
        "content": "A report, please."}]}, created_at=timezone.now(), lease_until=timezone.now(),
    )  # fmt: skip
    before = CreditAccount.objects.get(group=funded_group).balance_micros
    env = {
        **os.environ,
        "DJANGO_ENV": "test",
        "DATABASE_URL": launcher.database_url(connection.settings_dict),
        "CELERY_TASK_ALWAYS_EAGER": "false",
        "CELERY_VISIBILITY_TIMEOUT": "3",
        "ASYNC_JOB_LEASE": "2",  # the dead worker's claim is over when the task comes back
    }
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    with warnings.catch_warnings():  # send_task publishes to the broker even in eager mode
        warnings.simplefilter("ignore")
        celery_app.send_task("gateway.tasks.run_async_job", args=[job.id])

    doomed = start_worker(env | {"PORTAL_FAULTS": f"{point}=60"})

    def paused() -> bool:
        job.refresh_from_db()
        if point == "async_metered":
            return job.response is not None
        return job.status == "IN_PROGRESS"

    try:
        wait_for(paused, 60, f"the worker at {point}")
        time.sleep(0.2)
    finally:
        kill_group(doomed, signal.SIGKILL, timeout=10)
    job.refresh_from_db()
    assert job.status == "IN_PROGRESS"
    assert UsageEvent.objects.filter(request_id=job.id).count() == (point == "async_metered")

    time.sleep(3.5)  # past the visibility timeout: the unacknowledged task comes back
    survivor = start_worker(env)
    try:
        wait_for(lambda: AsyncJob.objects.get(pk=job.pk).status == "COMPLETED", 60, "the re-run")
    finally:
        stop_group(survivor, grace=20)
    event = UsageEvent.objects.get(request_id=job.id)
    assert event.api == "async"
    assert (
        before - CreditAccount.objects.get(group=funded_group).balance_micros == event.cost_micros
    )
    assert LedgerEntry.objects.filter(kind="usage").count() == 1
    job.refresh_from_db()
    assert round(job.response["usage"]["cost"]["total_cost"] * 1_000_000) == event.cost_micros

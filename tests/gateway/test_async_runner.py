"""The async job runner: exactly-once metering when a task runs twice or a worker dies, the
sweeper, and retention (gateway/async_runner.py, gateway/tasks.py)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from billing.models import CreditAccount, LedgerEntry
from gateway import async_runner
from gateway.models import AsyncJob
from gateway.tasks import async_purge, async_sweep, run_async_job
from keys.services import api_key_create
from usage.catalogue import catalogue_sync
from usage.models import AIModel, UsageEvent

pytestmark = pytest.mark.django_db(transaction=True)

MESSAGES = [{"role": "user", "content": "Write a short report on rivers."}]


@pytest.fixture
def make_job(funded_group):  # type: ignore[no-untyped-def]
    catalogue_sync()
    key = api_key_create(group=funded_group, name="Jobs").key
    model = AIModel.objects.get(name="sonar-deep-research")

    def make(**fields) -> AsyncJob:  # type: ignore[no-untyped-def]
        now = timezone.now()
        values = {
            "id": uuid.uuid4().hex,
            "group": funded_group,
            "api_key": key,
            "model": model,
            "model_name": model.name,
            "request": {"model": model.name, "messages": MESSAGES},
            "created_at": now,
            "lease_until": now + timedelta(seconds=settings.ASYNC_REQUEUE_AFTER),
        } | fields
        return AsyncJob.objects.create(**values)

    return make


def balance(group) -> int:  # type: ignore[no-untyped-def]
    return CreditAccount.objects.get(group=group).balance_micros


def test_a_task_run_twice_charges_once(make_job, funded_group):
    job = make_job()
    before = balance(funded_group)
    assert run_async_job.delay(job.id).get() == "COMPLETED"
    assert run_async_job.delay(job.id).get() == "skipped"
    job.refresh_from_db()
    event = UsageEvent.objects.get(request_id=job.id)
    assert event.api == "async" and job.status == "COMPLETED" and job.attempts == 1
    assert before - balance(funded_group) == event.cost_micros > 0
    assert round(job.response["usage"]["cost"]["total_cost"] * 1_000_000) == event.cost_micros
    assert LedgerEntry.objects.filter(kind="usage").count() == 1


def test_a_crash_between_metering_and_completed_charges_once_and_completes(
    make_job, funded_group, monkeypatch
):
    job = make_job()
    before = balance(funded_group)
    real_finish = async_runner.finish

    def crash(_job) -> None:  # type: ignore[no-untyped-def]
        raise SystemExit("worker killed")

    monkeypatch.setattr(async_runner, "finish", crash)
    with pytest.raises(SystemExit):
        async_runner.run_job(job.id)
    job.refresh_from_db()
    assert job.status == "IN_PROGRESS" and job.response is not None  # charged, not marked
    charged = UsageEvent.objects.get(request_id=job.id).cost_micros
    assert before - balance(funded_group) == charged

    # The redelivered task (acks_late) calls no model and charges nothing again.
    monkeypatch.setattr(async_runner, "finish", real_finish)
    calls: list[object] = []
    monkeypatch.setattr(async_runner, "call_model", lambda j: calls.append(j))
    assert run_async_job.delay(job.id).get() == "COMPLETED"
    job.refresh_from_db()
    assert job.status == "COMPLETED" and job.completed_at is not None and calls == []
    assert before - balance(funded_group) == charged
    assert UsageEvent.objects.count() == 1 and LedgerEntry.objects.filter(kind="usage").count() == 1


def test_a_crash_before_metering_is_retried_by_the_sweeper(make_job, funded_group, monkeypatch):
    job = make_job()
    before = balance(funded_group)

    def crash(_job) -> None:  # type: ignore[no-untyped-def]
        raise SystemExit("worker killed while waiting for the model")

    real_call = async_runner.call_model
    monkeypatch.setattr(async_runner, "call_model", crash)
    with pytest.raises(SystemExit):
        async_runner.run_job(job.id)
    job.refresh_from_db()
    assert job.status == "IN_PROGRESS" and job.attempts == 1
    assert balance(funded_group) == before and not UsageEvent.objects.exists()

    monkeypatch.setattr(async_runner, "call_model", real_call)
    assert async_sweep.delay().get() == 0  # its lease is not over: the worker may be alive
    AsyncJob.objects.filter(pk=job.pk).update(lease_until=timezone.now() - timedelta(seconds=1))
    assert async_sweep.delay().get() == 1  # queued again (eager: run at once)
    job.refresh_from_db()
    assert job.status == "COMPLETED" and job.attempts == 2
    assert before - balance(funded_group) == UsageEvent.objects.get(request_id=job.id).cost_micros


def test_the_sweeper_fails_a_job_interrupted_too_often_and_finishes_a_charged_one(
    make_job, funded_group
):
    past = timezone.now() - timedelta(seconds=1)
    doomed = make_job(
        status="IN_PROGRESS", attempts=settings.ASYNC_JOB_MAX_ATTEMPTS, lease_until=past,
        started_at=past,
    )  # fmt: skip
    charged = make_job()
    async_runner.run_job(charged.id)
    AsyncJob.objects.filter(pk=charged.pk).update(
        status="IN_PROGRESS", completed_at=None, lease_until=past
    )
    before = balance(funded_group)
    async_sweep.delay().get()
    doomed.refresh_from_db()
    charged.refresh_from_db()
    assert doomed.status == "FAILED" and "Nothing was charged" in doomed.error_message
    assert doomed.failed_at is not None and doomed.response is None
    assert charged.status == "COMPLETED" and charged.completed_at is not None
    assert balance(funded_group) == before  # neither moved any money
    assert not UsageEvent.objects.filter(request_id=doomed.id).exists()


def test_the_sweeper_queues_a_job_no_worker_took(make_job):
    waiting = make_job()  # queued just now: left alone
    lost = make_job(lease_until=timezone.now() - timedelta(seconds=1))
    assert async_sweep.delay().get() == 1
    waiting.refresh_from_db()
    lost.refresh_from_db()
    assert waiting.status == "CREATED" and lost.status == "COMPLETED"


def test_retention_deletes_old_jobs_only(make_job, settings):
    settings.ASYNC_RESULT_TTL = 3600
    old = timezone.now() - timedelta(seconds=3601)
    expired = make_job(created_at=old)
    async_runner.run_job(expired.id)
    running = make_job(created_at=old, status="IN_PROGRESS",
                       lease_until=timezone.now() + timedelta(minutes=5))  # fmt: skip
    recent = make_job()
    async_runner.run_job(recent.id)
    assert async_purge.delay().get() == 1
    assert set(AsyncJob.objects.values_list("pk", flat=True)) == {running.pk, recent.pk}
    # The usage event is the billing record: it stays.
    assert UsageEvent.objects.filter(request_id=expired.pk).exists()


def test_retention_defaults_to_seven_days_and_the_tasks_are_scheduled():
    from portal import settings as portal_settings

    assert portal_settings.ASYNC_RESULT_TTL == 7 * 86400
    tasks = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert {"gateway.tasks.async_sweep", "gateway.tasks.async_purge"} <= tasks

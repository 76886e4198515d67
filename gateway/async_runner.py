"""Running async chat completions jobs in a Celery worker (gateway/tasks.py), the sweeper that
recovers jobs whose worker died, and the retention purge. Synchronous Django code: it runs in the
worker, never on the gateway's event loop.

A run: claim the job (CREATED → IN_PROGRESS, started_at, a lease of ASYNC_JOB_LEASE seconds,
attempts + 1) → call the model's upstream (the simulator for `simulator://`; a non-streamed
chat completion) → in ONE transaction, meter it (gateway/sql/meter.sql, request id = the job id,
api "async") and save the response with our usage.cost → mark it COMPLETED. An upstream failure
marks it FAILED with the reason; nothing was metered, so nothing is charged.

Exactly once: the usage event's request id is the job id, the metering transaction locks the
job's row and meters only while it has no response (METER_SQL also inserts nothing for an event
already recorded, and the debit's reference is unique), and the response is saved in the
transaction that meters it, so "has a response" ⇔ "was charged". A worker that dies
- before that commit: the job stays IN_PROGRESS, uncharged; once its lease is over the sweeper
  queues it again (a new claim, attempts + 1), and after ASYNC_JOB_MAX_ATTEMPTS runs it is FAILED;
- after it (before COMPLETED): the next claim (the redelivered task, or the sweeper) sees the
  response, calls no upstream, charges nothing and marks it COMPLETED.
Two runs at once (a lease that ran out while the first was still waiting on its upstream) both
reach the metering transaction; the second one waits for the first's commit on the job's row lock,
then sees the response and meters and saves nothing. No job is
lost: a CREATED job that no worker took (the broker was down when it was queued) is queued again
by the sweeper once its lease_until (ASYNC_REQUEUE_AFTER after creation) has passed.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import timedelta
from typing import Any

import httpx
import orjson
import redis
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from billing import balance_cache
from core import faults
from core.redis import get_redis, safe_delete
from gateway import simulator
from gateway.admission import RESERVATION_KEYS, month_start, release_script
from gateway.app import UPSTREAM_AUTH_STATUSES, parse_usage, passthrough_error
from gateway.budgets import budget_counters
from gateway.metering import JSON_FIELDS, METER_DEFAULTS, METER_FIELDS, METER_SQL
from gateway.models import AsyncJob, AsyncStatus
from gateway.tasks import run_async_job
from usage.metrics import counts_of
from usage.pricing import Prices, compute_cost

log = logging.getLogger(__name__)

ASYNC = "async"  # usage.metrics.APIS
SWEEP_BATCH = 1000
NOTHING_CHARGED = " Nothing was charged."


class UpstreamFailure(Exception):
    """The model server did not give a usable answer: the job fails, uncharged."""


def run_job(job_id: str) -> str:
    """Run (or finish) one job; safe to call twice or concurrently. Returns the status it left."""
    job = claim(job_id)
    if job is None:
        return "skipped"  # finished, deleted, or running in another worker
    if job.response is None:
        if job.attempts > settings.ASYNC_JOB_MAX_ATTEMPTS:
            return fail(job, "The request was interrupted too many times." + NOTHING_CHARGED)
        started = time.perf_counter()
        faults.pause("async_calling")  # reliability tests kill the worker here
        try:
            data, usage = call_model(job)
        except UpstreamFailure as exc:
            return fail(job, str(exc))
        record(job, data, usage, started)
        faults.pause("async_metered")  # reliability tests kill the worker here
    finish(job)
    return AsyncStatus.COMPLETED


def claim(job_id: str) -> AsyncJob | None:
    """CREATED → IN_PROGRESS with a fresh lease; also an IN_PROGRESS job whose lease is over (its
    worker died) or that is already charged (it died before marking it COMPLETED)."""
    now = timezone.now()
    claimable = Q(status=AsyncStatus.CREATED) | Q(status=AsyncStatus.IN_PROGRESS) & (
        Q(lease_until__lt=now) | Q(response__isnull=False)
    )
    claimed = AsyncJob.objects.filter(claimable, pk=job_id).update(
        status=AsyncStatus.IN_PROGRESS,
        started_at=Coalesce(F("started_at"), now),
        attempts=F("attempts") + 1,
        lease_until=now + timedelta(seconds=settings.ASYNC_JOB_LEASE),
    )
    if not claimed:
        return None
    return AsyncJob.objects.select_related("model").get(pk=job_id)


def call_model(job: AsyncJob) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model's non-streamed chat completion for the job's request: (the body, its usage)."""
    model = job.model
    payload = {k: v for k, v in job.request.items() if k not in ("stream", "stream_options")}
    if model.upstream_base_url.startswith("simulator:"):
        raw = simulator.complete(model.name, payload)
    else:
        raw = fetch(job, payload)
    try:
        data = orjson.loads(raw)
        usage = data["usage"]
        if not isinstance(usage, dict):
            raise TypeError
    except (orjson.JSONDecodeError, KeyError, TypeError):
        raise UpstreamFailure(
            "The model server sent a response without usage." + NOTHING_CHARGED
        ) from None
    return data, usage


def fetch(job: AsyncJob, payload: dict[str, Any]) -> bytes:
    model = job.model
    api_key = os.environ.get(model.upstream_api_key_env, "") if model.upstream_api_key_env else ""
    headers = {"Content-Type": "application/json", "X-Request-Id": job.id}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    body = {**payload, "model": model.upstream_model or model.name}
    timeout = httpx.Timeout(
        settings.ASYNC_UPSTREAM_TIMEOUT, connect=settings.GATEWAY_UPSTREAM_CONNECT_TIMEOUT
    )
    try:
        resp = httpx.post(
            f"{model.upstream_base_url.rstrip('/')}/chat/completions",
            content=orjson.dumps(body),
            headers=headers,
            timeout=timeout,
        )
    except httpx.TimeoutException:
        raise UpstreamFailure(
            "The model server did not answer in time." + NOTHING_CHARGED
        ) from None
    except httpx.HTTPError as exc:
        raise UpstreamFailure(
            f"The model server could not be reached ({type(exc).__name__})." + NOTHING_CHARGED
        ) from None
    if resp.status_code >= 500:
        raise UpstreamFailure(f"The model server answered {resp.status_code}." + NOTHING_CHARGED)
    if resp.status_code >= 400:
        # The chat rule (gateway.app.passthrough_error): the operator's credentials refused is
        # our failure with a fixed message; any other message is kept, the upstream key masked.
        message = passthrough_error(resp.status_code, resp.content, None, job.id).message
        if api_key and resp.status_code not in UPSTREAM_AUTH_STATUSES:
            message = message.replace(api_key, "[redacted]")
        raise UpstreamFailure(message + ("" if NOTHING_CHARGED in message else NOTHING_CHARGED))
    return resp.content


def record(job: AsyncJob, data: dict[str, Any], usage: dict[str, Any], started: float) -> None:
    """Meter the job and save its response, in one transaction (the exactly-once point)."""
    parsed = parse_usage(usage, job.request)
    cost = compute_cost(Prices.of(job.model), parsed)
    usage["cost"] = cost.as_usage_cost()
    data["id"] = job.id
    data["model"] = job.model_name
    row: dict[str, Any] = {
        "request_id": job.id,
        "group_id": job.group_id,
        "key_id": job.api_key_id,
        "model_id": job.model_id,
        "api": ASYNC,
        **counts_of(parsed),
        "context_size": parsed.search_context_size,
        **cost.parts(),
        "total": cost.total,
        "streamed": False,
        "latency_ms": int((time.perf_counter() - started) * 1000),
        "created": time.time(),
        "end_user": job.end_user,  # checked and stored at create (gateway/async_jobs.py)
        "tags": job.tags,
    }
    columns = [[_value(row, name)] for name in METER_FIELDS]
    with transaction.atomic():
        # The job's row lock makes two runs of one job take turns here: the second sees the
        # first's response and meters nothing. Its `created` differs from the first run's, so
        # the usage event's unique (request_id, created_at) alone would not catch it (the
        # debit's unique reference would, as an error).
        uncharged = (
            AsyncJob.objects.select_for_update()
            .filter(pk=job.id, response__isnull=True)
            .values_list("pk", flat=True)
        )
        if not list(uncharged):
            return
        with connection.cursor() as cur:
            cur.execute(METER_SQL, columns)
        AsyncJob.objects.filter(pk=job.id, response__isnull=True).update(response=data)
    # The gateway's cached balance, key spend and budget spends are re-read from PostgreSQL on
    # the next request; the job's reservation (made at create) is given back.
    balance_cache.forget(group_id=job.group_id)
    safe_delete(
        f"portal:kspend:{job.api_key_id}:{month_start():%Y%m}",
        *budget_counters(job.group_id, job.api_key_id, time.time()),
    )
    release_reservation(job.id)


def _value(row: dict[str, Any], name: str) -> Any:
    value = row.get(name, METER_DEFAULTS.get(name))
    return orjson.dumps(value).decode() if name in JSON_FIELDS else value


def finish(job: AsyncJob) -> None:
    AsyncJob.objects.filter(
        pk=job.id, status=AsyncStatus.IN_PROGRESS, response__isnull=False
    ).update(status=AsyncStatus.COMPLETED, completed_at=timezone.now(), lease_until=None)


def fail(job: AsyncJob, message: str) -> str:
    """FAILED with the reason; only a job that was not charged (it has no response)."""
    AsyncJob.objects.filter(
        pk=job.id, status=AsyncStatus.IN_PROGRESS, response__isnull=True
    ).update(
        status=AsyncStatus.FAILED, failed_at=timezone.now(), error_message=message, lease_until=None
    )
    log.info("async job %s failed: %s", job.id, message)
    release_reservation(job.id)
    return AsyncStatus.FAILED


def release_reservation(job_id: str) -> None:
    """Give back what the job reserved at create (gateway/admission.py); a Redis outage leaves
    it to expire (gateway.async_jobs.async_hold_seconds)."""
    try:
        release_script(get_redis())(keys=list(RESERVATION_KEYS), args=[job_id])
    except redis.RedisError:
        log.warning("could not give back the reservation of async job %s", job_id)


def sweep() -> int:
    """Recover jobs whose worker died or that were never taken; returns how many were queued.

    IN_PROGRESS past its lease: charged → COMPLETED; run ASYNC_JOB_MAX_ATTEMPTS times → FAILED
    (uncharged); otherwise queued again. CREATED past its lease_until → queued again (and left
    alone for another ASYNC_REQUEUE_AFTER seconds). A duplicate in the queue is harmless: only one
    claim succeeds.
    """
    now = timezone.now()
    expired = AsyncJob.objects.filter(status=AsyncStatus.IN_PROGRESS, lease_until__lt=now)
    expired.filter(response__isnull=False).update(
        status=AsyncStatus.COMPLETED, completed_at=now, lease_until=None
    )
    expired.filter(response__isnull=True, attempts__gte=settings.ASYNC_JOB_MAX_ATTEMPTS).update(
        status=AsyncStatus.FAILED,
        failed_at=now,
        error_message="The request was interrupted too many times." + NOTHING_CHARGED,
        lease_until=None,
    )
    stale = list(
        AsyncJob.objects.filter(
            status__in=(AsyncStatus.CREATED, AsyncStatus.IN_PROGRESS), lease_until__lt=now
        )
        .order_by("lease_until")
        .values_list("pk", flat=True)[:SWEEP_BATCH]
    )
    AsyncJob.objects.filter(pk__in=stale, status=AsyncStatus.CREATED).update(
        lease_until=now + timedelta(seconds=settings.ASYNC_REQUEUE_AFTER)
    )
    for job_id in stale:
        run_async_job.delay(job_id)
    return len(stale)


def purge() -> int:
    """Delete the jobs created more than ASYNC_RESULT_TTL seconds ago (Perplexity keeps async
    results 7 days), except one a worker is running right now. Returns how many were deleted.
    Their usage events and ledger debits stay: they are the billing record."""
    now = timezone.now()
    cutoff = now - timedelta(seconds=settings.ASYNC_RESULT_TTL)
    deleted, _ = (
        AsyncJob.objects.filter(created_at__lt=cutoff)
        .exclude(status=AsyncStatus.IN_PROGRESS, lease_until__gte=now)
        .delete()
    )
    return deleted

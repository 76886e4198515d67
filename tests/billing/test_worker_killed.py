"""A real Celery worker is SIGKILLed after Stripe charged but before the credit was recorded."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from urllib.parse import quote

import pytest
from django.db import connection

from billing import payments, stripe_api
from billing.models import CreditAccount, Payment
from portal.celery import app as celery_app
from tests.factories import GroupFactory, MembershipFactory

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
ROOT = Path(__file__).resolve().parents[2]


def database_url() -> str:
    db = connection.settings_dict
    host = quote(db["HOST"] or "", safe="") if (db["HOST"] or "").startswith("/") else db["HOST"]
    port = f":{db['PORT']}" if db.get("PORT") else ""
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{host}{port}/{db['NAME']}"


def start_worker(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "portal", "worker", "--pool", "solo", "--loglevel", "WARNING",
         "--without-gossip", "--without-mingle", "--without-heartbeat"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip


def wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_killed_worker_rerun_charges_exactly_once(localstripe, save_card, settings):
    group = GroupFactory()
    admin = MembershipFactory(group=group, role="admin").user
    save_card(group)
    payments.auto_top_up_configure(
        group=group, enabled=True, threshold_micros=1_000_000, amount_micros=25_000_000, actor=admin
    )
    customer = payments.profile_for(group=group).stripe_customer_id

    env = {
        **os.environ,
        "DJANGO_ENV": "test",
        "DATABASE_URL": database_url(),
        "CELERY_TASK_ALWAYS_EAGER": "false",
        "CELERY_VISIBILITY_TIMEOUT": "3",
        "STRIPE_API_BASE": localstripe.base_url,
        "STRIPE_SECRET_KEY": "sk_test_localstripe",
    }
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    with warnings.catch_warnings():  # send_task publishes to the broker even in eager mode: wanted
        warnings.simplefilter("ignore")
        celery_app.send_task("billing.tasks.auto_top_up", args=[group.pk])

    doomed = start_worker(env | {"PORTAL_FAULTS": "after_charge=60"})
    try:
        wait_for(lambda: stripe_api.payment_intents_for_customer(customer), 60, "the first charge")
        os.killpg(doomed.pid, signal.SIGKILL)  # after Stripe charged, before we recorded it
        doomed.wait(10)
    finally:
        if doomed.poll() is None:
            os.killpg(doomed.pid, signal.SIGKILL)
    assert CreditAccount.objects.get(group=group).balance_micros == 0
    assert Payment.objects.get(group=group).status == "creating"

    time.sleep(3.5)  # past the visibility timeout: the unacknowledged task comes back
    survivor = start_worker(env)
    try:
        wait_for(lambda: Payment.objects.get(group=group).status == "succeeded", 60, "the re-run")
    finally:
        os.killpg(survivor.pid, signal.SIGTERM)
        survivor.wait(20)
    assert len(stripe_api.payment_intents_for_customer(customer)) == 1
    assert CreditAccount.objects.get(group=group).balance_micros == 25_000_000

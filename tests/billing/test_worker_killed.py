"""A real Celery worker is SIGKILLed after Stripe charged but before the credit was recorded."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import warnings

import pytest
from django.db import connection

from billing import payments, stripe_api
from billing.models import CreditAccount, Payment
from portal import launcher
from portal.celery import app as celery_app
from portal.launcher import kill_group, stop_group, wait_for
from tests.factories import GroupFactory, MembershipFactory

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def start_worker(env: dict[str, str]) -> subprocess.Popen:
    """One Celery worker that takes one task at a time, in a process group of its own."""
    command = launcher.worker_command(pool="solo", loglevel="WARNING", heartbeat=False)
    return launcher.spawn(command, env=env)


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
        "DATABASE_URL": launcher.database_url(connection.settings_dict),
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
    finally:  # after Stripe charged, before we recorded it
        kill_group(doomed, signal.SIGKILL, timeout=10)
    assert CreditAccount.objects.get(group=group).balance_micros == 0
    assert Payment.objects.get(group=group).status == "creating"

    time.sleep(3.5)  # past the visibility timeout: the unacknowledged task comes back
    survivor = start_worker(env)
    try:
        wait_for(lambda: Payment.objects.get(group=group).status == "succeeded", 60, "the re-run")
    finally:
        stop_group(survivor, grace=20)
    assert len(stripe_api.payment_intents_for_customer(customer)) == 1
    assert CreditAccount.objects.get(group=group).balance_micros == 25_000_000


def test_killed_worker_during_invoice_generation_leaves_one_invoice(localstripe, settings):
    from billing.models import Invoice
    from keys.services import api_key_create
    from tests.billing.invoice_world import OCT, usage
    from usage.catalogue import catalogue_sync
    from usage.models import AIModel

    catalogue_sync()
    group = GroupFactory()
    MembershipFactory(group=group, role="admin")
    key = api_key_create(group=group, name="Server").key
    sonar = AIModel.objects.get(name="sonar")
    for day in (3, 9, 17):
        usage(group, key, sonar, OCT.replace(day=day), cost=1_234_567)

    env = {
        **os.environ,
        "DJANGO_ENV": "test",
        "DATABASE_URL": launcher.database_url(connection.settings_dict),
        "CELERY_TASK_ALWAYS_EAGER": "false",
        "CELERY_VISIBILITY_TIMEOUT": "3",
        "STRIPE_API_BASE": localstripe.base_url,
        "STRIPE_SECRET_KEY": "sk_test_localstripe",
        "INVOICE_STRIPE_MIRROR": "false",
    }
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        celery_app.send_task("billing.tasks.generate_invoice", args=[group.pk, "2025-10"])

    def paused_inside_the_transaction() -> bool:
        with connection.cursor() as c:
            c.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND state = 'idle in transaction' AND pid <> pg_backend_pid()"
            )
            return c.fetchone()[0] > 0

    doomed = start_worker(env | {"PORTAL_FAULTS": "invoice_saved=60"})
    try:
        wait_for(paused_inside_the_transaction, 60, "the invoice written, not yet committed")
    finally:
        kill_group(doomed, signal.SIGKILL, timeout=10)
    wait_for(lambda: not paused_inside_the_transaction(), 30, "PostgreSQL to roll it back")
    assert not Invoice.objects.filter(group=group).exists()

    time.sleep(3.5)  # past the visibility timeout: the unacknowledged task comes back
    survivor = start_worker(env)
    try:
        wait_for(lambda: Invoice.objects.filter(group=group).exists(), 60, "the re-run")
        with warnings.catch_warnings():  # beat's run again, or a duplicate delivery: no effect
            warnings.simplefilter("ignore")
            celery_app.send_task("billing.tasks.generate_invoice", args=[group.pk, "2025-10"])
        time.sleep(2)  # let the survivor take the duplicate (nothing observable to wait for)
    finally:
        stop_group(survivor, grace=20)
    invoice = Invoice.objects.get(group=group, period_key="2025-10")
    assert invoice.usage_micros == 3 * 1_234_567
    assert Invoice.objects.filter(group=group).count() == 1

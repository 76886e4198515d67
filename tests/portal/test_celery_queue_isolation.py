"""A flood of e-mails never delays a top-up: real Celery workers, one per queue.

Two workers run as docker-compose's `scale` profile runs them (`-Q billing`, `-Q email`), each
one task at a time, against a slow SMTP server. 200 e-mails are queued, then the month-end
invoice fan-out (200 invoice tasks, on `billing` at the low priority of its route), then one
automatic top-up: the top-up is charged within a couple of seconds, while most of the e-mails and
most of the invoices still wait their turn.
"""

from __future__ import annotations

import asyncio
import os
import time
import warnings
from collections.abc import Iterator

import pytest
import redis
from aiosmtpd.controller import Controller
from django.conf import settings
from django.db import connection

from billing import payments
from billing.models import CreditAccount, Payment
from portal import launcher
from portal.celery import app as celery_app
from portal.launcher import free_port, wait_for
from tests.factories import GroupFactory, MembershipFactory

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

EMAILS = 200
INVOICES = 200
SMTP_SECONDS = 0.05  # per message: 200 take the e-mail worker 10 s or more


class SlowSmtp:
    def __init__(self) -> None:
        self.port = free_port()
        self.received = 0

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        await asyncio.sleep(SMTP_SECONDS)
        self.received += 1
        return "250 OK"


@pytest.fixture
def slow_smtp() -> Iterator[SlowSmtp]:
    sink = SlowSmtp()
    controller = Controller(sink, hostname="127.0.0.1", port=sink.port)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


def queue_length(client: redis.Redis, queue: str, priority: int = 0) -> int:
    """Messages waiting in a queue at one of kombu's Redis priority steps (0: the queue's key)."""
    key = f"{queue}\x06\x16{priority}" if priority else queue
    return int(client.llen(key))


def test_a_top_up_overtakes_an_email_flood_and_the_invoice_fan_out(
    localstripe, save_card, slow_smtp, tmp_path
):
    group = GroupFactory()
    MembershipFactory(group=group, role="admin")
    save_card(group)
    payments.auto_top_up_configure(
        group=group,
        enabled=True,
        threshold_micros=1_000_000,
        amount_micros=25_000_000,
        actor=MembershipFactory(group=group, role="admin").user,
    )
    invoiced = [GroupFactory().pk for _ in range(20)]
    env = {
        **os.environ,
        "DJANGO_ENV": "test",
        "DATABASE_URL": launcher.database_url(connection.settings_dict),
        "CELERY_TASK_ALWAYS_EAGER": "false",
        "STRIPE_API_BASE": localstripe.base_url,
        "STRIPE_SECRET_KEY": "sk_test_localstripe",
        "INVOICE_STRIPE_MIRROR": "false",
        "EMAIL_URL": f"smtp://127.0.0.1:{slow_smtp.port}",
    }
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    celery_app.control.purge()  # nothing left over from another test
    procs = launcher.Processes(env, tmp_path / "logs")
    try:
        for queue in ("billing", "email"):
            command = launcher.worker_command(
                pool="solo", heartbeat=False, queues=[queue], name=f"{queue}@%h"
            )
            procs.start(queue, command)
        wait_for(
            lambda: procs.logged("billing", " ready.") and procs.logged("email", " ready."),
            90,
            "both workers ready",
        )
        with warnings.catch_warnings():  # send_task publishes to the broker even in eager mode
            warnings.simplefilter("ignore")
            with celery_app.producer_or_acquire() as producer:
                for _ in range(EMAILS):
                    celery_app.send_task(
                        "billing.tasks.email_admins_top_up_capped",
                        args=[group.pk, 5],
                        producer=producer,
                    )
                for i in range(INVOICES):
                    celery_app.send_task(
                        "billing.tasks.generate_invoice",
                        args=[invoiced[i % len(invoiced)], "2025-10"],
                        producer=producer,
                    )
                queued = time.monotonic()
                celery_app.send_task(
                    "billing.tasks.auto_top_up", args=[group.pk], producer=producer
                )

        wait_for(
            lambda: Payment.objects.filter(group=group, status="succeeded").exists(),
            30,
            "the top-up",
            every=0.02,
        )
        took = time.monotonic() - queued
        emails_waiting = queue_length(broker, "email")
        invoices_waiting = queue_length(broker, "billing", priority=9)
        print(
            f"top-up charged {took:.2f} s after it was queued; e-mails sent {slow_smtp.received}, "
            f"waiting {emails_waiting}; invoice tasks waiting {invoices_waiting}"
        )
        assert took < 3.0
        assert CreditAccount.objects.get(group=group).balance_micros == 25_000_000
        # It overtook them: most of both floods were still queued when it was charged, and the
        # e-mail worker was busy with them all along (not stuck: the isolation is not a stall).
        assert emails_waiting > EMAILS // 2
        assert invoices_waiting > INVOICES // 2
        wait_for(lambda: slow_smtp.received > 0, 10, "the e-mail worker's first e-mails")
    finally:
        celery_app.control.purge()
        procs.stop(grace=20)
        celery_app.control.purge()

"""Monthly partitions of usage_usageevent: the migration from the unpartitioned table on a filled
database, the partitions created ahead, and retention (usage/partitions.py,
billing/usage_retention.py)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django.db.models import Count, Max, Sum

from billing.invoicing import InvoiceError
from billing.invoicing.generation import invoice_generate
from billing.invoicing.periods import period_from_key
from billing.models import Invoice, LedgerEntry
from billing.usage_retention import apply_retention, blockers
from gateway.metering import METER_FIELDS, METER_SQL, _value
from keys.services import api_key_create
from tests.billing.invoice_world import usage
from usage import partitions
from usage.catalogue import catalogue_sync
from usage.models import AIModel, RollupState, UsageEvent, UsageRollup
from usage.rollups import rollup_range

pytestmark = pytest.mark.django_db

BEFORE = ("usage", "0010_usage_by_end_user_and_tag")
AFTER = ("usage", "0011_partition_usage_events")
MONTHS = [datetime(2025, m, 1, tzinfo=UTC) for m in (8, 9, 10, 11)]
NOW = datetime(2026, 12, 10, tzinfo=UTC)


@pytest.fixture
def world(group):  # type: ignore[no-untyped-def]
    catalogue_sync()
    return {
        "group": group,
        "model": AIModel.objects.get(name="sonar"),
        "key": api_key_create(group=group, name="Server").key,
    }


def migrate(target: tuple[str, str]) -> None:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate([target])


def meter_twice(world, at: datetime) -> str:  # type: ignore[no-untyped-def]
    """Meter one request twice with METER_SQL, as a retried metering does (same created)."""
    request_id = uuid.uuid4().hex
    row = {
        "request_id": request_id,
        "group_id": world["group"].pk,
        "key_id": world["key"].pk,
        "model_id": world["model"].pk,
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "citation_tokens": 0,
        "reasoning_tokens": 0,
        "search_queries": 0,
        "context_size": "low",
        "input": 700,
        "output": 300,
        "citation": 0,
        "reasoning": 0,
        "search": 0,
        "request": 5000,
        "total": 6000,
        "streamed": False,
        "latency_ms": 3,
        "created": at.timestamp(),
    }
    columns = [[_value(row, name)] for name in METER_FIELDS]
    with connection.cursor() as cursor:
        cursor.execute(METER_SQL, columns)
        cursor.execute(METER_SQL, columns)
    return request_id


def fingerprint() -> dict:
    return UsageEvent.objects.aggregate(
        n=Count("id"), cost=Sum("cost_micros"), tokens=Sum("prompt_tokens"), top=Max("id")
    )


def test_migration_partitions_a_filled_table(world):  # type: ignore[no-untyped-def]
    migrate(BEFORE)
    with connection.cursor() as cursor:
        assert not partitions.is_partitioned(cursor)
    for i, month in enumerate(MONTHS):
        for day in range(1, 4 + i):
            usage(world["group"], world["key"], world["model"], month + timedelta(days=day),
                  cost=1000 * day + i, prompt=10 + day)  # fmt: skip
    before = fingerprint()
    ids = set(UsageEvent.objects.values_list("id", "request_id", "created_at"))
    debits = LedgerEntry.objects.filter(kind="usage").count()

    migrate(AFTER)

    with connection.cursor() as cursor:
        assert partitions.is_partitioned(cursor)
        months = partitions.month_partitions(cursor)
        assert set(MONTHS) <= set(months)
        assert partitions.default_rows(cursor) == 0
        # Each month's rows are in its own partition.
        cursor.execute(f'SELECT count(*) FROM "{partitions.partition_name(MONTHS[2])}"')
        assert cursor.fetchone()[0] == 5
        cursor.execute(
            "SELECT conname FROM pg_constraint WHERE conrelid = 'usage_usageevent'::regclass "
            "AND contype IN ('p', 'u') ORDER BY 1"
        )
        assert [r[0] for r in cursor.fetchall()] == [
            "usage_event_request_once",
            "usage_usageevent_pkey",
        ]
    assert fingerprint() == before
    assert set(UsageEvent.objects.values_list("id", "request_id", "created_at")) == ids
    # New rows continue the old ids.
    late = usage(world["group"], world["key"], world["model"], MONTHS[1], cost=7)
    assert late.pk > before["top"]
    # Metering the same request twice inserts once and debits once, in an old month and now.
    for at in (MONTHS[0] + timedelta(hours=5), datetime.now(UTC)):
        request_id = meter_twice(world, at)
        assert UsageEvent.objects.filter(request_id=request_id).count() == 1
        assert LedgerEntry.objects.filter(reference=f"usage:{request_id}").count() == 1
    assert LedgerEntry.objects.filter(kind="usage").count() == debits + 3


def test_rows_written_while_converting_are_kept(world):  # type: ignore[no-untyped-def]
    """The trigger mirrors rows inserted during the copy (ids beyond the copied range)."""
    migrate(BEFORE)
    for day in range(12):
        usage(world["group"], world["key"], world["model"], MONTHS[0] + timedelta(days=day),
              cost=100 + day)  # fmt: skip
    written = []

    def meanwhile(_: str) -> None:
        if not written:  # the gateway meters while the batches are copied
            written.append(usage(world["group"], world["key"], world["model"], NOW, cost=5))

    result = partitions.convert(batch=1, progress=meanwhile)
    assert written and result.rows == 12
    assert UsageEvent.objects.filter(pk=written[0].pk, request_id=written[0].request_id).exists()
    assert UsageEvent.objects.count() == 13
    migrate(AFTER)  # records the migration; the table is already partitioned


def test_partitions_ahead_are_idempotent_and_take_rows_from_default(world):  # type: ignore[no-untyped-def]
    later = datetime(2031, 3, 15, tzinfo=UTC)
    created = partitions.ensure_ahead(now=later, ahead=3)
    assert created == [
        partitions.partition_name(datetime(2031, m, 1, tzinfo=UTC)) for m in (3, 4, 5, 6)
    ]
    assert partitions.ensure_ahead(now=later, ahead=3) == []
    # A row of a month without a partition lands in the default one; creating the month moves it.
    stray = usage(world["group"], world["key"], world["model"], datetime(2031, 9, 2, tzinfo=UTC),
                  cost=9)  # fmt: skip
    with connection.cursor() as cursor:
        assert partitions.default_rows(cursor) == 1
    assert partitions.ensure_ahead(now=datetime(2031, 9, 1, tzinfo=UTC), ahead=0) == [
        "usage_usageevent_y2031m09"
    ]
    with connection.cursor() as cursor:
        assert partitions.default_rows(cursor) == 0
        cursor.execute('SELECT request_id FROM "usage_usageevent_y2031m09"')
        assert cursor.fetchall() == [(stray.request_id,)]


def test_the_beat_task_creates_this_month_and_the_next_three(world):  # type: ignore[no-untyped-def]
    from usage.tasks import usage_partitions_ahead

    usage_partitions_ahead()
    now = datetime.now(UTC)
    with connection.cursor() as cursor:
        months = partitions.month_partitions(cursor)
    for n in range(4):
        assert partitions.add_months(partitions.month_of(now), n) in months
    assert usage_partitions_ahead() == []


def test_retention_waits_for_rollups_and_invoices(world, settings):  # type: ignore[no-untyped-def]
    settings.INVOICE_PERIOD = "month"
    august, september = MONTHS[0], MONTHS[1]
    with transaction.atomic(), connection.cursor() as cursor:
        for month in (august, september):
            partitions.ensure_month(cursor, month)
    for day in range(1, 6):
        usage(world["group"], world["key"], world["model"], august + timedelta(days=day),
              cost=1_000 * day)  # fmt: skip
    usage(world["group"], world["key"], world["model"], september + timedelta(days=3), cost=77)
    aug_name = partitions.partition_name(august)

    # Off unless the setting is set.
    assert apply_retention(now=NOW).dropped == []
    # Rollups not complete yet.
    run = apply_retention(now=NOW, months=3)
    assert run.dropped == [] and "rollups" in run.kept[aug_name][0]
    # Rolled up, but no invoice yet.
    rollup_range(august, NOW)
    RollupState.objects.update_or_create(pk=1, defaults={"rolled_through": NOW})
    assert "2025-08 is not fully invoiced" in blockers(august, NOW)[0]
    assert apply_retention(now=NOW, months=3).dropped == []
    invoice = invoice_generate(group=world["group"], period=period_from_key("2025-08")).invoice
    assert invoice is not None and invoice.usage_micros == 15_000
    # Invoiced, but a late event is not rolled up yet: its raw events differ from the rollups.
    late = usage(world["group"], world["key"], world["model"], august + timedelta(days=20),
                 cost=0)  # fmt: skip
    assert "raw events differ" in blockers(august, NOW)[0]
    rollup_range(august, september)
    assert blockers(august, NOW) == []

    # Too recent for the setting: nothing to do.
    assert apply_retention(now=datetime(2025, 10, 5, tzinfo=UTC), months=3).dropped == []
    # September is blocked (not invoiced): August goes, September stays.
    run = apply_retention(now=NOW, months=3)
    assert run.dropped == [aug_name]
    assert "2025-09 is not fully invoiced" in run.kept[partitions.partition_name(september)][0]
    with connection.cursor() as cursor:
        assert august not in partitions.month_partitions(cursor)
    assert not UsageEvent.objects.filter(pk=late.pk).exists()
    assert UsageEvent.objects.count() == 1
    # What stays: rollups, the invoice, the ledger's debits.
    assert (
        UsageRollup.objects.filter(period="day", start__gte=august, start__lt=september).aggregate(
            s=Sum("cost_micros")
        )["s"]
        == 15_000
    )
    assert Invoice.objects.filter(pk=invoice.pk).exists()
    assert LedgerEntry.objects.filter(kind="usage").aggregate(s=Sum("amount_micros"))["s"] == (
        -15_077
    )
    assert RollupState.objects.get(pk=1).raw_from == september
    # Rollups of dropped months are not recomputed (they would lose their dimensions)…
    rollup_range(august, september)
    assert UsageRollup.objects.filter(period="hour", start__lt=september).count() == 6
    # …and no invoice is written for a period whose raw events are gone.
    with pytest.raises(InvoiceError):
        invoice_generate(group=world["group"], period=period_from_key("2025-07"))
    # Once September is invoiced, it goes too (idempotent on August).
    invoice_generate(group=world["group"], period=period_from_key("2025-09"))
    assert apply_retention(now=NOW, months=3).dropped == [partitions.partition_name(september)]
    assert apply_retention(now=NOW, months=3).dropped == []

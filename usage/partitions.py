"""Monthly partitions of `usage_usageevent` (PostgreSQL declarative partitioning, RANGE on
`created_at`, UTC months) and the conversion of the unpartitioned table of earlier releases.

- One partition per month, `usage_usageevent_y2026m11` = [2026-11-01, 2026-12-01) UTC, and a
  DEFAULT partition (`usage_usageevent_default`) so an insert never fails, whatever its time.
  `ensure_ahead` (Celery beat, usage.tasks.usage_partitions_ahead) creates the current month and
  the next USAGE_PARTITIONS_AHEAD ones; a month whose rows already sit in the default partition
  (the task did not run for months, or a clock far ahead) gets them moved into its new partition.
- A month partition is created detached and then ATTACHed: ATTACH takes SHARE UPDATE EXCLUSIVE
  on the parent (inserts and reads go on), CREATE … PARTITION OF would take ACCESS EXCLUSIVE.
- `drop_month` detaches and drops one month: O(1), whatever its size. Which months may go is the
  billing layer's decision (billing.usage_retention): never before their rollups and invoices.
- Keys: the primary key is (id, created_at) and the exactly-once key is
  UNIQUE (request_id, created_at) — on a partitioned table every unique index must contain the
  partition key. A retried metering of one request carries the same `created` (docs/gateway.md,
  "Exactly once"), and the ledger debit's unique reference (`usage:<request_id>`) still allows
  one debit per request id whatever the event's time.

`convert` turns the unpartitioned table into the partitioned one without a long lock (the
migration usage 0011 calls it; benchmarks/usage/partitions.py measures it): see its docstring.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

TABLE = "usage_usageevent"
DEFAULT = f"{TABLE}_default"
NEW = f"{TABLE}_p"  # the partitioned table while `convert` fills it
MIRROR = f"{TABLE}_mirror"  # the trigger (and its function) copying new rows during `convert`
SEQUENCE = f"{TABLE}_id_seq"
UNIQUE = "usage_event_request_once"  # UNIQUE (request_id, created_at); the model's constraint
PKEY = f"{TABLE}_pkey"
LOCK_TIMEOUT = "5s"  # DDL waits at most this for its lock (then fails; the next run retries)
_MONTH_NAME = re.compile(rf"^{TABLE}_y(\d{{4}})m(\d{{2}})$")


def month_of(moment: datetime) -> datetime:
    """The first instant of `moment`'s UTC month."""
    moment = moment.astimezone(UTC)
    return datetime(moment.year, moment.month, 1, tzinfo=UTC)


def add_months(month: datetime, n: int) -> datetime:
    index = month.year * 12 + month.month - 1 + n
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def partition_name(month: datetime) -> str:
    return f"{TABLE}_y{month.year:04d}m{month.month:02d}"


def is_partitioned(cursor: Any, table: str = TABLE) -> bool:
    cursor.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)", [f"public.{table}"])
    row = cursor.fetchone()
    return row is not None and row[0] == "p"


def month_partitions(cursor: Any, parent: str = TABLE) -> dict[datetime, str]:
    """The attached month partitions of `parent`: {month start: table name}."""
    cursor.execute(
        """SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
            WHERE i.inhparent = to_regclass(%s)""",
        [f"public.{parent}"],
    )
    found = {}
    for (name,) in cursor.fetchall():
        if m := _MONTH_NAME.match(name):
            found[datetime(int(m[1]), int(m[2]), 1, tzinfo=UTC)] = name
    return found


def ensure_month(cursor: Any, month: datetime, parent: str = TABLE) -> bool:
    """Create and attach `month`'s partition unless it exists; True when created. Rows of that
    month already in the default partition are moved into it. Call inside a transaction."""
    month = month_of(month)
    name = partition_name(month)
    if month in month_partitions(cursor, parent):
        return False
    start, end = month, add_months(month, 1)
    cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
    cursor.execute(
        f'CREATE TABLE "{name}" (LIKE "{parent}" INCLUDING DEFAULTS INCLUDING CONSTRAINTS)'
    )
    # The same bounds as a CHECK: ATTACH then need not scan the new table.
    cursor.execute(
        f'ALTER TABLE "{name}" ADD CONSTRAINT "{name}_bounds" '
        "CHECK (created_at >= %s AND created_at < %s)",
        [start, end],
    )
    cursor.execute("SELECT to_regclass(%s)", [f"public.{DEFAULT}"])
    if parent == TABLE and cursor.fetchone()[0] is not None:
        cursor.execute(
            f"""WITH moved AS (DELETE FROM "{DEFAULT}" WHERE created_at >= %s AND created_at < %s
                RETURNING *) INSERT INTO "{name}" SELECT * FROM moved""",
            [start, end],
        )
    cursor.execute(
        f'ALTER TABLE "{parent}" ATTACH PARTITION "{name}" FOR VALUES FROM (%s) TO (%s)',
        [start, end],
    )
    cursor.execute(f'ALTER TABLE "{name}" DROP CONSTRAINT "{name}_bounds"')
    return True


def ensure_ahead(now: datetime | None = None, ahead: int | None = None) -> list[str]:
    """The current month's partition and the next `ahead` (USAGE_PARTITIONS_AHEAD) months';
    returns the names created (none when they all exist: safe to run any number of times)."""
    now = now or timezone.now()
    ahead = settings.USAGE_PARTITIONS_AHEAD if ahead is None else ahead
    created = []
    with connection.cursor() as cursor:
        if not is_partitioned(cursor):
            return []
        for n in range(ahead + 1):
            month = add_months(month_of(now), n)
            with transaction.atomic():
                if ensure_month(cursor, month):
                    created.append(partition_name(month))
    return created


def default_rows(cursor: Any) -> int:
    cursor.execute(f'SELECT count(*) FROM "{DEFAULT}"')
    return int(cursor.fetchone()[0])


def drop_month(month: datetime) -> bool:
    """Detach and drop one month's partition (its raw events): O(1). True when dropped. Only
    billing.usage_retention decides which months may go."""
    month = month_of(month)
    with transaction.atomic(), connection.cursor() as cursor:
        name = month_partitions(cursor).get(month)
        if name is None:
            return False
        cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        # Not CONCURRENTLY: PostgreSQL refuses it while a default partition exists. The plain
        # DETACH holds the parent's ACCESS EXCLUSIVE lock for a moment (no scan, no copy).
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # see _swap
        cursor.execute(f'ALTER TABLE "{TABLE}" DETACH PARTITION "{name}"')
        cursor.execute(f'DROP TABLE "{name}"')
    return True


# --- converting the unpartitioned table of earlier releases ----------------------------------


@dataclass
class Conversion:
    """What `convert` did and how long each step took (seconds)."""

    rows: int = 0
    months: list[str] = field(default_factory=list)
    prepare: float = 0.0
    copy: float = 0.0
    swap: float = 0.0  # the only step that blocks writers (ACCESS EXCLUSIVE on the old table)
    batches: int = 0


def _old_indexes(cursor: Any) -> list[tuple[str, str]]:
    """(name, definition) of the old table's plain indexes, but those on request_id (replaced by
    the unique (request_id, created_at)) and the primary key's."""
    cursor.execute(
        """SELECT i.relname, pg_get_indexdef(x.indexrelid) FROM pg_index x
             JOIN pg_class i ON i.oid = x.indexrelid
            WHERE x.indrelid = to_regclass(%s) AND NOT x.indisprimary AND NOT x.indisunique""",
        [f"public.{TABLE}"],
    )
    return [(n, d) for n, d in cursor.fetchall() if "(request_id" not in d]


def _foreign_keys(cursor: Any, table: str) -> list[tuple[str, str]]:
    cursor.execute(
        """SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint
            WHERE conrelid = to_regclass(%s) AND contype = 'f'""",
        [f"public.{table}"],
    )
    return list(cursor.fetchall())


def _prepare(cursor: Any, now: datetime) -> None:
    """The empty partitioned table NEW beside the old one, with every constraint and index (temp
    names for the index-backed ones), the default partition, this month and the next ones, and
    the trigger that copies each new row of the old table into it."""
    cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
    cursor.execute(
        f'CREATE TABLE "{NEW}" (LIKE "{TABLE}" INCLUDING DEFAULTS INCLUDING CONSTRAINTS) '
        "PARTITION BY RANGE (created_at)"
    )
    cursor.execute(f'CREATE SEQUENCE "{NEW}_id_seq"')
    cursor.execute(f"""ALTER TABLE "{NEW}" ALTER COLUMN id SET DEFAULT nextval('"{NEW}_id_seq"')""")
    cursor.execute(f'ALTER TABLE "{NEW}" ADD CONSTRAINT "{NEW}_pkey" PRIMARY KEY (id, created_at)')
    cursor.execute(
        f'ALTER TABLE "{NEW}" ADD CONSTRAINT "{UNIQUE}_p" UNIQUE (request_id, created_at)'
    )
    for name, definition in _foreign_keys(cursor, TABLE):  # names are per table: kept
        cursor.execute(f'ALTER TABLE "{NEW}" ADD CONSTRAINT "{name}" {definition}')
    for name, definition in _old_indexes(cursor):
        definition = definition.replace(f"INDEX {name} ON", f'INDEX "{name}_p" ON', 1)
        definition = definition.replace(f" ON public.{TABLE} ", f' ON public."{NEW}" ', 1)
        cursor.execute(definition)
    cursor.execute(f'CREATE TABLE "{DEFAULT}" PARTITION OF "{NEW}" DEFAULT')
    for n in range(settings.USAGE_PARTITIONS_AHEAD + 1):
        ensure_month(cursor, add_months(month_of(now), n), parent=NEW)
    cursor.execute(
        f"""CREATE FUNCTION "{MIRROR}"() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                INSERT INTO "{NEW}" SELECT NEW.* ON CONFLICT DO NOTHING;
                RETURN NULL;
            END $$"""
    )
    # Waits for the transactions inserting into the old table right now (ROW EXCLUSIVE), so
    # every row is either committed before it (the batches copy it) or mirrored by it.
    cursor.execute(
        f'CREATE TRIGGER "{MIRROR}" AFTER INSERT ON "{TABLE}" '
        f'FOR EACH ROW EXECUTE FUNCTION "{MIRROR}"()'
    )


def _swap(cursor: Any) -> None:
    """Under a short ACCESS EXCLUSIVE lock: drop the old table, NEW takes its names."""
    cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
    cursor.execute(f'LOCK TABLE "{TABLE}" IN ACCESS EXCLUSIVE MODE')
    cursor.execute(f'SELECT coalesce(max(id), 0) FROM "{TABLE}"')
    last = cursor.fetchone()[0]
    if last:
        cursor.execute(f"""SELECT setval('"{NEW}_id_seq"', %s)""", [last])
    names = [name for name, _ in _old_indexes(cursor)]
    # Django's foreign keys are deferred: check now what this transaction inserted (nothing but
    # in tests), as a table with pending checks cannot be dropped.
    cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    cursor.execute(f'DROP TABLE "{TABLE}"')  # its trigger and identity sequence go with it
    cursor.execute(f'DROP FUNCTION "{MIRROR}"()')
    cursor.execute(f'ALTER TABLE "{NEW}" RENAME TO "{TABLE}"')
    cursor.execute(f'ALTER TABLE "{TABLE}" RENAME CONSTRAINT "{NEW}_pkey" TO "{PKEY}"')
    cursor.execute(f'ALTER TABLE "{TABLE}" RENAME CONSTRAINT "{UNIQUE}_p" TO "{UNIQUE}"')
    for name in names:
        cursor.execute(f'ALTER INDEX "{name}_p" RENAME TO "{name}"')
    cursor.execute(f'ALTER SEQUENCE "{NEW}_id_seq" RENAME TO "{SEQUENCE}"')
    cursor.execute(f'ALTER SEQUENCE "{SEQUENCE}" OWNED BY "{TABLE}".id')
    cursor.execute(f"""ALTER TABLE "{TABLE}" ALTER COLUMN id SET DEFAULT nextval('"{SEQUENCE}"')""")


def convert(
    *,
    batch: int = 100_000,
    now: datetime | None = None,
    progress: Callable[[str], None] | None = None,
) -> Conversion:
    """Partition `usage_usageevent` by month, on a filled table, while the gateway keeps writing.

    1. (one short transaction) create the partitioned table beside the old one, with its keys,
       indexes, the default partition and this month's and the next ones, and a trigger on the
       old table that copies every new row into it;
    2. copy the old rows by primary-key ranges of `batch` rows, one transaction each (the months
       met are created first, so nothing lands in the default partition); a row the trigger
       already copied inserts nothing (ON CONFLICT DO NOTHING). Writers are never blocked;
    3. (one short transaction, ACCESS EXCLUSIVE on the old table) the sequence moves past the
       old ids, the old table is dropped and the new one takes its names. Nothing is left to
       copy here: the trigger kept the new table complete.
    Usage events are insert-only (nothing updates or deletes one), which this relies on.
    Must run outside a transaction (each step commits). Does nothing on a partitioned table.
    """
    say = progress or (lambda _: None)
    now = now or timezone.now()
    result = Conversion()
    with connection.cursor() as cursor:
        if is_partitioned(cursor):
            return result
        started = time.perf_counter()
        with transaction.atomic():
            _prepare(cursor, now)
        result.prepare = time.perf_counter() - started
        cursor.execute(f'SELECT min(id), max(id) FROM "{TABLE}"')
        low, high = cursor.fetchone()
        started = time.perf_counter()
        known = set(month_partitions(cursor, NEW))
        if low is not None:
            for start in range(low - 1, high, batch):
                with transaction.atomic():
                    bounds = [start, start + batch]
                    cursor.execute(
                        f"""SELECT DISTINCT date_trunc('month', created_at AT TIME ZONE 'UTC')
                              FROM "{TABLE}" WHERE id > %s AND id <= %s""",
                        bounds,
                    )
                    for (month,) in cursor.fetchall():
                        month = month.replace(tzinfo=UTC)
                        if month not in known:
                            ensure_month(cursor, month, parent=NEW)
                            known.add(month)
                    cursor.execute(
                        f"""INSERT INTO "{NEW}" SELECT * FROM "{TABLE}"
                             WHERE id > %s AND id <= %s ON CONFLICT DO NOTHING""",
                        bounds,
                    )
                    result.rows += cursor.rowcount
                result.batches += 1
                if result.batches % 10 == 0:
                    say(f"copied {result.rows:,} rows")
        result.copy = time.perf_counter() - started
        started = time.perf_counter()
        with transaction.atomic():
            _swap(cursor)
        result.swap = time.perf_counter() - started
        result.months = sorted(month_partitions(cursor).values())
    say(f"partitioned: {result.rows:,} rows copied, {len(result.months)} month partitions")
    return result


def unconvert() -> None:
    """The reverse (migrating back): one plain table again, in one transaction (a long lock on a
    big table; only meant for going back on a development or test database)."""
    with transaction.atomic(), connection.cursor() as cursor:
        if not is_partitioned(cursor):
            return
        cursor.execute(
            """SELECT i.relname, pg_get_indexdef(x.indexrelid) FROM pg_index x
                 JOIN pg_class i ON i.oid = x.indexrelid
                WHERE x.indrelid = to_regclass(%s) AND NOT x.indisprimary AND NOT x.indisunique""",
            [f"public.{TABLE}"],
        )
        indexes = cursor.fetchall()
        fks = _foreign_keys(cursor, TABLE)
        plain = f"{TABLE}_plain"
        cursor.execute(
            f'CREATE TABLE "{plain}" (LIKE "{TABLE}" INCLUDING DEFAULTS INCLUDING CONSTRAINTS)'
        )
        cursor.execute(f'INSERT INTO "{plain}" SELECT * FROM "{TABLE}"')
        cursor.execute(f'SELECT coalesce(max(id), 0) FROM "{TABLE}"')
        last = cursor.fetchone()[0]
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute(f'DROP TABLE "{TABLE}" CASCADE')  # its partitions and sequence too
        cursor.execute(f'ALTER TABLE "{plain}" RENAME TO "{TABLE}"')
        cursor.execute(f'ALTER TABLE "{TABLE}" ALTER COLUMN id DROP DEFAULT')
        cursor.execute(
            f'ALTER TABLE "{TABLE}" ALTER COLUMN id ADD GENERATED BY DEFAULT AS IDENTITY '
            f"(START WITH {int(last) + 1})"
        )
        cursor.execute(f'ALTER TABLE "{TABLE}" ADD CONSTRAINT "{PKEY}" PRIMARY KEY (id)')
        cursor.execute(
            f'ALTER TABLE "{TABLE}" ADD CONSTRAINT "{TABLE}_request_id_key" UNIQUE (request_id)'
        )
        for name, definition in fks:
            cursor.execute(f'ALTER TABLE "{TABLE}" ADD CONSTRAINT "{name}" {definition}')
        for _name, definition in indexes:
            cursor.execute(definition.replace(" ON ONLY ", " ON ", 1))


# --- what retention checks before dropping a month --------------------------------------------


def raw_vs_rollups(month: datetime) -> list[str]:
    """The groups whose raw events of `month` differ from the hourly rollups (requests or cost),
    as "group 12: raw 3 requests / 4500 µ$, rolled up 2 / 3000"; empty when they agree. Reads the
    month's partition once (a scan, done only for a month about to be dropped)."""
    month = month_of(month)
    with connection.cursor() as cursor:
        name = month_partitions(cursor).get(month)
        if name is None:
            return []
        cursor.execute(
            f"""WITH raw AS (SELECT group_id, count(*) AS requests, sum(cost_micros) AS cost
                               FROM "{name}" GROUP BY 1),
                     rolled AS (SELECT group_id, sum(requests) AS requests,
                                       sum(cost_micros) AS cost
                                  FROM usage_usagerollup
                                 WHERE period = 'hour' AND start >= %s AND start < %s
                                 GROUP BY 1)
                SELECT coalesce(r.group_id, u.group_id), coalesce(r.requests, 0),
                       coalesce(r.cost, 0), coalesce(u.requests, 0), coalesce(u.cost, 0)
                  FROM raw r FULL JOIN rolled u ON u.group_id = r.group_id
                 WHERE r.requests IS DISTINCT FROM u.requests OR r.cost IS DISTINCT FROM u.cost
                 ORDER BY 1""",
            [month, add_months(month, 1)],
        )
        return [
            f"group {g}: raw {rq} requests / {rc} µ$, rolled up {uq} / {uc}"
            for g, rq, rc, uq, uc in cursor.fetchall()
        ]

"""Partitioning a filled usage_usageevent (migration usage 0011) while the gateway keeps metering.

    python -m portal.devstack exec -- .venv/bin/python benchmarks/usage/partitions.py [--events N]

Uses its own database (`<DATABASE_URL's name>_bench_partitions`): migrates it, takes usage back
to the unpartitioned table of 0010, fills it with --events events over 12 months, then runs the
real conversion (usage.partitions.convert, what the migration runs) while a writer thread
inserts an event every --every ms the way METER_SQL does (ON CONFLICT DO NOTHING). Reports the
time of each step, the copy rate, the writer's worst insert latency (what "without long locks"
means) and checks every row is there. Results go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.common import machine, use_bench_database, write_section  # noqa: E402

SEED_SQL = """
INSERT INTO usage_usageevent (request_id, group_id, api_key_id, model_id, prompt_tokens,
    completion_tokens, citation_tokens, reasoning_tokens, search_queries, search_context_size,
    input_cost_micros, output_cost_micros, citation_cost_micros, reasoning_cost_micros,
    search_cost_micros, request_cost_micros, cost_micros, streamed, latency_ms, created_at)
SELECT md5('bench' || n), %(group)s, %(key)s, %(model)s, 100 + n %% 900, 20 + n %% 300, 0, 0, 0,
       'low', 0, 0, 0, 0, 0, 5000, 5000 + n %% 1000, false, 800,
       %(start)s::timestamptz + (n::float8 / %(total)s) * interval '365 days'
  FROM generate_series(%(lo)s, %(hi)s) n
"""
WRITE_SQL = """
INSERT INTO usage_usageevent (request_id, group_id, api_key_id, model_id, prompt_tokens,
    completion_tokens, citation_tokens, reasoning_tokens, search_queries, search_context_size,
    input_cost_micros, output_cost_micros, citation_cost_micros, reasoning_cost_micros,
    search_cost_micros, request_cost_micros, cost_micros, streamed, latency_ms, created_at)
VALUES (%s, %s, %s, %s, 10, 5, 0, 0, 0, 'low', 0, 0, 0, 0, 0, 5000, 5000, false, 1, now())
ON CONFLICT DO NOTHING
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=100_000, help="rows per copy transaction")
    parser.add_argument("--every", type=float, default=5.0, help="ms between the writer's inserts")
    parser.add_argument("--write", default=str(ROOT / "docs" / "benchmarks.md"))
    ns = parser.parse_args()

    use_bench_database("bench_partitions")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    os.environ["LOG_LEVEL"] = "WARNING"
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection, connections
    from django.db.migrations.executor import MigrationExecutor

    from accounts.models import User
    from groups.models import APIGroup
    from groups.services import api_group_create
    from keys.services import api_key_create
    from usage import partitions
    from usage.catalogue import catalogue_sync
    from usage.models import AIModel

    def migrate(target: tuple[str, str]) -> None:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate([target])

    call_command("migrate", verbosity=0)
    catalogue_sync()
    with connection.cursor() as c:
        c.execute("TRUNCATE usage_usageevent")  # this database is the benchmark's own
    migrate(("usage", "0010_usage_by_end_user_and_tag"))
    user, _ = User.objects.get_or_create(email="partitions@bench.example")
    group = APIGroup.objects.filter(name="Partition bench").first() or api_group_create(
        creator=user, name="Partition bench"
    )
    key = api_key_create(group=group, name="bench").key
    model = AIModel.objects.get(name="sonar")
    started = time.perf_counter()
    step = 1_000_000
    for lo in range(1, ns.events + 1, step):
        with connection.cursor() as c:
            c.execute(
                SEED_SQL,
                {"group": group.pk, "key": key.pk, "model": model.pk, "start": "2025-12-01",
                 "total": ns.events, "lo": lo, "hi": min(lo + step - 1, ns.events)},
            )  # fmt: skip
    with connection.cursor() as c:
        c.execute("VACUUM ANALYZE usage_usageevent")
    seed = time.perf_counter() - started
    print(f"seeded {ns.events:,} events in {seed:.1f} s", flush=True)

    latencies: list[float] = []
    stop = threading.Event()

    def writer() -> None:
        n = 0
        with connections["default"].cursor() as c:
            while not stop.is_set():
                n += 1
                t = time.perf_counter()
                c.execute(WRITE_SQL, [f"w{time.time_ns()}-{n}", group.pk, key.pk, model.pk])
                latencies.append(time.perf_counter() - t)
                time.sleep(ns.every / 1000)
        connections["default"].close()

    thread = threading.Thread(target=writer)
    thread.start()
    time.sleep(0.3)
    try:
        result = partitions.convert(batch=ns.batch, progress=lambda m: print(m, flush=True))
    finally:
        time.sleep(0.3)
        stop.set()
        thread.join()
    migrate(("usage", "0011_partition_usage_events"))  # records it (the table is done)
    with connection.cursor() as c:
        c.execute("SELECT count(*) FROM usage_usageevent")
        total = c.fetchone()[0]
        c.execute("SELECT count(*) FROM usage_usageevent_default")
        stray = c.fetchone()[0]
    expected = ns.events + len(latencies)
    assert total == expected, (total, expected)
    worst = max(latencies) * 1000
    p99 = statistics.quantiles(latencies, n=100)[98] * 1000
    rate = result.rows / result.copy if result.copy else 0.0
    est = (10_000_000 / rate) if rate else 0.0
    lines = [
        "## Partitioning usage_usageevent on a filled table (migration usage 0011)",
        "",
        f"`python -m portal.devstack exec -- .venv/bin/python benchmarks/usage/partitions.py "
        f"--events {ns.events}` on {machine()}, {time.strftime('%Y-%m-%d')}: {ns.events:,} events "
        f"over 12 months, copied {ns.batch:,} rows per transaction while a writer inserted an "
        f"event every {ns.every:g} ms.",
        "",
        "| step | time |",
        "|---|---|",
        f"| prepare (partitioned table, keys, indexes, trigger) | {result.prepare * 1000:.0f} ms |",
        f"| copy ({result.batches} batches, {len(result.months)} month partitions) | "
        f"{result.copy:.1f} s ({rate:,.0f} rows/s) |",
        f"| swap (the only exclusive lock) | {result.swap * 1000:.0f} ms |",
        f"| 10 M rows at this rate (extrapolated) | {est / 60:.1f} min |",
        "",
        f"Writer during the conversion: {len(latencies):,} inserts, p99 {p99:.1f} ms, worst "
        f"{worst:.1f} ms; every row present afterwards ({total:,}), {stray} in the default "
        "partition.",
    ]
    write_section(ns.write, "partitions", lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()

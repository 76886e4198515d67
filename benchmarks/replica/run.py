"""Usage Metrics on a read replica vs the primary, while the primary takes metering load.

    python -m portal.devstack exec -- .venv/bin/python benchmarks/replica/run.py

Starts its own PostgreSQL primary and a streaming replica of it (portal.launcher.PostgresCluster,
`pg_basebackup -R`; loopback, throwaway), configures the portal with DATABASE_URL +
DATABASE_REPLICA_URL (so the settings' router and middleware are the production ones), migrates,
seeds one group with --events usage events over 7 days and rolls them up. Then, for each of
"replica" and "primary" (the replica switched off by a lag bound below zero), a writer process
inserts usage events into the primary in batches of 50 (as the gateway's group commit does) while
this process requests the Usage Metrics page (`?range=7d`, Django's full stack: session, auth,
query, template) one after another for --seconds. Reports dashboard requests/s, p50/p95, the
writer's rows/s and the replica's largest lag. Results go to docs/benchmarks.md ("replica").
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.common import machine, write_section  # noqa: E402
from portal.launcher import PostgresCluster, wait_for  # noqa: E402

BATCH = 50


def writer(url: str, template_id: int, rate: float, stop: Any, out: Any) -> None:
    """Insert BATCH copies of the template event per statement and commit, `rate` rows a second,
    until `stop`; put (rows written, [(when, statement latency in ms)]) on `out`."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cols = [
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name ="
                " 'usage_usageevent' AND column_name NOT IN ('id', 'request_id', 'created_at')"
            )
        ]
        names = ", ".join(cols)
        sql = (
            f"INSERT INTO usage_usageevent (request_id, created_at, {names}) SELECT"
            f" md5(random()::text || g), clock_timestamp(), {names} FROM usage_usageevent,"
            f" generate_series(1, {BATCH}) g WHERE id = %s"
        )
        latencies: list[tuple[float, float]] = []
        started = time.perf_counter()
        while not stop.is_set():
            t = time.perf_counter()
            conn.execute(sql, (template_id,))
            latencies.append((time.time(), (time.perf_counter() - t) * 1000))
            ahead = started + len(latencies) * BATCH / rate - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)
        out.put((len(latencies) * BATCH, latencies))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=12.0, help="per target, all rounds")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--rate", type=float, default=1000.0, help="usage rows/s the writer adds")
    parser.add_argument("--write", default=str(ROOT / "docs" / "benchmarks.md"))
    ns = parser.parse_args()

    reason = PostgresCluster.replication_unavailable()
    if reason:
        sys.exit(f"cannot start a streaming replica: {reason}")
    base = Path(tempfile.mkdtemp(prefix="bench-replica-"))
    (base / "primary").mkdir()
    (base / "standby").mkdir()
    os.chmod(base, 0o755)
    primary = PostgresCluster(base / "primary")
    primary.start()
    standby: PostgresCluster | None = None
    try:
        primary.create_database()
        standby = PostgresCluster(base / "standby", standby_of=primary)
        standby.start()
        results = run(ns, primary, standby)
    finally:
        for server in (standby, primary):
            if server is not None:
                try:
                    server.stop()
                except Exception as exc:
                    print(f"could not stop a server: {exc}")
        shutil.rmtree(base, ignore_errors=True)
    report(ns, results)


def run(ns: argparse.Namespace, primary: PostgresCluster, standby: PostgresCluster) -> dict:
    os.environ["DATABASE_URL"] = primary.url
    os.environ["DATABASE_REPLICA_URL"] = standby.url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    os.environ["DEBUG"] = "false"
    os.environ["LOG_LEVEL"] = "ERROR"
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.test import Client
    from django.utils import timezone

    from accounts.models import User
    from core import replica
    from groups.services import api_group_create
    from usage.catalogue import catalogue_sync
    from usage.models import UsageEvent
    from usage.rollups import rollup_range, rollup_recent

    t0 = time.perf_counter()
    call_command("migrate", verbosity=0)
    catalogue_sync()
    user = User.objects.create(email="bench@replica.example")
    group = api_group_create(creator=user, name="Bench Replica")
    call_command("seed_usage", group=group.public_id, events=ns.events, days=7, keys=10, seed=7)
    rollup_range(timezone.now() - timezone.timedelta(days=8), timezone.now())
    rollup_recent()
    template = UsageEvent.objects.filter(group=group).order_by("id").values_list("id", flat=True)
    template_id = template.first()
    print(
        f"migrated and seeded {ns.events:,} events in {time.perf_counter() - t0:.1f}s", flush=True
    )

    def lag() -> float:
        value = replica.replica_lag(refresh=True)
        return -1.0 if value is None else value

    wait_for(lambda: lag() == 0, 120, "the replica to catch up", every=0.5)

    client = Client()
    client.force_login(user)
    url = f"/g/{group.public_id}/usage/?range=7d"
    settings.DATABASE_REPLICA_LAG_CACHE_SECONDS = 2.0
    ctx = multiprocessing.get_context("fork")
    targets = {"replica": 10.0, "primary": -1.0}  # the lag bound; below zero: the primary
    for max_lag in targets.values():  # warm both connections and caches
        settings.DATABASE_REPLICA_MAX_LAG_SECONDS = max_lag
        replica.reset_health()
        for _ in range(5):
            assert client.get(url).status_code == 200
    stop, out = ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=writer, args=(primary.url, template_id, ns.rate, stop, out))
    proc.start()
    time.sleep(1.0)  # the writer is running
    # Alternate short slots, so that load from elsewhere on the machine and the growing table
    # weigh on both alike; each slot starts after a rollup, as the minutely task leaves it.
    times: dict[str, list[float]] = {t: [] for t in targets}
    slots: dict[str, list[tuple[float, float]]] = {t: [] for t in targets}
    busy = dict.fromkeys(targets, 0.0)
    lags: list[float] = []
    reads = {db: replica.READS.labels(db)._value.get() for db in ("replica", "default")}
    for _ in range(ns.rounds):
        for target, max_lag in targets.items():
            settings.DATABASE_REPLICA_MAX_LAG_SECONDS = max_lag
            rollup_recent()
            replica.reset_health()
            begin, started = time.time(), time.perf_counter()
            next_lag = started
            while time.perf_counter() - started < ns.seconds / ns.rounds:
                t = time.perf_counter()
                response = client.get(url)
                times[target].append((time.perf_counter() - t) * 1000)
                assert response.status_code == 200, response.status_code
                if t >= next_lag:
                    lags.append(lag())
                    next_lag = t + 0.5
            busy[target] += time.perf_counter() - started
            slots[target].append((begin, time.time()))
    stop.set()
    written, writes = out.get(timeout=30)
    proc.join(10)
    served = {db: replica.READS.labels(db)._value.get() - before for db, before in reads.items()}
    print(f"writer: {written:,} rows; page reads served by {served}; largest lag {max(lags):.2f}s")
    phases: dict[str, dict] = {}
    for target in targets:
        ts = sorted(times[target])
        ws = sorted(ms for when, ms in writes if any(a <= when < b for a, b in slots[target]))
        phases[target] = p = {
            "rps": len(ts) / busy[target],
            "p50": statistics.median(ts),
            "p95": ts[max(0, int(len(ts) * 0.95) - 1)],
            "write_p50": statistics.median(ws),
            "write_p95": ws[max(0, int(len(ws) * 0.95) - 1)],
            "max_lag": max(lags),
        }
        print(
            f"{target:8} {p['rps']:6.1f} req/s  p50 {p['p50']:6.1f} ms  p95 {p['p95']:6.1f} ms"
            f"  insert p50 {p['write_p50']:5.1f} ms p95 {p['write_p95']:5.1f} ms",
            flush=True,
        )
    phases["_events"] = {"total": UsageEvent.objects.count()}
    return phases


def report(ns: argparse.Namespace, phases: dict) -> None:
    total = phases.pop("_events")["total"]
    lines = [
        "## Usage Metrics on a read replica under metering load (`benchmarks/replica`)",
        "",
        "Command: `python -m portal.devstack exec -- .venv/bin/python benchmarks/replica/run.py`",
        "",
        f"Machine: {machine()}, shared with other work; a private PostgreSQL primary and a"
        " streaming",
        "replica of it (pg_basebackup -R) on the same machine, so they share its cores. One group"
        f" with {ns.events:,}",
        f"events over 7 days, rolled up ({total:,} rows at the end). A writer process inserts usage",
        f"events into the primary, {BATCH} per statement and commit, {ns.rate:,.0f} rows/s"
        " (metering load); meanwhile",
        "the page `GET /g/<id>/usage/?range=7d` is requested back to back through Django's full"
        " stack, in",
        f"{ns.rounds} alternating slots per target, {ns.seconds:g} s per target in all; each slot"
        " starts after a rollup,",
        'as the minutely task leaves it. "primary" is the same configuration with the replica'
        " refused by a lag",
        "bound below zero (every request falls back to the primary). Insert latency: one 50-row"
        " statement,",
        "during that target's slots.",
        "",
        "| dashboards read | requests/s | p50 (ms) | p95 (ms) | insert p50 / p95 (ms) | largest lag (s) |",
        "|---|---|---|---|---|---|",
        *(
            f"| {name} | {p['rps']:.1f} | {p['p50']:.1f} | {p['p95']:.1f} |"
            f" {p['write_p50']:.1f} / {p['write_p95']:.1f} | {p['max_lag']:.2f} |"
            for name, p in phases.items()
        ),
    ]
    write_section(ns.write, "replica", lines)
    print(f"results written to {ns.write}")


if __name__ == "__main__":
    main()

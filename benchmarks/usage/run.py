"""Usage dashboard benchmark: server time of the Usage Metrics page at tens of millions of events.

    python -m portal.devstack exec -- .venv/bin/python benchmarks/usage/run.py [--events N]

Uses its own database (`<DATABASE_URL's name>_bench_usage`) on the same server, seeds one group
with --events events over 90 days plus other groups' noise (skipped when already seeded), rolls
them up, then requests the page for every preset --repeat times through Django's full stack
(middleware, auth, query, template) and reports p50/p95. Results go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.common import machine, use_bench_database, write_section  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument(
        "--noise", type=int, default=1_000_000, help="events spread over 3 other groups"
    )
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--write", default=str(ROOT / "docs" / "benchmarks.md"))
    ns = parser.parse_args()

    use_bench_database("bench_usage")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    os.environ["DEBUG"] = "false"
    os.environ["LOG_LEVEL"] = "WARNING"
    import django

    django.setup()
    from django.core.management import call_command
    from django.test import Client

    from accounts.models import User
    from groups.models import APIGroup
    from groups.services import api_group_create
    from usage.catalogue import catalogue_sync
    from usage.models import UsageEvent
    from usage.rollups import rollup_recent

    call_command("migrate", verbosity=0)
    catalogue_sync()

    def group_named(name: str) -> APIGroup:
        user, _ = User.objects.get_or_create(
            email=f"{name.lower().replace(' ', '-')}@bench.example"
        )
        group = APIGroup.objects.filter(name=name, memberships__user=user).first()
        return group or api_group_create(creator=user, name=name)

    main_group = group_named("Bench Usage")
    targets = [(main_group, ns.events)] + [
        (group_named(f"Noise {i}"), ns.noise // 3) for i in range(3)
    ]
    for group, count in targets:
        have = UsageEvent.objects.filter(group=group).count()
        if have < count:
            print(f"seeding {group.name}: {count - have:,} events", flush=True)
            call_command(
                "seed_usage",
                group=group.public_id,
                events=count - have,
                days=90,
                keys=20,
                seed=hash(group.name) % 1000,
            )
    rollup_recent()
    total = UsageEvent.objects.count()

    client = Client()
    admin = main_group.memberships.get().user
    client.force_login(admin)
    url = f"/g/{main_group.public_id}/usage/"
    results = []
    for tz in ("UTC", "Europe/Berlin"):
        User.objects.filter(pk=admin.pk).update(time_zone=tz)
        for preset in ("24h", "7d", "30d", "90d", "this_month", "last_month"):
            for _ in range(3):
                client.get(f"{url}?range={preset}")
            times = []
            for _ in range(ns.repeat):
                t = time.perf_counter()
                response = client.get(f"{url}?range={preset}")
                times.append((time.perf_counter() - t) * 1000)
                assert response.status_code == 200
            times.sort()
            p50 = statistics.median(times)
            p95 = times[max(0, int(len(times) * 0.95) - 1)]
            results.append((tz, preset, p50, p95))
            print(f"{tz:14} {preset:11} p50 {p50:7.1f} ms  p95 {p95:7.1f} ms", flush=True)

    lines = [
        "## Usage dashboard (`benchmarks/usage`)",
        "",
        "Command: `python -m portal.devstack exec -- .venv/bin/python benchmarks/usage/run.py"
        + (f" --events {ns.events}" if ns.events != 10_000_000 else "")
        + "`",
        "",
        f"Machine: {machine()}, PostgreSQL from `DATABASE_URL`. Data: {ns.events:,} events in one",
        f"group over 90 days (20 keys, 4 models) plus {ns.noise:,} in three other groups ({total:,} rows in",
        "`usage_usageevent`), rolled up. Server time of `GET /g/<id>/usage/?range=…` through Django's full",
        f"stack (session, auth, one usage query, template), {ns.repeat} requests per row after 3 warm-ups.",
        "",
        "| viewer's zone | range | p50 (ms) | p95 (ms) |",
        "|---|---|---|---|",
        *(f"| {tz} | {preset} | {p50:.1f} | {p95:.1f} |" for tz, preset, p50, p95 in results),
        "",
        "Target: p95 ≤ 150 ms for every preset. UTC viewers' daily charts read the daily rollups; other zones",
        "sum hourly rollups by their local day (correct across DST, more rows to read).",
    ]
    write_section(ns.write, "usage", lines)
    print(f"results written to {ns.write}")


if __name__ == "__main__":
    main()

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
from urllib.parse import urlparse, urlunparse

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def use_bench_database() -> str:
    import psycopg

    url = urlparse(os.environ["DATABASE_URL"])
    name = url.path.lstrip("/") + "_bench_usage"
    admin = os.environ["DATABASE_URL"]
    from urllib.parse import unquote

    host = unquote(url.hostname or "") if url.hostname else None
    conninfo = {
        "dbname": url.path.lstrip("/"),
        "user": url.username or "",
        "host": host or unquote(url.netloc.split("@")[-1].split(":")[0]),
    }
    if url.port:
        conninfo["port"] = str(url.port)
    if url.password:
        conninfo["password"] = url.password
    with psycopg.connect(**conninfo, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')
    os.environ["DATABASE_URL"] = urlunparse(url._replace(path=f"/{name}"))
    return admin


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument(
        "--noise", type=int, default=1_000_000, help="events spread over 3 other groups"
    )
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--write", default=str(ROOT / "docs" / "benchmarks.md"))
    ns = parser.parse_args()

    use_bench_database()
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

    info = Path("/proc/cpuinfo")
    cpuinfo = info.read_text().splitlines() if info.exists() else []
    cpu = next((ln.split(":", 1)[1] for ln in cpuinfo if ln.startswith("model name")), "?").strip()
    lines = [
        "<!-- usage:start -->",
        "## Usage dashboard (`benchmarks/usage`)",
        "",
        "Command: `python -m portal.devstack exec -- .venv/bin/python benchmarks/usage/run.py"
        + (f" --events {ns.events}" if ns.events != 10_000_000 else "")
        + "`",
        "",
        f"Machine: {os.cpu_count()} cores ({cpu}), PostgreSQL from `DATABASE_URL`. Data: {ns.events:,} events in one",
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
        "<!-- usage:end -->",
    ]
    path = Path(ns.write)
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if "<!-- usage:start -->" in text:
        head, rest = text.split("<!-- usage:start -->", 1)
        text = head + "\n".join(lines) + rest.split("<!-- usage:end -->", 1)[1]
    else:
        text = text.rstrip() + "\n\n" + "\n".join(lines) + "\n"
    path.write_text(text)
    print(f"results written to {path}")


if __name__ == "__main__":
    main()

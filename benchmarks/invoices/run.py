"""Invoice run benchmark: a month's invoices for 1,000 groups × 50 keys × 5 models.

    python -m portal.devstack exec -- .venv/bin/python benchmarks/invoices/run.py [--groups N]

Uses its own database (`<DATABASE_URL's name>_bench_invoices`). Seeds (once; skipped when present)
--groups groups, each with 50 API keys, a $1,000 credit purchase, and --events usage events per
(key, model) pair for 5 models spread over October 2025, with the ledger's usage debits booked per
group and day as the gateway's batches book them. Then, with earlier benchmark invoices cleared,
times `invoices_generate` — the code the `generate_invoices` command and the Celery tasks run — in
one process (a cold run that issues every invoice, then a re-run that finds them all issued), and
in --workers processes side by side (one Celery worker per core). Checks every invoice against the
ledger to the micro-dollar. Results go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.common import machine, use_bench_database, write_section  # noqa: E402

PERIOD = "2025-10"
KEYS = 50
MODELS = 5
PREFIX = "Bench Invoices"


def setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    os.environ["DEBUG"] = "false"
    os.environ["LOG_LEVEL"] = "WARNING"
    import django

    django.setup()


def seed(groups: int, events: int) -> None:
    from django.db import connection

    from usage.models import AIModel

    # The catalogue ships 4 Perplexity models; an operator's self-hosted one makes the fifth.
    AIModel.objects.get_or_create(
        name="llama-3.3-70b-instruct",
        defaults={"input_per_m": 600_000, "output_per_m": 600_000, "enabled": True},
    )
    model_ids = list(AIModel.objects.order_by("pk").values_list("pk", flat=True)[:MODELS])
    assert len(model_ids) == MODELS
    with connection.cursor() as c:
        c.execute("SELECT count(*) FROM groups_apigroup WHERE name LIKE %s", [f"{PREFIX} %"])
        have = c.fetchone()[0]
        if have >= groups:
            print(f"seed: {groups:,} groups already present", flush=True)
            return
        if have:  # a smaller earlier seed: start over (this database is the benchmark's own)
            c.execute("TRUNCATE groups_apigroup, usage_usageevent, billing_ledgerentry CASCADE")
        steps = [
            (
                "groups",
                """INSERT INTO groups_apigroup (public_id, name, description, address_line1,
                   address_line2, city, state, postal_code, country, tax_id, created_at, updated_at)
                   SELECT 'bi' || lpad(i::text, 8, '0'), %(prefix)s || ' ' || i, '',
                          i || ' Market Street', '', 'San Francisco', 'CA', '94105', 'US',
                          'US' || lpad(i::text, 9, '0'), '2025-09-01', '2025-09-01'
                     FROM generate_series(1, %(groups)s) i""",
            ),
            (
                "credit accounts",
                """INSERT INTO billing_creditaccount (group_id, balance_micros, purchased_micros,
                   created_at) SELECT id, 0, 0, '2025-09-01' FROM groups_apigroup
                   WHERE name LIKE %(prefix)s || ' %%'""",
            ),
            (
                "API keys",
                """INSERT INTO keys_apikey (public_id, name, prefix, secret_hash, last_four, status,
                   created_at, group_id)
                   SELECT 'bk' || lpad(g.id::text, 8, '0') || lpad(k::text, 2, '0'), 'Key ' || k,
                          'pplx-', md5(g.id || ':' || k),
                          upper(substr(md5(k || ':' || g.id), 1, 4)), 'active', '2025-09-01', g.id
                     FROM groups_apigroup g, generate_series(1, %(keys)s) k
                    WHERE g.name LIKE %(prefix)s || ' %%'""",
            ),
            (
                "usage events",
                """INSERT INTO usage_usageevent (request_id, prompt_tokens, completion_tokens,
                   citation_tokens, reasoning_tokens, search_queries, search_context_size,
                   input_cost_micros, output_cost_micros, citation_cost_micros,
                   reasoning_cost_micros, search_cost_micros, request_cost_micros, cost_micros,
                   streamed, latency_ms, created_at, api_key_id, group_id, model_id)
                   SELECT md5(k.id || ':' || m || ':' || n), p, q, 0, 0, s, 'low',
                          p * 3, q * 15, 0, 0, s * 5000, 5000, p * 3 + q * 15 + s * 5000 + 5000,
                          false, 800,
                          timestamptz '2025-10-01 00:00:00+00'
                            + (abs(hashtext(k.id || ':' || m || ':' || n)) %% 2678400)
                              * interval '1 second',
                          k.id, k.group_id, m
                     FROM keys_apikey k
                     CROSS JOIN unnest(%(models)s::bigint[]) m
                     CROSS JOIN generate_series(1, %(events)s) n
                     CROSS JOIN LATERAL (SELECT 100 + abs(hashtext(k.id || 'p' || m || n)) %% 4000
                                                AS p,
                                                20 + abs(hashtext(k.id || 'q' || m || n)) %% 900
                                                AS q,
                                                abs(hashtext(k.id || 's' || m || n)) %% 3 AS s) r
                    WHERE k.public_id LIKE 'bk%%'""",
            ),
            (
                "ledger: purchases",
                """INSERT INTO billing_ledgerentry (kind, amount_micros, reference, description,
                   created_at, account_id)
                   SELECT 'purchase', 1000000000, 'bench:purchase:' || a.id, 'Credit purchase',
                          '2025-09-15', a.id
                     FROM billing_creditaccount a JOIN groups_apigroup g ON g.id = a.group_id
                    WHERE g.name LIKE %(prefix)s || ' %%'""",
            ),
            (
                "ledger: usage debits per group and day",
                """INSERT INTO billing_ledgerentry (kind, amount_micros, reference, description,
                   created_at, account_id)
                   SELECT 'usage', -sum(e.cost_micros),
                          'bench:usage:' || a.id || ':' || date_trunc('day', e.created_at)::date,
                          'API usage', min(e.created_at), a.id
                     FROM usage_usageevent e
                     JOIN billing_creditaccount a ON a.group_id = e.group_id
                     JOIN groups_apigroup g ON g.id = e.group_id
                    WHERE g.name LIKE %(prefix)s || ' %%'
                    GROUP BY a.id, date_trunc('day', e.created_at)""",
            ),
            (
                "balances",
                """UPDATE billing_creditaccount a
                      SET balance_micros = s.total, purchased_micros = 1000000000
                     FROM (SELECT account_id, sum(amount_micros) AS total
                             FROM billing_ledgerentry GROUP BY account_id) s
                    WHERE s.account_id = a.id""",
            ),
            ("analyze", "ANALYZE"),
        ]
        params = {
            "prefix": PREFIX,
            "groups": groups,
            "keys": KEYS,
            "models": model_ids,
            "events": events,
        }
        for label, sql in steps:
            started = time.monotonic()
            print(f"seed: {label}…", end=" ", flush=True)
            c.execute(sql, params if "%(" in sql else None)
            print(f"{c.rowcount:,} rows, {time.monotonic() - started:.1f}s", flush=True)


def clear_invoices() -> None:
    from django.db import connection

    # TRUNCATE, not DELETE: issued invoices refuse deletes (a row trigger TRUNCATE does not fire).
    with connection.cursor() as c:
        c.execute("TRUNCATE billing_invoiceline, billing_invoice, billing_invoicesequence")


def _worker(args: tuple[list[int], str]) -> tuple[int, int, float]:
    ids, database_url = args
    os.environ["DATABASE_URL"] = database_url
    setup_django()
    from billing.invoicing.generation import invoices_generate
    from billing.invoicing.periods import period_from_key

    s = invoices_generate(period=period_from_key(PERIOD), group_ids=ids)
    return s.created, len(s.failed), s.seconds


def run(group_ids: list[int], workers: int) -> tuple[float, int, int]:
    """Seconds, invoices issued, failures: the groups split over `workers` processes."""
    chunks = [group_ids[i::workers] for i in range(workers)]
    started = time.monotonic()
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        results = pool.map(_worker, [(c, os.environ["DATABASE_URL"]) for c in chunks])
    return (
        time.monotonic() - started,
        sum(r[0] for r in results),
        sum(r[1] for r in results),
    )


def verify(expected: int) -> int:
    """Every invoice's usage equals the ledger's usage debits of its group and month."""
    from django.db import connection

    with connection.cursor() as c:
        c.execute(
            """SELECT count(*),
                      count(*) FILTER (WHERE i.usage_micros <> -l.debits
                                          OR i.total_cents <> x.lines_cents)
                 FROM billing_invoice i
                 JOIN billing_creditaccount a ON a.group_id = i.group_id
                 JOIN LATERAL (SELECT sum(amount_micros) AS debits FROM billing_ledgerentry
                                WHERE account_id = a.id AND kind = 'usage'
                                  AND created_at >= i.period_start AND created_at < i.period_end) l
                   ON true
                 JOIN LATERAL (SELECT sum(amount_cents) AS lines_cents FROM billing_invoiceline
                                WHERE invoice_id = i.id AND section = 'usage') x ON true"""
        )
        count, wrong = c.fetchone()
    assert count == expected, f"{count} invoices, expected {expected}"
    assert wrong == 0, f"{wrong} invoices disagree with the ledger"
    return count


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--groups", type=int, default=1000)
    parser.add_argument("--events", type=int, default=4, help="events per (key, model) pair")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--write", default=str(ROOT / "docs" / "benchmarks.md"))
    ns = parser.parse_args()

    database = use_bench_database("bench_invoices")
    setup_django()
    from django.core.management import call_command
    from django.db import connection

    from groups.models import APIGroup
    from usage.catalogue import catalogue_sync
    from usage.models import UsageEvent

    call_command("migrate", verbosity=0)
    catalogue_sync()
    seed(ns.groups, ns.events)
    ids = list(
        APIGroup.objects.filter(name__startswith=f"{PREFIX} ")
        .order_by("pk")
        .values_list("pk", flat=True)[: ns.groups]
    )
    events = UsageEvent.objects.filter(group_id__in=ids).count()
    print(f"{len(ids):,} groups, {events:,} usage events in {PERIOD}", flush=True)
    connection.close()

    rows = []
    for label, workers, clear in (
        ("1 process, cold", 1, True),
        ("1 process, re-run (all issued)", 1, False),
        (f"{ns.workers} processes, cold", ns.workers, True),
    ):
        if clear:
            clear_invoices()
            connection.close()
        seconds, created, failed = run(ids, workers)
        assert failed == 0, f"{failed} invoices failed"
        assert created == (len(ids) if clear else 0)
        checked = verify(len(ids))
        rate = len(ids) / seconds * 60
        rows.append((label, seconds, rate))
        print(
            f"{label:32} {seconds:7.1f} s  {rate:8,.0f} groups/min  "
            f"({created:,} issued, {checked:,} checked against the ledger)",
            flush=True,
        )

    write_section(
        ns.write,
        "invoices",
        [
            "## Invoice run (`benchmarks/invoices`)",
            "",
            "Command: `python -m portal.devstack exec -- .venv/bin/python benchmarks/invoices/run.py"
            + (f" --groups {ns.groups}" if ns.groups != 1000 else "")
            + "`",
            "",
            f"Machine: {machine()}, PostgreSQL from `DATABASE_URL` (database `{database}`).",
            f"Data: {len(ids):,} groups × {KEYS} keys × {MODELS} models, {ns.events} events per",
            f"(key, model) in {PERIOD}: {events:,} usage events, ledger usage debits per group and",
            "day. Each invoice has 250 usage lines; every invoice is checked against the ledger",
            "afterwards (usage = the month's usage debits, total = the sum of its displayed lines).",
            "Wall time of `invoices_generate` (what `generate_invoices` and the Celery tasks run),",
            "including process start-up.",
            "",
            "| run | seconds | groups per minute |",
            "|---|---|---|",
            *(f"| {label} | {s:.1f} | {rate:,.0f} |" for label, s, rate in rows),
            "",
            "Target: ≥ 1,000 groups per minute.",
        ],
    )
    print(f"results written to {ns.write}")


if __name__ == "__main__":
    main()

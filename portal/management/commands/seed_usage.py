from __future__ import annotations

import random
import time
import uuid
from datetime import timedelta

import orjson
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction
from django.utils import timezone

from billing.services import ledger_post
from groups.models import APIGroup
from keys.models import APIKey
from keys.services import api_key_create
from usage.metrics import COST_COLUMNS, COUNTS
from usage.models import AIModel, ToolPrice
from usage.pricing import (
    AgentPrices,
    AgentUsage,
    Prices,
    Usage,
    agent_cost,
    compute_cost,
    embeddings_cost,
)  # fmt: skip
from usage.rollups import rollup_range
from usage.search import SEARCH

COLUMNS = ", ".join(
    (
        "request_id", "group_id", "api_key_id", "model_id", "api", *COUNTS, "search_context_size",
        *COST_COLUMNS, "cost_micros", "tool_calls", "streamed", "latency_ms", "created_at",
    )
)  # fmt: skip
SIZES = ("low", "medium", "high")


class Command(BaseCommand):
    help = "Fill a group with realistic usage events quickly (COPY), then roll them up."

    def add_arguments(self, parser):  # type: ignore[no-untyped-def]
        parser.add_argument("--group", required=True, help="the group's public id")
        parser.add_argument("--events", type=int, default=100_000)
        parser.add_argument("--days", type=int, default=30)
        parser.add_argument(
            "--keys", type=int, default=8, help="create keys until the group has this many"
        )
        parser.add_argument("--seed", type=int, default=1)
        parser.add_argument(
            "--no-ledger", action="store_true", help="don't book the usage to the ledger"
        )

    def handle(self, *args, **o):  # type: ignore[no-untyped-def]
        group = APIGroup.objects.filter(public_id=o["group"]).first()
        if group is None:
            raise CommandError(f"No API group with id {o['group']!r}.")
        if o["events"] < 1 or o["days"] < 1:
            raise CommandError("--events and --days must be at least 1.")
        keys = _keys(group, o["keys"])
        models = list(AIModel.objects.filter(enabled=True))
        if not models:
            raise CommandError("The model catalogue is empty: run sync_models first.")
        fees = dict(ToolPrice.objects.filter(enabled=True).values_list("name", "fee_per_k"))
        rng = random.Random(o["seed"])
        end = timezone.now()
        start = end - timedelta(days=o["days"])
        batch = uuid.uuid4().hex[:12]
        started = time.monotonic()
        self.stdout.write(
            f"Seeding {o['events']:,} events over {o['days']} days into {group.name}…"
        )
        with transaction.atomic(), connection.cursor() as cursor:
            raw = cursor.connection  # psycopg connection
            with raw.cursor().copy(f"COPY usage_usageevent ({COLUMNS}) FROM STDIN") as copy:
                per_day = self._write_events(
                    copy, o["events"], rng=rng, group=group, keys=keys, models=models, fees=fees,
                    start=start, end=end, batch=batch, started=started,
                )  # fmt: skip
        if not o["no_ledger"]:
            _book(group, batch, per_day)
        self.stdout.write("Rolling up…")
        t = time.monotonic()
        rollup_range(start, end + timedelta(seconds=1))
        total_cost = sum(cost for _, cost, _ in per_day.values())
        self.stdout.write(
            f"Done: {o['events']:,} events, {total_cost / 1e6:,.2f} USD, "
            f"{time.monotonic() - started:.0f}s (rollup {time.monotonic() - t:.0f}s)."
        )

    def _write_events(  # type: ignore[no-untyped-def]
        self, copy, events: int, *, rng: random.Random, group: APIGroup, keys: list[int],
        models: list[AIModel], fees: dict[str, int], start, end, batch: str, started: float,
    ) -> dict[object, list]:  # fmt: skip
        """COPY `events` random events; return {day: [first event, cost, count]}."""
        span = (end - start).total_seconds()
        # Booked to the ledger as one usage debit per UTC day, dated at the day's first event, so
        # every period's usage debits equal its usage events (what invoices reconcile against).
        per_day: dict[object, list] = {}
        step = max(1, events // 20)
        for n in range(events):
            m = models[n % len(models)] if rng.random() < 0.3 else rng.choice(models)
            size = SIZES[rng.randint(0, 2)]
            api, counts, cost, tool_calls = _request(rng, m, fees, size)
            at = start + timedelta(seconds=rng.random() * span)
            day = per_day.setdefault(at.date(), [at, 0, 0])
            day[0] = min(day[0], at)
            day[1] += cost.total
            day[2] += 1
            copy.write_row((
                f"seed-{batch}-{n}", group.pk, rng.choice(keys), m.pk, api, *counts.values(), size,
                *cost.parts().values(), cost.total, orjson.dumps(tool_calls).decode(), False,
                rng.randint(80, 4_000), at,
            ))  # fmt: skip
            if (n + 1) % step == 0:
                pct = 100 * (n + 1) // events
                self.stdout.write(
                    f"  {pct:3d}%  {n + 1:,} events  {time.monotonic() - started:.0f}s"
                )
        return per_day


def _keys(group: APIGroup, wanted: int) -> list[int]:
    """Create keys until the group has `wanted`; return all their ids."""
    while APIKey.objects.filter(group=group).count() < wanted:
        api_key_create(
            group=group, name=f"Seeded key {APIKey.objects.filter(group=group).count() + 1}"
        )
    return list(APIKey.objects.filter(group=group).values_list("pk", flat=True))


def _request(rng: random.Random, m: AIModel, fees: dict[str, int], size: str):  # type: ignore[no-untyped-def]
    """One random request to `m`: its API, counts (in COUNTS order), cost and tool calls."""
    if SEARCH in m.apis:  # a Search API model: one request, no tokens, the request fee
        cost = compute_cost(Prices.of(m), Usage(search_context_size=size))
        return SEARCH, dict.fromkeys(COUNTS, 0), cost, {}
    prompt = rng.randint(5, 2_000)
    completion = rng.randint(20, 1_500)
    if "embeddings" in m.apis:  # input tokens only, priced per request (usage.pricing)
        tokens = rng.randint(100, 50_000)
        counts = {**dict.fromkeys(COUNTS, 0), "prompt_tokens": tokens}
        return "embeddings", counts, embeddings_cost(Prices.of(m), tokens), {}
    if "chat" not in m.apis:  # an Agent API model: cached input, tools
        cached = rng.randint(0, prompt // 2)
        used = {t: rng.randint(1, 3) for t in fees if rng.random() < 0.4}
        charged = agent_cost(
            AgentPrices(Prices.of(m), fees), AgentUsage(prompt, completion, cached, 0, used)
        )
        counts = {**dict.fromkeys(COUNTS, 0), "prompt_tokens": prompt,
                  "completion_tokens": completion, "cache_read_tokens": cached}  # fmt: skip
        return "agent", counts, charged, charged.tool_calls_json()
    deep = m.citation_per_m or m.reasoning_per_m
    usage = Usage(
        prompt, completion, rng.randint(0, 3_000) if deep else 0,
        rng.randint(0, 6_000) if deep else 0, rng.randint(1, 5) if deep else 0,
        search_context_size=size,
    )  # fmt: skip
    cost = compute_cost(Prices.of(m), usage)
    return "chat", {c: getattr(usage, c) for c in COUNTS}, cost, {}


def _book(group: APIGroup, batch: str, per_day: dict[object, list]) -> None:
    """One ledger debit per day of seeded usage."""
    for day, (first, cost, count) in sorted(per_day.items()):  # type: ignore[type-var]
        if cost:
            ledger_post(
                group=group, amount_micros=-cost, kind="usage",
                reference=f"usage:seed-{batch}-{day}", created_at=first,
                description=f"Seeded usage ({count:,} requests on {day})",
            )  # fmt: skip

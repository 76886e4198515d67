"""Gateway benchmark: the upstream directly, a bare proxy, the portal gateway and LiteLLM, side by side.

    python -m portal.devstack exec -- .venv/bin/python benchmarks/gateway/run.py

One run on this machine, against one fast fake upstream (benchmarks/gateway/servers.py):
  direct   the upstream itself;
  proxy    a bare aiohttp pass-through (no auth, no metering): the practical limit;
  portal   the portal's gateway in its production server configuration (uvicorn as in the
           Dockerfile, DJANGO_ENV=production, JSON request logs), full metering: key check,
           balance and spend check, rate limit, usage event and ledger debit per request,
           committed to PostgreSQL before the answer (GATEWAY_METERING=commit);
  portal-stream  the same with write-behind metering (GATEWAY_METERING=stream): the usage is
           appended to a Redis stream before the answer and settled into PostgreSQL in batches;
  portal-budgets  the `portal` server on chat completions with keys whose groups and keys have
           hard budgets (a monthly group budget and a daily budget per key), against `portal`'s
           keys that have none: what the spend controls cost on the hot path;
  portal-responses, portal-search  the `portal` server on the Agent API (`POST /v1/responses`)
           and the Search API (`POST /search`, not streamed), same key check and metering;
  litellm  the LiteLLM proxy 1.108 (`litellm[proxy]` in its own venv, `.local/litellm-venv`,
           installed by this script) with a master key and no database: no virtual keys, no spend
           tracking — less work than the portal does.
Servers run --workers processes each. Targets alternate (A B C D A B C D) within each scenario:
open-loop fixed rates (latency counted from the scheduled send time) and a closed-loop saturation
run, streaming and not, 50 keys across 5 groups. CPU per request is the servers' own CPU time over
the saturation run divided by the requests they answered. Afterwards: the ledger is reconciled
(every 200 charged exactly once), revocation and regeneration are timed across workers, and the
workers' RSS is read before and after a --soak run of each portal target. Both portal targets
share a private redis-server configured as in docker-compose.yml (`appendonly yes`, fsync every
second). Results go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psutil

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.common import machine, use_bench_database, write_section  # noqa: E402
from portal import launcher  # noqa: E402
from portal.launcher import free_port  # noqa: E402

PY = sys.executable
SERVERS = str(Path(__file__).with_name("servers.py"))
LITELLM_VENV = ROOT / ".local" / "litellm-venv"
LITELLM_VERSION = "1.108.7"
MODEL = "bench-model"
MASTER_KEY = "sk-bench-master-key"
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "What is six times seven?"}]}
AGENT_MODEL = "bench-agent"  # the Agent API: the same question on /v1/responses
AGENT_BODY = {"model": AGENT_MODEL, "input": "What is six times seven?",
              "tools": [{"type": "web_search"}]}  # fmt: skip
SEARCH_BODY = {"query": "What is six times seven?", "max_results": 10}  # the Search API (web)
EMBED_MODEL = "bench-embed"  # embeddings: 4 texts, int8 out (the upstream sends floats)
EMBED_BODY = {
    "model": EMBED_MODEL,
    "input": [f"Chunk {i} of a document to index." for i in range(4)],
}
PORTALS = ("portal", "portal-stream", "granian")  # targets that run our gateway
# Their 200s are reconciled with the ledger.
METERED = (*PORTALS, "portal-budgets", "portal-responses", "portal-search", "portal-embeddings")
UNSTREAMED = ("portal-search", "portal-embeddings")  # targets that have no streamed form


# --- set-up ------------------------------------------------------------------------------------


def ensure_litellm() -> Path:
    exe = LITELLM_VENV / "bin" / "litellm"
    if not exe.exists():
        print(f"installing litellm[proxy]=={LITELLM_VERSION} into {LITELLM_VENV}…", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
        subprocess.run(
            [
                str(LITELLM_VENV / "bin" / "pip"),
                "install",
                "-q",
                f"litellm[proxy]=={LITELLM_VERSION}",
            ],
            check=True,
        )
    return exe


def prepare_database(upstream: str, groups: int, keys_per_group: int) -> tuple[list[str], Any]:
    """Bench database with the model, 5 groups with credits and 50 keys; return the secrets."""
    use_bench_database("bench_gateway")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    import django

    django.setup()
    from django.core.management import call_command

    from accounts.models import User
    from billing.services import credits_grant
    from groups.services import api_group_create
    from keys.services import api_key_create
    from usage.catalogue import catalogue_sync
    from usage.models import AIModel, RateLimit

    call_command("migrate", verbosity=0)
    catalogue_sync()
    # The Agent API's limit is per group and shared by its models (Perplexity's 2,000 a minute at
    # most): without its row, the bench agent model is limited by its own rate_limit_rpm below.
    # Likewise the Search API's (50 a second per group) and embeddings' families: the benchmark
    # measures speed, not the limiter's 429s.
    RateLimit.objects.filter(name__in=("agent", "search", "embeddings")).update(enabled=False)
    sonar = AIModel.objects.get(name="sonar")
    AIModel.objects.update_or_create(
        name=MODEL,
        defaults={
            "enabled": True,
            "upstream_base_url": upstream,
            "upstream_model": MODEL,
            "input_per_m": sonar.input_per_m,
            "output_per_m": sonar.output_per_m,
            "search_per_k": sonar.search_per_k,
            "request_low_per_k": sonar.request_low_per_k,
            "request_medium_per_k": sonar.request_medium_per_k,
            "request_high_per_k": sonar.request_high_per_k,
            "rate_limit_rpm": 100_000_000,  # the benchmark measures speed, not the limiter's 429s
        },
    )
    AIModel.objects.update_or_create(
        name=AGENT_MODEL,
        defaults={
            "enabled": True,
            "api": "agent",
            "upstream_api": "responses",
            "upstream_base_url": upstream,
            "upstream_model": AGENT_MODEL,
            "input_per_m": sonar.input_per_m,
            "output_per_m": sonar.output_per_m,
            "rate_limit_rpm": 100_000_000,
        },
    )
    # The Search API's web type (the catalogue's search-web, $5/1K requests) on the fake upstream.
    AIModel.objects.filter(name="search-web").update(
        enabled=True, upstream_base_url=upstream, rate_limit_rpm=100_000_000
    )
    AIModel.objects.update_or_create(
        name=EMBED_MODEL,
        defaults={
            "enabled": True,
            "api": "embeddings",
            "upstream_base_url": upstream,
            "upstream_model": EMBED_MODEL,
            "input_per_m": 4_000,  # pplx-embed-v1-0.6b's: 4 × 512 tokens cost 8 µ$
            "dimensions": 1024,
            "rate_limit_rpm": 100_000_000,
        },
    )
    secrets = []
    run = time.strftime("%Y%m%d%H%M%S")
    for g in range(groups):
        user, _ = User.objects.get_or_create(email=f"bench-gw-{g}@bench.example")
        group = api_group_create(creator=user, name=f"Bench gateway {run} {g}")
        credits_grant(
            group=group,
            amount_micros=1_000_000_000_000,  # $1M: nobody runs out during the benchmark
            reason="benchmark",
            reference=f"bench:{group.public_id}",
        )
        for k in range(keys_per_group):
            secrets.append(api_key_create(group=group, name=f"bench {k}").secret)
    return secrets, run


def prepare_budgeted(run_id: str, groups: int, keys_per_group: int) -> list[str]:
    """Groups like prepare_database's whose group and every key have hard budgets, amounts no
    request reaches: every admission checks and reserves against two budgets besides the
    balance, and every metering moves their counters."""
    from accounts.models import User
    from billing.budgets import budget_create
    from billing.services import credits_grant
    from groups.services import api_group_create
    from keys.services import api_key_create

    secrets = []
    for g in range(groups):
        user, _ = User.objects.get_or_create(email=f"bench-gw-{g}@bench.example")
        group = api_group_create(creator=user, name=f"Bench gateway {run_id} budgets {g}")
        credits_grant(
            group=group, amount_micros=1_000_000_000_000, reason="benchmark",
            reference=f"bench:{group.public_id}",
        )  # fmt: skip
        budget_create(group=group, amount_micros=500_000_000_000, window="monthly")
        for k in range(keys_per_group):
            issued = api_key_create(group=group, name=f"bench budgeted {k}")
            budget_create(
                group=group, api_key=issued.key, amount_micros=10_000_000_000, window="daily"
            )
            secrets.append(issued.secret)
    return secrets


def counters(run_id: str) -> dict[str, int]:
    """Usage events and debits of this run's groups (another run may share the database)."""
    from django.db import connection

    with connection.cursor() as c:
        c.execute(
            "SELECT (SELECT count(*) FROM usage_usageevent e JOIN groups_apigroup g"
            "         ON g.id = e.group_id WHERE g.name LIKE %(run)s),"
            " (SELECT count(*) FROM billing_ledgerentry l"
            "   JOIN billing_creditaccount a ON a.id = l.account_id"
            "   JOIN groups_apigroup g ON g.id = a.group_id"
            "  WHERE l.kind = 'usage' AND g.name LIKE %(run)s)",
            {"run": f"Bench gateway {run_id} %"},
        )
        events, debits = c.fetchone()
    return {"events": events, "debits": debits}


def reconcile(request_ids: list[str], before: dict[str, int], run_id: str) -> dict[str, Any]:
    """Every 200 has exactly one usage event and one ledger debit; nothing else was charged."""
    from django.db import connection

    after = counters(run_id)
    with connection.cursor() as c:
        c.execute(
            "SELECT count(DISTINCT e.request_id), count(l.id) FROM usage_usageevent e"
            " LEFT JOIN billing_ledgerentry l ON l.reference = 'usage:' || e.request_id"
            " WHERE e.request_id = ANY(%s)",
            [request_ids],
        )
        found, debits = c.fetchone()
        c.execute(
            "SELECT count(*) FROM billing_creditaccount a WHERE a.balance_micros <>"
            " (SELECT COALESCE(sum(amount_micros), 0) FROM billing_ledgerentry"
            "  WHERE account_id = a.id)"
        )
        (unbalanced,) = c.fetchone()
    return {
        "ok_responses": len(request_ids),
        "unique_ids": len(set(request_ids)),
        "events_for_ids": found,
        "debits_for_ids": debits,
        "new_events": after["events"] - before["events"],
        "new_debits": after["debits"] - before["debits"],
        "unbalanced_accounts": unbalanced,
    }


# --- servers -----------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    url: str
    proc: subprocess.Popen
    auth: list[str] = field(default_factory=list)  # Authorization values, rotated
    body: dict[str, Any] = field(default_factory=lambda: BODY)

    def pids(self) -> list[psutil.Process]:
        root = psutil.Process(self.proc.pid)
        return [root, *root.children(recursive=True)]

    def cpu_seconds(self) -> float:
        total = 0.0
        for p in self.pids():
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total

    def rss_mb(self) -> list[float]:
        """RSS of the worker processes (the children, or the process itself when alone)."""
        procs = self.pids()
        workers = [p for p in procs[1:] if "resource_tracker" not in " ".join(p.cmdline())]
        return [round(p.memory_info().rss / 2**20, 1) for p in (workers or procs)]


def launch(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return launcher.spawn(cmd, env=env, log=log)


async def wait_ready(target: Target, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            if target.proc.poll() is not None:
                raise RuntimeError(f"{target.name} exited with {target.proc.returncode}")
            try:
                async with s.post(target.url, json=target.body, headers=headers(target, 0)) as r:
                    await r.read()
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.5)
    raise RuntimeError(f"{target.name} did not become ready")


def headers(target: Target, i: int) -> dict[str, str]:
    h = {"Content-Type": "application/json"}
    if target.auth:
        h["Authorization"] = target.auth[i % len(target.auth)]
    return h


# --- load --------------------------------------------------------------------------------------


@dataclass
class Result:
    latencies: list[float] = field(default_factory=list)  # ms, successful requests
    statuses: dict[int, int] = field(default_factory=dict)
    request_ids: list[str] = field(default_factory=list)
    seconds: float = 0.0
    cpu: float = 0.0

    @property
    def ok(self) -> int:
        return self.statuses.get(200, 0)

    def add(self, other: Result) -> None:
        self.latencies += other.latencies
        for k, v in other.statuses.items():
            self.statuses[k] = self.statuses.get(k, 0) + v
        self.request_ids += other.request_ids
        self.seconds += other.seconds
        self.cpu += other.cpu


async def one(
    session: aiohttp.ClientSession, target: Target, i: int, stream: bool, since: float, res: Result
) -> None:
    body = orjson.dumps({**target.body, "stream": stream})
    try:
        async with session.post(target.url, data=body, headers=headers(target, i)) as r:
            await r.read()
            status = r.status
            rid = r.headers.get("x-request-id")
    except (aiohttp.ClientError, TimeoutError):
        status, rid = 599, None
    res.statuses[status] = res.statuses.get(status, 0) + 1
    if status == 200:
        res.latencies.append((time.perf_counter() - since) * 1000)
        if rid:
            res.request_ids.append(rid)


async def open_loop(target: Target, rate: int, seconds: float, stream: bool) -> Result:
    res = Result()
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as s:
        t0 = time.perf_counter() + 0.05
        tasks = []
        for i in range(int(rate * seconds)):
            scheduled = t0 + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(s, target, i, stream, scheduled, res)))
        await asyncio.gather(*tasks)
        res.seconds = time.perf_counter() - t0
    return res


async def saturate(target: Target, concurrency: int, seconds: float, stream: bool) -> Result:
    res = Result()
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as s:
        cpu0 = target.cpu_seconds()
        t0 = time.perf_counter()
        end = t0 + seconds
        counter = iter(range(10**9))

        async def worker() -> None:
            while time.perf_counter() < end:
                await one(s, target, next(counter), stream, time.perf_counter(), res)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        res.seconds = time.perf_counter() - t0
        res.cpu = target.cpu_seconds() - cpu0
    return res


async def quiet(targets: dict[str, Target], timeout: float = 60) -> None:
    """Wait until no server is still busy (LiteLLM keeps working through a queue it could not
    keep up with after its clients are done): a run must not share the CPU with the last one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = sum(t.cpu_seconds() for t in targets.values())
        await asyncio.sleep(0.5)
        if sum(t.cpu_seconds() for t in targets.values()) - before < 0.05:  # < 10 % of a core
            return


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))]


# --- revocation --------------------------------------------------------------------------------


async def _hammer(
    s: aiohttp.ClientSession, probe: Target, stop: asyncio.Event, done_at: list[float],
    last_ok_after: list[float],
) -> None:  # fmt: skip
    while not stop.is_set():
        sent = time.perf_counter()
        async with s.post(probe.url, data=orjson.dumps(BODY), headers=headers(probe, 0)) as r:
            await r.read()
            if r.status == 200 and done_at and sent > done_at[0]:
                last_ok_after[0] = max(last_ok_after[0], sent - done_at[0])


async def time_revocation(target: Target, action: str, trials: int) -> list[float]:
    """Seconds from the revoke/regenerate commit until the old secret's last 200 (0: none after)."""
    from groups.models import APIGroup
    from keys.models import APIKey
    from keys.services import api_key_create, api_key_regenerate, api_key_revoke

    group = APIGroup.objects.filter(name__startswith="Bench gateway").order_by("-pk").first()
    out = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        for _ in range(trials):
            issued = await asyncio.to_thread(api_key_create, group=group, name=f"{action} probe")
            probe = Target(target.name, target.url, target.proc, [f"Bearer {issued.secret}"])
            last_ok_after = [0.0]
            done_at: list[float] = []
            stop = asyncio.Event()
            workers = [
                asyncio.create_task(_hammer(s, probe, stop, done_at, last_ok_after))
                for _ in range(8)
            ]
            await asyncio.sleep(1.0)
            key = await asyncio.to_thread(APIKey.objects.get, pk=issued.key.pk)
            if action == "revoke":
                await asyncio.to_thread(api_key_revoke, key=key)
            else:
                await asyncio.to_thread(api_key_regenerate, key=key)
            done_at.append(time.perf_counter())
            await asyncio.sleep(2.0)
            stop.set()
            await asyncio.gather(*workers)
            out.append(last_ok_after[0])
    return out


async def wait_settled(redis_url: str, timeout: float = 60) -> float:
    """Seconds until the usage stream is empty (every entry settled into PostgreSQL)."""
    import redis

    from gateway import store

    return await asyncio.to_thread(store.wait_settled, redis.Redis.from_url(redis_url), timeout)


# --- main --------------------------------------------------------------------------------------


async def amain(ns: argparse.Namespace) -> None:
    logs = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    upstream_port = free_port()
    upstream = f"http://127.0.0.1:{upstream_port}"
    # The servers and this script (which revokes keys) share a Redis of their own, persistent
    # like docker-compose.yml's (stream mode's durability is Redis's).
    private_redis = contextlib.ExitStack()
    redis_url = private_redis.enter_context(launcher.redis(logs / "redis", append_only=True))
    os.environ["REDIS_URL"] = redis_url
    secrets, run_id = prepare_database(upstream, groups=5, keys_per_group=10)
    budgeted = (
        prepare_budgeted(run_id, groups=5, keys_per_group=10)
        if "portal-budgets" in ns.targets
        else []
    )
    litellm = ensure_litellm() if "litellm" in ns.targets else None

    from django.conf import settings as dj

    db = dict(dj.DATABASES["default"])

    base_env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    procs: list[subprocess.Popen] = []
    targets: dict[str, Target] = {}
    try:
        up = launch(
            [PY, SERVERS, "upstream", "--port", str(upstream_port)], base_env, logs / "up.log"
        )
        procs.append(up)
        targets["direct"] = Target("direct", f"{upstream}/chat/completions", up)

        if "proxy" in ns.targets:
            port = free_port()
            p = launch(
                [PY, SERVERS, "proxy", "--port", str(port), "--upstream", upstream,
                 "--workers", str(ns.workers)],
                base_env, logs / "proxy.log",
            )  # fmt: skip
            procs.append(p)
            targets["proxy"] = Target("proxy", f"http://127.0.0.1:{port}/chat/completions", p)

        portal_env = {
            **base_env,
            "DJANGO_ENV": "production",
            "SECRET_KEY": "bench-" + "x" * 60,
            "ALLOWED_HOSTS": "127.0.0.1",
            "DATABASE_URL": os.environ["DATABASE_URL"],
            "REDIS_URL": redis_url,
            "EMAIL_URL": "smtp://127.0.0.1:25",
            "STRIPE_SECRET_KEY": "sk_test_bench",
            "STRIPE_PUBLISHABLE_KEY": "pk_test_bench",
            "STRIPE_WEBHOOK_SECRET": "whsec_bench",
            "METRICS_TOKEN": "metrics-bench",
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "INFO",
            **dict(kv.split("=", 1) for kv in ns.portal_env),
        }
        servers = {
            # The Dockerfile's command (tests/portal/test_launcher.py holds them to each other).
            "portal": launcher.web_command("{port}", workers=ns.workers),
            # The same application under Granian (Rust HTTP server), for comparison.
            "granian": [str(Path(PY).with_name("granian")), "--interface", "asgi",
                        "--host", "127.0.0.1", "--port", "{port}", "--workers", str(ns.workers),
                        "--loop", "uvloop", "--no-access-log", "portal.asgi:application"],
        }  # fmt: skip
        servers["portal-stream"] = servers["portal"]
        for name, command in servers.items():
            if name not in ns.targets:
                continue
            port = free_port()
            metrics_dir = logs / f"prometheus-{name}"
            metrics_dir.mkdir()
            metering = "stream" if name == "portal-stream" else "commit"
            p = launch(
                [part.replace("{port}", str(port)) for part in command],
                {**portal_env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
                 "GATEWAY_METERING": metering},
                logs / f"{name}.log",
            )  # fmt: skip
            procs.append(p)
            targets[name] = Target(
                name, f"http://127.0.0.1:{port}/chat/completions", p,
                [f"Bearer {s}" for s in secrets],
            )  # fmt: skip
            if name == "portal" and "portal-budgets" in ns.targets:
                # The same server and API, keys under a group budget and a key budget each.
                targets["portal-budgets"] = Target(
                    "portal-budgets", f"http://127.0.0.1:{port}/chat/completions", p,
                    [f"Bearer {s}" for s in budgeted],
                )  # fmt: skip
            if name == "portal" and "portal-responses" in ns.targets:
                # The same server, on the Agent API (a Responses upstream, proxied and repriced).
                targets["portal-responses"] = Target(
                    "portal-responses", f"http://127.0.0.1:{port}/v1/responses", p,
                    [f"Bearer {s}" for s in secrets], AGENT_BODY,
                )  # fmt: skip
            if name == "portal" and "portal-search" in ns.targets:
                # The same server, on the Search API (one request fee, no tokens).
                targets["portal-search"] = Target(
                    "portal-search", f"http://127.0.0.1:{port}/search", p,
                    [f"Bearer {s}" for s in secrets], SEARCH_BODY,
                )  # fmt: skip
            if name == "portal" and "portal-embeddings" in ns.targets:
                # The same server, on /v1/embeddings (floats from the upstream, int8 out).
                targets["portal-embeddings"] = Target(
                    "portal-embeddings", f"http://127.0.0.1:{port}/v1/embeddings", p,
                    [f"Bearer {s}" for s in secrets], EMBED_BODY,
                )  # fmt: skip

        if litellm is not None:
            port = free_port()
            config = logs / "litellm.yaml"
            config.write_text(
                "model_list:\n"
                f"  - model_name: {MODEL}\n"
                "    litellm_params:\n"
                f"      model: openai/{MODEL}\n"
                f"      api_base: {upstream}\n"
                "      api_key: sk-upstream\n"
                "general_settings:\n"
                f"  master_key: {MASTER_KEY}\n"
                "litellm_settings:\n"
                "  telemetry: false\n"
            )
            env = {
                **base_env,
                "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                "LITELLM_LOG": "ERROR",
                "DATABASE_URL": "",
                "REDIS_URL": "",
            }
            env.pop("DATABASE_URL")
            env.pop("REDIS_URL")
            p = launch(
                [str(litellm), "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
                 "--num_workers", str(ns.workers)],
                env, logs / "litellm.log",
            )  # fmt: skip
            procs.append(p)
            targets["litellm"] = Target(
                "litellm", f"http://127.0.0.1:{port}/chat/completions", p, [f"Bearer {MASTER_KEY}"]
            )

        for t in targets.values():
            await wait_ready(t)
            for _ in range(200):  # warm-up: pools, caches, JIT-free but lazy imports
                r = Result()
                async with aiohttp.ClientSession() as s:
                    await one(s, t, _, False, time.perf_counter(), r)
            # …and at full concurrency, so connection pools and per-key caches have grown before
            # the first measured run (without it the first repetition of every target ran
            # 15–30 % more CPU per request than the second).
            await saturate(t, ns.concurrency, 2.0, False)
            if t.name not in UNSTREAMED:
                await saturate(t, ns.concurrency, 2.0, True)
        print(f"ready: {', '.join(targets)}  (logs in {logs})", flush=True)
        rss_start = {n: t.rss_mb() for n, t in targets.items() if n in PORTALS}
        if "portal-stream" in targets:
            await wait_settled(redis_url)  # the warm-up's usage counts as before the run
        before = counters(run_id)
        portal_ids: list[str] = []

        order = list(targets)
        open_results: dict[tuple[str, int, bool], Result] = {}
        sat_results: dict[tuple[str, bool], Result] = {}
        for stream in (False, True):
            for rate in ns.rates:
                for rep in range(ns.reps):
                    for name in order if rep % 2 == 0 else order[::-1]:
                        if stream and name in UNSTREAMED:
                            continue
                        await quiet(targets)
                        res = await open_loop(targets[name], rate, ns.seconds, stream)
                        open_results.setdefault((name, rate, stream), Result()).add(res)
                        if name in METERED:
                            portal_ids += res.request_ids
                        print(
                            f"open {rate}/s stream={stream!s:5} {name:8} p50 "
                            f"{pct(res.latencies, 0.5):7.2f} ms p99 {pct(res.latencies, 0.99):8.2f}"
                            f" ms  {dict(sorted(res.statuses.items()))}",
                            flush=True,
                        )
            for rep in range(ns.reps):
                for name in order if rep % 2 == 0 else order[::-1]:
                    if stream and name in UNSTREAMED:
                        continue
                    await quiet(targets)
                    res = await saturate(targets[name], ns.concurrency, ns.seconds, stream)
                    sat_results.setdefault((name, stream), Result()).add(res)
                    if name in METERED:
                        portal_ids += res.request_ids
                    print(
                        f"saturation stream={stream!s:5} {name:8} {res.ok / res.seconds:8.0f} req/s"
                        f"  cpu {res.cpu / max(res.ok, 1) * 1000:.3f} ms/req"
                        f"  {dict(sorted(res.statuses.items()))}",
                        flush=True,
                    )

        if "portal-stream" in targets:  # let the settlers catch up before counting
            settled = await wait_settled(redis_url)
            print(f"usage stream settled {settled:.2f} s after the last request", flush=True)
        ledger = reconcile(portal_ids, before, run_id) if set(METERED) & set(targets) else {}
        if ledger:
            print(f"ledger: {ledger}", flush=True)
        revocation: dict[str, list[float]] = {}
        rss_end: dict[str, list[float]] = {}
        soak_result: dict[str, Result] = {}
        for name in PORTALS:
            if name not in targets:
                continue
            for action in ("revoke", "regenerate"):
                revocation[f"{name}: {action}"] = times = await time_revocation(
                    targets[name], action, 5
                )
                print(f"{name} {action}: old secret last served {times} s after", flush=True)
            if ns.soak and name in ns.soak_targets:
                print(f"soak: {ns.soak} s at {ns.soak_rate}/s against {name}…", flush=True)
                soak_result[name] = await open_loop(targets[name], ns.soak_rate, ns.soak, False)
            rss_end[name] = targets[name].rss_mb()
            print(f"{name} worker RSS MB: start {rss_start[name]} end {rss_end[name]}")
    finally:
        launcher.stop_groups(procs, grace=10)
        private_redis.close()

    report(
        ns,
        targets,
        open_results,
        sat_results,
        ledger,
        revocation,
        rss_start,
        rss_end,
        soak_result,
        db,
    )


def side_by_side(ns, open_results, sat_results, other, base_label, other_label) -> list[str]:  # type: ignore[no-untyped-def]
    """A table of `other` against `portal` (same server, same run): added p50 per rate and CPU
    per request at saturation, streamed and not."""
    lines = [
        f"| stream | rate | added p50 {base_label} | added p50 {other_label} | "
        f"CPU ms/req {base_label} | CPU ms/req {other_label} | CPU ratio |",
        "|---|---|---|---|---|---|---|",
    ]
    for stream in (False, True):
        base, them = sat_results[("portal", stream)], sat_results[(other, stream)]
        base_cpu = base.cpu / max(base.ok, 1) * 1000
        their_cpu = them.cpu / max(them.ok, 1) * 1000
        for rate in ns.rates:
            d = pct(open_results[("direct", rate, stream)].latencies, 0.5)
            a = pct(open_results[("portal", rate, stream)].latencies, 0.5) - d
            b = pct(open_results[(other, rate, stream)].latencies, 0.5) - d
            lines.append(
                f"| {'yes' if stream else 'no'} | {rate}/s | {a:+.2f} | {b:+.2f} | "
                f"{base_cpu:.3f} | {their_cpu:.3f} | {their_cpu / max(base_cpu, 1e-9):.2f}× |"
            )
    return lines


def report(
    ns, targets, open_results, sat_results, ledger, revocation, rss_start, rss_end, soak, db
) -> None:  # type: ignore[no-untyped-def]
    names = list(targets)
    lines = [
        "## Gateway (`benchmarks/gateway`)",
        "",
        "Command: `python -m portal.devstack exec -- .venv/bin/python benchmarks/gateway/run.py`",
        "",
        f"Machine: {machine()}; everything (load generator, servers, PostgreSQL, Redis) shares it.",
        f"{ns.workers} worker processes per server. Fake upstream: aiohttp, answers at once",
        "(Perplexity-shaped body with usage; streams 5 chunks). `portal` = our gateway under uvicorn",
        "as in the Dockerfile (`DJANGO_ENV=production`, JSON request logs at INFO) with full metering,",
        "committed to PostgreSQL before the answer; `portal-stream` = the same with write-behind",
        "metering (`GATEWAY_METERING=stream`: the usage goes to a Redis stream before the answer and",
        "is settled into PostgreSQL in batches); both on a Redis with `appendonly yes` (fsync every",
        "second) as in docker-compose.yml; `proxy` = bare aiohttp pass-through; `litellm` = LiteLLM proxy "
        f"{LITELLM_VERSION} with a master key and **no database** (no virtual keys, no spend",
        "tracking: less work than ours). 50 keys in 5 groups. Targets alternate within each row",
        f"(A B C D, then D C B A), {ns.reps} runs of {ns.seconds:g} s each, samples pooled; before",
        "each run the script waits until every server is idle (LiteLLM works on after its clients",
        "give up on it).",
        "",
        "### Open loop (latency from the scheduled send time)",
        "",
        "| stream | rate | target | p50 ms | p99 ms | added p50 | added p99 | non-200 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (name, rate, stream), r in sorted(
        open_results.items(), key=lambda kv: (kv[0][2], kv[0][1], names.index(kv[0][0]))
    ):
        d = open_results[("direct", rate, stream)]
        p50, p99 = pct(r.latencies, 0.5), pct(r.latencies, 0.99)
        add50 = p50 - pct(d.latencies, 0.5)
        add99 = p99 - pct(d.latencies, 0.99)
        bad = sum(v for k, v in r.statuses.items() if k != 200)
        lines.append(
            f"| {'yes' if stream else 'no'} | {rate}/s | {name} | {p50:.2f} | {p99:.2f} | "
            f"{'' if name == 'direct' else f'{add50:+.2f}'} | "
            f"{'' if name == 'direct' else f'{add99:+.2f}'} | {bad} |"
        )
    lines += [
        "",
        f"### Saturation ({ns.concurrency} concurrent requests, closed loop)",
        "",
        "| stream | target | req/s | server CPU ms per request | × LiteLLM throughput | non-200 |",
        "|---|---|---|---|---|---|",
    ]
    for (name, stream), r in sorted(
        sat_results.items(), key=lambda kv: (kv[0][1], names.index(kv[0][0]))
    ):
        rps = r.ok / r.seconds
        lit = sat_results.get(("litellm", stream))
        ratio = f"{rps / (lit.ok / lit.seconds):.1f}×" if lit and lit.ok else ""
        bad = sum(v for k, v in r.statuses.items() if k != 200)
        lines.append(
            f"| {'yes' if stream else 'no'} | {name} | {rps:,.0f} | "
            f"{r.cpu / max(r.ok, 1) * 1000:.3f} | {ratio} | {bad} |"
        )
    if ("portal-responses", False) in sat_results and ("portal", False) in sat_results:
        lines += [
            "",
            "### Agent API vs chat completions (same server, same run)",
            "",
            "`portal-responses` is the `portal` server on `POST /v1/responses` (a Responses upstream,",
            "proxied: usage re-priced with our prices, one web_search invocation charged, the",
            "response stored in Redis) against `portal` on `POST /chat/completions`.",
            "",
            *side_by_side(ns, open_results, sat_results, "portal-responses", "chat", "responses"),
        ]  # fmt: skip
    if ("portal-budgets", False) in sat_results and ("portal", False) in sat_results:
        lines += [
            "",
            "### Spend controls: budgets and reservation (same server, same run)",
            "",
            "`portal-budgets` is the `portal` server on `POST /chat/completions` with keys whose",
            "group has a hard monthly budget and each key a hard daily one: admission reserves the",
            "request's estimate against the balance and both budgets in one Lua call, metering",
            "releases it and moves both budgets' counters. `portal`'s keys have no budget (the",
            "balance reservation alone). Same server, same run, targets alternating.",
            "",
            *side_by_side(ns, open_results, sat_results, "portal-budgets", "no budgets", "budgets"),
        ]  # fmt: skip
    if ("portal-search", False) in sat_results and ("portal", False) in sat_results:
        chat_sat, search_sat = sat_results[("portal", False)], sat_results[("portal-search", False)]
        chat_cpu = chat_sat.cpu / max(chat_sat.ok, 1) * 1000
        search_cpu = search_sat.cpu / max(search_sat.ok, 1) * 1000
        lines += [
            "",
            "### Search API vs chat completions (same server, same run)",
            "",
            "`portal-search` is the `portal` server on `POST /search` (validated, admitted, the",
            "upstream's 10 results passed on with `usage.cost`, one request fee metered) against",
            "`portal` on `POST /chat/completions`; not streamed (a search has no streamed form).",
            "",
            "| rate | added p50 chat | added p50 search | CPU ms/req chat | CPU ms/req search | req/s chat | req/s search |",
            "|---|---|---|---|---|---|---|",
        ]  # fmt: skip
        for rate in ns.rates:
            d = pct(open_results[("direct", rate, False)].latencies, 0.5)
            chat = pct(open_results[("portal", rate, False)].latencies, 0.5) - d
            search = pct(open_results[("portal-search", rate, False)].latencies, 0.5) - d
            lines.append(
                f"| {rate}/s | {chat:+.2f} | {search:+.2f} | {chat_cpu:.3f} | {search_cpu:.3f} | "
                f"{chat_sat.ok / chat_sat.seconds:,.0f} | "
                f"{search_sat.ok / search_sat.seconds:,.0f} |"
            )
    if ("portal-embeddings", False) in sat_results and ("portal", False) in sat_results:
        chat_sat, embed_sat = (
            sat_results[("portal", False)],
            sat_results[("portal-embeddings", False)],
        )
        chat_cpu = chat_sat.cpu / max(chat_sat.ok, 1) * 1000
        embed_cpu = embed_sat.cpu / max(embed_sat.ok, 1) * 1000
        lines += [
            "",
            "### Embeddings vs chat completions (same server, same run)",
            "",
            "`portal-embeddings` is the `portal` server on `POST /v1/embeddings`: 4 texts, the",
            "upstream answers 1,024 floats per text (OpenAI-compatible, like vLLM), the gateway",
            "re-encodes them as base64 int8 and meters 2,048 tokens (8 µ$); not streamed.",
            "",
            "| rate | added p50 chat | added p50 embeddings | CPU ms/req chat | CPU ms/req embeddings | req/s embeddings |",
            "|---|---|---|---|---|---|",
        ]  # fmt: skip
        for rate in ns.rates:
            d = pct(open_results[("direct", rate, False)].latencies, 0.5)
            chat = pct(open_results[("portal", rate, False)].latencies, 0.5) - d
            embed = pct(open_results[("portal-embeddings", rate, False)].latencies, 0.5) - d
            lines.append(
                f"| {rate}/s | {chat:+.2f} | {embed:+.2f} | {chat_cpu:.3f} | {embed_cpu:.3f} | "
                f"{embed_sat.ok / embed_sat.seconds:,.0f} |"
            )
    if ledger:
        ok = (
            ledger["ok_responses"] == ledger["unique_ids"] == ledger["events_for_ids"]
            == ledger["debits_for_ids"] == ledger["new_events"] == ledger["new_debits"]
            and ledger["unbalanced_accounts"] == 0
        )  # fmt: skip
        lines += [
            "",
            "### Metering after the run",
            "",
            f"{ledger['ok_responses']:,} responses 200 from the portal; usage events for their "
            f"request ids: {ledger['events_for_ids']:,}; ledger debits for them: "
            f"{ledger['debits_for_ids']:,}; new usage events in all: {ledger['new_events']:,}; new "
            f"usage debits in all: {ledger['new_debits']:,}; accounts whose balance ≠ sum of "
            f"entries: {ledger['unbalanced_accounts']}. "
            + ("**Every 200 charged exactly once.**" if ok else "**MISMATCH.**"),
        ]
    if revocation:
        lines += [
            "",
            "### Revocation across workers",
            "",
            "Eight clients hammer one key over both workers; the key is revoked (or regenerated)",
            "through the portal's service. Seconds between the commit and the start of the last",
            "request the old secret still got a 200 for (0 = none after the commit), 5 trials:",
            "",
            *(
                f"- {action}: max {max(v):.3f} s ({', '.join(f'{x:.3f}' for x in v)})"
                for action, v in revocation.items()
            ),
        ]
    if rss_end:
        lines += ["", "### Memory", ""]
        for name, end in rss_end.items():
            run = soak.get(name)
            lines.append(
                f"- {name}: worker RSS (MB) after warm-up {rss_start[name]}; after the benchmark"
                + (f" and a {ns.soak} s soak at {ns.soak_rate} req/s" if run else "")
                + f": {end}."
                + (
                    f" Soak: {run.ok:,} requests 200, p50 {pct(run.latencies, 0.5):.2f} ms, "
                    f"p99 {pct(run.latencies, 0.99):.2f} ms."
                    if run
                    else ""
                )
            )
    write_section(ns.write, "gateway", lines)
    print(f"results written to {ns.write}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rates", type=int, nargs="+", default=[100, 200])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--soak", type=int, default=600, help="seconds; 0 skips it")
    parser.add_argument("--soak-rate", type=int, default=100)
    parser.add_argument("--soak-targets", nargs="+", default=["portal-stream"], choices=PORTALS)
    parser.add_argument(
        "--targets", nargs="+",
        default=["proxy", "portal", "portal-budgets", "portal-responses", "portal-search",
                 "portal-embeddings",
                 "portal-stream", "litellm"],
        choices=["proxy", "portal", "portal-budgets", "portal-responses", "portal-search",
                 "portal-embeddings",
                 "portal-stream", "granian", "litellm"],
    )  # fmt: skip
    parser.add_argument(
        "--portal-env", nargs="*", default=[], metavar="K=V",
        help="extra environment for the portal's server (experiments; not for the results)",
    )  # fmt: skip
    parser.add_argument("--write", default=str(ROOT / "docs" / "benchmarks.md"))
    ns = parser.parse_args()
    # This script is its own Django client (set-up, reconciliation) inside an event loop.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(amain(ns))


if __name__ == "__main__":
    main()

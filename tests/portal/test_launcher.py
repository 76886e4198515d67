"""portal/launcher.py starts every process of `make run`, the tests and the benchmarks.

The Dockerfile and the Procfile cannot import it, so they spell its commands out; these tests
hold the three to one another, so a flag changed in one place and not the others fails here.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import sys
import time
from pathlib import Path
from urllib.parse import unquote

import environ
import psutil
import pytest
from uvicorn.main import main as uvicorn_cli

from portal import launcher

ROOT = Path(__file__).resolve().parents[2]


def dockerfile_cmd() -> list[str]:
    """The command after the last `&&` of the Dockerfile's `CMD ["sh", "-c", "…"]`."""
    lines = [ln for ln in (ROOT / "Dockerfile").read_text().splitlines() if ln.startswith("CMD ")]
    assert len(lines) == 1, lines
    shell, flag, script = json.loads(lines[0].removeprefix("CMD "))
    assert (shell, flag) == ("sh", "-c")
    argv = shlex.split(script.split("&&")[-1])
    assert argv[0] == "exec", argv  # uvicorn replaces the shell: it gets the container's signals
    return argv[1:]


def procfile() -> dict[str, list[str]]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return {name: shlex.split(cmd) for name, cmd in (ln.split(": ", 1) for ln in lines if ln)}


def test_the_web_command_is_the_dockerfiles_cmd():
    assert dockerfile_cmd() == launcher.web_command(8000, host="0.0.0.0", workers=2, exe="uvicorn")
    # The tests and benchmarks run the same, from this virtualenv, on loopback.
    built = launcher.web_command(8123)
    assert built[0] == str(Path(sys.executable).with_name("uvicorn"))
    assert built[1:] == [
        "portal.asgi:application", "--host", "127.0.0.1", "--port", "8123", "--workers", "2",
        "--lifespan", "off", "--no-access-log", "--no-proxy-headers", "--timeout-keep-alive", "75",
    ]  # fmt: skip


def test_the_procfile_runs_the_launchers_commands():
    """`make run` starts the Procfile (honcho): the web as the Dockerfile's, in one worker."""
    proc = procfile()
    assert set(proc) == {"web", "worker", "beat"}
    assert proc["web"] == launcher.web_command("$PORT", workers=1, exe="uvicorn")
    assert proc["worker"] == ["celery", *launcher.worker_command()[1:]]
    schedule = "${PORTAL_LOCAL:-.local}/celerybeat-schedule"
    assert proc["beat"] == ["celery", *launcher.beat_command(schedule)[1:]]


def test_the_in_process_server_is_configured_as_the_command():
    """What uvicorn makes of the command line is what `web_config` gives a test's thread."""
    argv = launcher.web_command(8123)
    params = uvicorn_cli.make_context("uvicorn", argv[1:]).params
    config = launcher.web_config(object(), 8123)
    for name in launcher.WEB_OPTIONS:
        assert getattr(config, name) == params[name], name
    assert (params["lifespan"], params["access_log"], params["proxy_headers"]) == ("off", False, False)  # fmt: skip
    assert params["timeout_keep_alive"] == 75


def test_database_url_quotes_credentials_and_the_socket_directory():
    """A child process connects as its parent does, whatever the user name and password hold."""
    db = {
        "USER": "app@eu/1",
        "PASSWORD": "p@ss:w/rd%?#",
        "HOST": "/tmp/pg sockets",
        "PORT": "5433",
        "NAME": "test_portal",
    }
    url = launcher.database_url(db)
    parsed = environ.Env.db_url_config(url)  # as portal/settings.py reads DATABASE_URL
    assert {k: parsed[k] for k in db} | {"HOST": unquote(parsed["HOST"])} == db | {"PORT": 5433}

    tcp = launcher.database_url({"USER": "postgres", "HOST": "127.0.0.1", "NAME": "portal"})
    assert tcp == "postgres://postgres@127.0.0.1/portal"


def test_wait_for_returns_the_value_retries_what_it_is_told_and_fails_on_the_rest():
    calls = iter([None, ConnectionRefusedError(), 0, "ready"])

    def poll() -> object:
        value = next(calls)
        if isinstance(value, Exception):
            raise value
        return value

    assert launcher.wait_for(poll, 5, "it", every=0.01, retry_on=(OSError,)) == "ready"

    def dead() -> bool:
        raise AssertionError("the web process exited")

    t0 = time.monotonic()
    with pytest.raises(AssertionError, match="exited"):  # at once, not after the timeout
        launcher.wait_for(dead, 30, "it", retry_on=(OSError,))
    assert time.monotonic() - t0 < 1
    with pytest.raises(AssertionError, match="timed out after 0.2s waiting for nothing"):
        launcher.wait_for(lambda: False, 0.2, "nothing", every=0.05)


def test_stop_group_kills_a_group_that_ignores_sigterm_children_included():
    """SIGTERM first; whatever is left after the grace period is killed, children too."""
    script = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "subprocess.Popen([sys.executable, '-c', 'import signal, time;"
        " signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)'])\n"
        "time.sleep(60)\n"
    )
    proc = launcher.spawn([sys.executable, "-c", script])
    children = launcher.wait_for(lambda: psutil.Process(proc.pid).children(), 10, "the child")
    t0 = time.monotonic()
    launcher.stop_group(proc, grace=0.5)
    assert proc.returncode == -9  # it ignored SIGTERM: killed after the grace period
    assert 0.4 < time.monotonic() - t0 < 5
    _, alive = psutil.wait_procs(children, timeout=5)
    assert not alive


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0, reason="only root runs it as another user"
)
def test_a_cluster_stops_after_its_parent_directory_was_made_private_again(tmp_path):
    """pytest makes its temp root 0700 again whenever another pytest session starts (the suite
    runs some in subprocesses); the fault tests' PostgreSQL, run as an unprivileged user, must
    still be stopped and started after that."""
    base = tmp_path / "cluster"
    base.mkdir()
    cluster = launcher.PostgresCluster(base)
    cluster.start()
    try:
        tmp_path.chmod(0o700)
        cluster.stop()
        assert not launcher.port_open(cluster.port)
        tmp_path.chmod(0o700)
        cluster.start()
        assert launcher.port_open(cluster.port)
    finally:
        tmp_path.chmod(0o755)
        with contextlib.suppress(RuntimeError):
            cluster.stop()

"""`make run` stops everything it started, whether stopped with Ctrl-C or SIGTERM.

Two real stacks (`python -m portal.devstack run`) start side by side, each with its own data
directory (PORTAL_LOCAL) and port, so they never touch this test run's own PostgreSQL and Redis:
one gets Ctrl-C (SIGINT to its process group, as a terminal sends it), the other SIGTERM to its pid
(as a process manager, or `kill PID`, sends it). Within 10 s no process either started may remain:
not its children (honcho, uvicorn, Celery), not the embedded PostgreSQL, Redis or localstripe,
each of which runs in a session of its own.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from portal.launcher import free_port, port_open

ROOT = Path(__file__).resolve().parent.parent.parent
READY = "Portal is ready"


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class Stack:
    def __init__(self, local: Path) -> None:
        self.local = local
        self.port = free_port()
        self.log = local.with_suffix(".log")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "REDIS_URL", "STRIPE_", "DJANGO_ENV"))}  # fmt: skip
        env.update(PORTAL_LOCAL=str(local), PORT=str(self.port), PYTHONUNBUFFERED="1")
        # A session of its own stands for the terminal's foreground process group. SIGINT starts
        # ignored, as in a job a shell put in the background (and in some CI runners): Ctrl-C must
        # still stop everything (it was lost that way in fresh-clone runs).
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "portal.devstack", "run"], cwd=ROOT, env=env,
            stdout=self.log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=_ignore_sigint,
        )  # fmt: skip

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, deadline: float) -> None:
        while READY not in self.text():
            assert self.proc.poll() is None, f"devstack exited early:\n{self.text()[-3000:]}"
            assert time.monotonic() < deadline, f"not ready in time:\n{self.text()[-3000:]}"
            time.sleep(0.2)

    def processes(self) -> list[psutil.Process]:
        """Everything this stack started: its descendants and whatever works in its data dir."""
        try:
            found = {p.pid: p for p in psutil.Process(self.proc.pid).children(recursive=True)}
        except psutil.NoSuchProcess:
            found = {}
        for p in psutil.process_iter(["cmdline"]):
            if str(self.local) in " ".join(p.info["cmdline"] or []):
                found[p.pid] = p
        found.pop(os.getpid(), None)
        return [p for p in found.values() if cmdline(p)]

    def ports(self) -> list[int]:
        text = self.text()
        found = [int(p) for p in re.findall(r"(?:Redis|localstripe) on 127\.0\.0\.1:(\d+)", text)]
        return [self.port, *found]


def cmdline(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline())
    except psutil.Error:  # gone, or a zombie: not running any more
        return ""


@pytest.mark.slow
def test_ctrl_c_and_sigterm_stop_everything_make_run_started(tmp_path):
    stacks = {"SIGINT": Stack(tmp_path / "ctrl-c"), "SIGTERM": Stack(tmp_path / "sigterm")}
    started: dict[str, list[psutil.Process]] = {}
    try:
        deadline = time.monotonic() + 150
        for stack in stacks.values():
            stack.wait_ready(deadline)
        for name, stack in stacks.items():
            started[name] = stack.processes()
            names = " ".join(cmdline(p) for p in started[name])
            for what in ("postgres", "redis-server", "localstripe", "honcho", "uvicorn", "worker", "beat"):  # fmt: skip
                assert what in names, f"{what} not running before the stop ({name})"
            assert all(port_open(port) for port in stack.ports())

        t0 = time.monotonic()
        os.killpg(stacks["SIGINT"].proc.pid, signal.SIGINT)  # Ctrl-C
        stacks["SIGTERM"].proc.send_signal(signal.SIGTERM)  # kill PID
        for name, stack in stacks.items():
            try:
                code = stack.proc.wait(15)
            except subprocess.TimeoutExpired:
                stack.proc.send_signal(signal.SIGUSR1)  # devstack prints its threads' stacks
                time.sleep(1)
                left = [cmdline(p) for p in stack.processes()]
                raise AssertionError(
                    f"{name}: devstack still running 15 s after the signal; its processes: {left}"
                    f"\n{stack.text()[-6000:]}"
                ) from None
            assert code == 0
            _, alive = psutil.wait_procs(started[name], timeout=max(0.1, t0 + 10 - time.monotonic()))  # fmt: skip
            alive = [p for p in alive if cmdline(p)]  # zombies are dead, awaiting their reaper
            assert not alive, f"{name} left running: {[cmdline(p) for p in alive]}"
            assert time.monotonic() - t0 < 10, f"{name}: stopping took over 10 s"
            assert not stack.processes()
            assert not any(port_open(port) for port in stack.ports())
            # PostgreSQL removes postmaster.pid when it shuts down.
            assert not (stack.local / "pgdata" / "postmaster.pid").exists()
            assert "stopping…" in stack.text()
    finally:
        for stack in stacks.values():
            leftovers = stack.processes() if stack.proc.poll() is None else []
            for p in [*leftovers, *(q for ps in started.values() for q in ps)]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    p.kill()
            with contextlib.suppress(ProcessLookupError):
                stack.proc.kill()

"""`make test` on a machine without Chromium: install it when allowed, else skip only the browser
tests and say what to install."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from portal import devstack

ROOT = Path(__file__).resolve().parent.parent.parent


def test_missing_chromium_and_no_permission_to_install_says_what_to_install(tmp_path, capsys):
    missing = tmp_path / "chromium"
    assert devstack.ensure_chromium(missing, may_install=False) is False
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    assert "SKIPPED" in lines[0] and "sudo apt-get install -y chromium" in lines[0]
    assert str(missing) in lines[0]


def test_only_debians_path_is_installed_by_apt(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(devstack.shutil, "which", lambda name, **kw: f"/usr/bin/{name}")
    assert devstack.may_install_chromium(Path(devstack.DEBIAN_CHROMIUM)) is True
    assert devstack.may_install_chromium(tmp_path / "chromium") is False
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert devstack.may_install_chromium(Path(devstack.DEBIAN_CHROMIUM)) is False


def test_present_chromium_is_used_as_it_is(tmp_path, capsys):
    there = tmp_path / "chromium"
    there.touch()
    assert devstack.ensure_chromium(there, may_install=True) is True
    assert capsys.readouterr().out == ""


PROBE = """
    import pytest

    @pytest.mark.e2e
    def test_needs_a_browser(browser):
        pass

    def test_plain():
        pass
"""


def run_probe(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run a tiny suite (one e2e test, one plain) with the project's fixtures in a subprocess."""
    (tmp_path / "conftest.py").write_text("from tests.conftest import *  # noqa: F403\n")
    (tmp_path / "test_probe.py").write_text(textwrap.dedent(PROBE))
    # CI runs the whole suite with PORTAL_REQUIRE_BROWSER=1; each probe says what it wants.
    inherited = {k: v for k, v in os.environ.items() if k != "PORTAL_REQUIRE_BROWSER"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"),
         "--rootdir", str(tmp_path), "-p", "no:randomly", str(tmp_path / "test_probe.py")],
        cwd=ROOT, env={**inherited, "PYTHONPATH": str(ROOT), **env},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_browser_tests_are_skipped_never_passed_without_chromium(tmp_path):
    missing = str(tmp_path / "no-chromium")
    done = run_probe(tmp_path, PORTAL_CHROMIUM=missing)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed, 1 skipped" in done.stdout, done.stdout
    assert f"{missing} is missing: install Debian's Chromium" in done.stdout, done.stdout


def test_ci_demands_the_browser(tmp_path):
    done = run_probe(tmp_path, PORTAL_CHROMIUM=str(tmp_path / "none"), PORTAL_REQUIRE_BROWSER="1")
    assert done.returncode == 1 and "1 passed, 1 error" in done.stdout, done.stdout


def test_the_setting_names_a_path(monkeypatch, tmp_path):
    monkeypatch.setenv("PORTAL_CHROMIUM", str(tmp_path / "x"))
    assert devstack.chromium_path() == tmp_path / "x"
    monkeypatch.delenv("PORTAL_CHROMIUM")
    assert devstack.chromium_path() == Path("/usr/bin/chromium")

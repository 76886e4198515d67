"""House rules (CONVENTIONS.md, Layers; docs/architecture.md): imports point down, judged by
import-linter's contracts in pyproject.toml; only `tasks.py` imports lazily, to break the
service ↔ task circle, so every other module's dependencies are at its top where the contracts
see them."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APPS = ("core", "accounts", "audit", "groups", "members", "keys", "usage", "billing", "alerts")
APPS += ("management", "gateway", "portal")
# Where a deferred import is the point: Celery tasks (the circle above), AppConfig.ready() (the
# app registry is loaded only then), data migrations, and the launcher's optional embedded
# servers (imported only when no DATABASE_URL/REDIS_URL is given).
ALLOWED = {"tasks.py", "apps.py", "devstack.py", "launcher.py"}


def deferred_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import | ast.ImportFrom):
                    found.append(f"{path.relative_to(ROOT)}:{inner.lineno} in {node.name}")
    return found


def test_only_tasks_modules_import_inside_functions():
    modules = [
        p
        for app in APPS
        for p in (ROOT / app).rglob("*.py")
        if p.name not in ALLOWED and "migrations" not in p.parts
    ]
    assert len(modules) > 100
    assert [hit for p in sorted(modules) for hit in deferred_imports(p)] == []


def test_imports_point_down():
    """A wrong-way import (say keys importing management) breaks the layers contract."""
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 1 kept, 0 broken." in result.stdout

"""House rule (CONVENTIONS.md, Layers): only `tasks.py` imports lazily, to break the service ↔ task
circle; every other billing module imports at the top, so its dependencies are visible there and
import-linter judges all of them."""

from __future__ import annotations

import ast
from pathlib import Path

BILLING = Path(__file__).resolve().parents[2] / "billing"


def deferred_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import | ast.ImportFrom):
                    found.append(
                        f"{path.relative_to(BILLING.parent)}:{inner.lineno} in {node.name}"
                    )
    return found


def test_only_tasks_modules_import_inside_functions():
    modules = [
        p for p in BILLING.rglob("*.py") if p.name != "tasks.py" and "migrations" not in p.parts
    ]
    assert len(modules) > 10
    assert [hit for p in sorted(modules) for hit in deferred_imports(p)] == []

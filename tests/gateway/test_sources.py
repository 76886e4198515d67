"""The gateway's Lua scripts and SQL statements live in files (gateway/lua, gateway/sql): each one
is used, and the production image ships them."""

from __future__ import annotations

import fnmatch
import importlib
import re
from pathlib import Path

from gateway.sources import LOADED

ROOT = Path(__file__).resolve().parents[2]
GATEWAY = ROOT / "gateway"


def script_files() -> set[str]:
    return {
        f"{p.parent.name}/{p.stem}" for d in ("lua", "sql") for p in (GATEWAY / d).glob(f"*.{d}")
    }


def test_every_script_file_is_loaded():
    importlib.import_module("gateway.store")  # imports every part of the gateway's data access
    importlib.import_module("gateway.async_jobs")  # and the async chat completions' statements

    assert "lua/admit" in LOADED and "sql/meter" in LOADED
    assert script_files() == LOADED


def test_the_docker_image_copies_the_script_files():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^COPY \. \.$", dockerfile, re.M)  # the whole tree...
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for name in script_files():  # ...less nothing that matches a script file
        path = f"gateway/{name}.{name.split('/')[0]}"
        parts = path.split("/")
        for pattern in ignored:
            assert not any(
                fnmatch.fnmatch("/".join(parts[: i + 1]), pattern) or fnmatch.fnmatch(part, pattern)
                for i, part in enumerate(parts)
            ), (path, pattern)

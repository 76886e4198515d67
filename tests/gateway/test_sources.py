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


def test_no_script_negates_a_count_with_a_unary_minus():
    """Redis refuses "-0" as an integer, and Lua's `-x` of a 0 is -0: a zero-cost request (a tiny
    embeddings input rounds to $0) settled with `-cost` failed the whole admission script with
    "value is not an integer or out of range" (a 503). The scripts write `0 - x` instead."""
    import redis
    from django.conf import settings

    client = redis.Redis.from_url(settings.REDIS_URL)
    client.hset("test:negate", "bal", 5)
    negate = "return redis.call('HINCRBY', KEYS[1], 'bal', {})"
    try:
        client.eval(negate.format("-tonumber(ARGV[1])"), 1, "test:negate", "0")
        raise AssertionError("Redis took -0 as an integer: the rule below is no longer needed")
    except redis.ResponseError as refused:
        assert "not an integer" in str(refused)
    assert client.eval(negate.format("0 - tonumber(ARGV[1])"), 1, "test:negate", "0") == 5
    client.delete("test:negate")
    for path in sorted((GATEWAY / "lua").glob("*.lua")):
        code = "\n".join(line.split("--")[0] for line in path.read_text().splitlines())
        assert not re.search(r"[,(=]\s*-\s*[A-Za-z_(]", code), path.name

"""Shared by the benchmarks: a database of their own on the server `DATABASE_URL` names."""

from __future__ import annotations

import os
from urllib.parse import unquote, urlparse, urlunparse


def use_bench_database(suffix: str) -> str:
    """Point DATABASE_URL at `<name>_<suffix>` on the same server, creating it if needed."""
    import psycopg

    url = urlparse(os.environ["DATABASE_URL"])
    name = f"{url.path.lstrip('/')}_{suffix}"
    conninfo = {
        "dbname": url.path.lstrip("/"),
        "user": unquote(url.username or ""),
        # netloc, not hostname: an embedded server's socket directory is %-quoted there.
        "host": unquote(url.netloc.split("@")[-1].split(":")[0]),
    }
    if url.port:
        conninfo["port"] = str(url.port)
    if url.password:
        conninfo["password"] = unquote(url.password)
    with psycopg.connect(**conninfo, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')
    os.environ["DATABASE_URL"] = urlunparse(url._replace(path=f"/{name}"))
    return name


def machine() -> str:
    """`2 cores (AMD EPYC …)` for the results table."""
    info = "/proc/cpuinfo"
    cpu = "?"
    if os.path.exists(info):
        with open(info) as f:
            cpu = next(
                (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?"
            )
    return f"{os.cpu_count()} cores ({cpu})"


def write_section(path: os.PathLike[str] | str, name: str, lines: list[str]) -> None:
    """Replace (or append) the `<!-- name:start -->…<!-- name:end -->` block of docs/benchmarks.md."""
    from pathlib import Path

    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = "\n".join([start, *lines, end])
    p = Path(path)
    text = p.read_text() if p.exists() else "# Benchmarks\n"
    if start in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    p.write_text(text)

"""The gateway's Lua scripts (gateway/lua) and SQL statements (gateway/sql), read once at import.

They are plain files so that an editor highlights them and a diff shows them as code; they ship
with the rest of the tree (the Dockerfile copies it whole).
"""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent
LOADED: set[str] = set()  # "lua/admit", "sql/meter", ...: what the gateway's modules read


def lua(*names: str) -> str:
    """The named scripts, joined in order (a script may start with the helpers it uses)."""
    LOADED.update(f"lua/{name}" for name in names)
    return "\n".join((_HERE / "lua" / f"{name}.lua").read_text() for name in names)


def sql(name: str, **parts: str) -> str:
    """The named statement, with its `{part}` placeholders filled in (column lists)."""
    LOADED.add(f"sql/{name}")
    text = (_HERE / "sql" / f"{name}.sql").read_text()
    return text.format(**parts) if parts else text

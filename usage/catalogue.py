"""Load the catalogue from a TOML (or YAML) file; see usage/catalogue.toml.

Four kinds of table: `[models.<name>]` (AIModel: prices, upstream, the APIs it is served on;
for an embeddings model also its `dimensions` and whether it is `contextualized`),
`[tools.<type>]` (ToolPrice: the fee per invocation of an Agent API tool),
`[presets.<name>]` (Preset: an effort preset, the model it runs on and its settings) and
`[limits.<family>]` (RateLimit: an API family's requests per minute and/or per second at usage
tiers 0..5, per API group; usage.tiers). The file is
validated whole before anything is written; an error names the file and the LINE of the table or
key at fault (tomllib reports lines for syntax errors only, so semantic errors are located in the
text: the key's line inside its table, else the table's header).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from django.db import transaction

try:  # optional: only YAML catalogues need it
    import yaml
except ImportError:  # pragma: no cover - installed with the dev tools
    yaml = None  # type: ignore[assignment]

from core.money import parse_dollars
from usage.metrics import UPSTREAM_APIS
from usage.models import MODEL_APIS, AIModel, Preset, RateLimit, ToolPrice
from usage.tiers import FAMILIES, TIER_COUNT

DEFAULT_FILE = Path(__file__).with_name("catalogue.toml")
PRICE_FIELDS = (
    "input_per_m", "output_per_m", "citation_per_m", "reasoning_per_m", "search_per_k",
    "cache_read_per_m", "cache_write_per_m",
)  # fmt: skip
TEXT_FIELDS = ("upstream_base_url", "upstream_api_key_env", "upstream_model")
# Settings of embeddings models only (api = "embeddings"): `dimensions` (the vector length, the
# largest a request may ask for and the default; at least MIN_DIMENSIONS) and `contextualized`
# (served on /v1/contextualizedembeddings; default false).
EMBEDDING_KEYS = ("dimensions", "contextualized")
MIN_DIMENSIONS = 128  # Perplexity's smallest Matryoshka size (docs/research §1.2)
MODEL_KEYS = frozenset(
    {
        *PRICE_FIELDS,
        *TEXT_FIELDS,
        "api",
        "upstream_api",
        "request_fee_per_k",
        "rate_limit_rpm",
        "enabled",
        *EMBEDDING_KEYS,
    }  # fmt: skip
)
TOOL_KEYS = frozenset({"fee", "enabled"})
# A preset's settings: each key and the type its value must have.
PRESET_SETTINGS: dict[str, type | tuple[type, ...]] = {
    "max_steps": int,
    "reasoning_effort": str,
    "max_output_tokens": int,
    "tools": list,
}
PRESET_KEYS = frozenset({"model", "aliases", "enabled", *PRESET_SETTINGS})
# A [limits.<family>] table: per_minute / per_second limits (a list of one whole number per tier,
# or one number for every tier); `qps` is Perplexity's word for the Agent API's per-second limit,
# `burst` must equal the per-second limit (a 1-second window admits that many at once).
LIMIT_WINDOWS = {"rpm": "per_minute", "rps": "per_second", "qps": "per_second"}
LIMIT_KEYS = frozenset({*LIMIT_WINDOWS, "burst", "published", "enabled"})
TABLES = ("models", "tools", "presets", "limits")


class CatalogueError(ValueError):
    pass


@dataclass
class SyncResult:
    created: list[str]
    updated: list[str]
    unchanged: list[str]
    disabled: list[str]


@dataclass
class Catalogue:
    """A validated catalogue file: the field values of each model, tool and preset."""

    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    tools: dict[str, dict[str, Any]] = field(default_factory=dict)
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)
    limits: dict[str, dict[str, Any]] = field(default_factory=dict)


# --- where in the text -------------------------------------------------------------------------

_KEY_PART = re.compile(r'\s*(?:"((?:[^"\\]|\\.)*)"|\'([^\']*)\'|([A-Za-z0-9_-]+))\s*')
_HEADER = re.compile(r"^\s*\[(?!\[)(.+?)\]\s*(?:#.*)?$")
_ASSIGN = re.compile(r"^\s*([^=#\[]+?)\s*=")


def _dotted(text: str) -> tuple[str, ...] | None:
    """The parts of a dotted TOML key (`models."openai/gpt-5"` → ("models", "openai/gpt-5"))."""
    parts: list[str] = []
    pos = 0
    while True:
        match = _KEY_PART.match(text, pos)
        if not match:
            return None
        parts.append(next(g for g in match.groups() if g is not None))
        pos = match.end()
        if pos == len(text):
            return tuple(parts)
        if text[pos] != ".":
            return None
        pos += 1


class Lines:
    """Find the line of a table or key in a TOML text (1-based; 0 when not found)."""

    def __init__(self, text: str) -> None:
        self.tables: dict[tuple[str, ...], int] = {}
        self.keys: dict[tuple[str, ...], int] = {}
        table: tuple[str, ...] = ()
        for number, line in enumerate(text.splitlines(), 1):
            header = _HEADER.match(line)
            if header:
                table = _dotted(header.group(1)) or ()
                self.tables.setdefault(table, number)
                continue
            assign = _ASSIGN.match(line)
            if assign:
                key = _dotted(assign.group(1))
                if key:
                    full = (*table, *key)
                    self.keys.setdefault(full, number)
                    for i in range(len(table) + 1, len(full)):  # a dotted key opens tables
                        self.tables.setdefault(full[:i], number)

    def of(self, *path: str) -> int:
        """The line of the key or table at `path`, else of its nearest enclosing one."""
        for end in range(len(path), 0, -1):
            found = self.keys.get(path[:end]) or self.tables.get(path[:end])
            if found:
                return found
        return 0


class _Reader:
    def __init__(self, path: Path, lines: Lines | None) -> None:
        self.path = path
        self.lines = lines

    def error(self, message: str, *where: str) -> CatalogueError:
        line = self.lines.of(*where) if self.lines else 0
        at = f"{self.path}, line {line}" if line else str(self.path)
        return CatalogueError(f"{at}: {'.'.join(where)}: {message}")

    def table(self, value: Any, *where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error("must be a table.", *where)
        return value

    def known(self, spec: dict[str, Any], keys: frozenset[str], *where: str) -> None:
        for key in sorted(set(spec) - keys):
            raise self.error(
                f"unknown setting {key!r} (known: {', '.join(sorted(keys))}).", *where, key
            )

    def micros(self, value: Any, *where: str, per: int = 1) -> int:
        """Dollars (× `per`, exactly) in micro-dollars; never negative."""
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise self.error("must be a number of dollars.", *where)
        try:
            amount = Decimal(str(value)) * per
            micros = parse_dollars(amount)
        except (ValueError, InvalidOperation) as exc:
            raise self.error(f"{exc}" if str(exc) else "not an amount.", *where) from exc
        if amount < 0:
            raise self.error("prices cannot be negative.", *where)
        return micros

    def typed(self, value: Any, kind: type | tuple[type, ...], *where: str) -> Any:
        ok = isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool)
        if not ok:
            names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            raise self.error(f"must be {_TYPE_NAMES.get(names, names)}.", *where)
        return value


_TYPE_NAMES = {
    "str": "a string",
    "int": "a whole number",
    "bool": "true or false",
    "list": "a list",
}


def _parse(path: Path) -> tuple[dict[str, Any], _Reader]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise CatalogueError(f"Cannot read {path}: {exc.strerror}.") from exc
    yaml_file = path.suffix in (".yaml", ".yml")
    if yaml_file and yaml is None:
        raise CatalogueError("YAML catalogues need PyYAML installed; use TOML.")
    try:
        data = (yaml.safe_load(text) or {}) if yaml_file else tomllib.loads(text)
    except Exception as exc:  # any parse error is the file's fault (tomllib names the line)
        raise CatalogueError(f"{path} is not valid: {exc}") from exc
    reader = _Reader(path, None if yaml_file else Lines(text))
    if not isinstance(data, dict):
        raise CatalogueError(f"{path}: must be a table of [models.<name>] tables.")
    for key in data:
        if key not in TABLES:
            raise reader.error(f"unknown table (known: {', '.join(TABLES)}).", str(key))
    return data, reader


def read_file(path: str | Path) -> dict[str, dict[str, Any]]:
    """The `[models.<name>]` tables of a catalogue file, as written (not validated)."""
    path = Path(path)
    data, _ = _parse(path)
    models = data.get("models")
    if not isinstance(models, dict) or not models:
        raise CatalogueError(f"{path} has no [models.<name>] tables.")
    return models


def read_catalogue(path: str | Path = DEFAULT_FILE) -> Catalogue:
    """Read and validate a whole catalogue file (CatalogueError naming the line at fault)."""
    path = Path(path)
    data, reader = _parse(path)
    models = data.get("models")
    if not isinstance(models, dict) or not models:
        raise CatalogueError(f"{path} has no [models.<name>] tables.")
    result = Catalogue()
    for name, spec in models.items():
        result.models[name] = _model_fields(reader, name, spec)
    for name, spec in reader.table(data.get("tools", {}), "tools").items():
        result.tools[name] = _tool_fields(reader, name, spec)
    for name, spec in reader.table(data.get("presets", {}), "presets").items():
        result.presets[name] = _preset_fields(reader, name, spec, result)
    for name, spec in reader.table(data.get("limits", {}), "limits").items():
        result.limits[name] = _limit_fields(reader, name, spec, result)
    aliases: dict[str, str] = {}
    for name, values in result.presets.items():
        for alias in values["aliases"]:
            other = aliases.get(alias) or (alias if alias in result.presets else None)
            if other:
                raise reader.error(
                    f"{alias!r} already names preset {other!r}.", "presets", name, "aliases"
                )
            aliases[alias] = name
    return result


def model_fields(name: str, spec: dict[str, Any], reader: _Reader | None = None) -> dict[str, Any]:
    """Turn one [models.NAME] table into AIModel field values (prices in micros)."""
    return _model_fields(reader or _Reader(DEFAULT_FILE, None), name, spec)


def _model_fields(r: _Reader, name: str, spec: Any) -> dict[str, Any]:
    at = ("models", name)
    spec = r.table(spec, *at)
    r.known(spec, MODEL_KEYS, *at)
    values: dict[str, Any] = {"enabled": r.typed(spec.get("enabled", True), bool, *at, "enabled")}
    for price in PRICE_FIELDS:
        values[price] = r.micros(spec.get(price, 0), *at, price)
    fees = spec.get("request_fee_per_k", {})
    if isinstance(fees, (int, float, str)) and not isinstance(fees, bool):
        fees = dict.fromkeys(("low", "medium", "high"), fees)  # one fee whatever the size
    fees = r.table(fees, *at, "request_fee_per_k")
    r.known(fees, frozenset({"low", "medium", "high"}), *at, "request_fee_per_k")
    for size in ("low", "medium", "high"):
        values[f"request_{size}_per_k"] = r.micros(
            fees.get(size, 0), *at, "request_fee_per_k", size
        )
    for text in TEXT_FIELDS:
        default = "simulator://" if text == "upstream_base_url" else ""
        values[text] = r.typed(spec.get(text, default), str, *at, text)
    api = r.typed(spec.get("api", "chat"), str, *at, "api")
    apis = [part.strip() for part in api.split(",")]
    canonical = ",".join(a for a in ("chat", "agent", "search", "embeddings") if a in apis)
    if (
        not apis
        or set(apis) - {"chat", "agent", "search", "embeddings"}
        or (canonical not in MODEL_APIS)
    ):
        raise r.error(
            'must be "chat", "agent", "chat,agent", "search" or "embeddings".', *at, "api"
        )
    values["api"] = canonical
    upstream_api = r.typed(spec.get("upstream_api", "chat_completions"), str, *at, "upstream_api")
    if upstream_api not in UPSTREAM_APIS:
        raise r.error(f"must be one of {', '.join(UPSTREAM_APIS)}.", *at, "upstream_api")
    values["upstream_api"] = upstream_api
    rpm = spec.get("rate_limit_rpm", 50)
    if not isinstance(rpm, int) or isinstance(rpm, bool) or rpm < 1:
        raise r.error("must be a whole number ≥ 1.", *at, "rate_limit_rpm")
    values["rate_limit_rpm"] = rpm
    values.update(_embedding_fields(r, at, spec, canonical))
    return values


def _embedding_fields(
    r: _Reader, at: tuple[str, str], spec: dict[str, Any], api: str
) -> dict[str, Any]:
    """`dimensions` and `contextualized`: required (dimensions) for an embeddings model, refused
    for any other."""
    if api != "embeddings":
        for key in EMBEDDING_KEYS:
            if key in spec:
                raise r.error('is only for embeddings models (api = "embeddings").', *at, key)
        return {"dimensions": 0, "contextualized": False}
    if "dimensions" not in spec:
        raise r.error("an embeddings model needs its dimensions (the vector length).", *at)
    dimensions = r.typed(spec["dimensions"], int, *at, "dimensions")
    if dimensions < MIN_DIMENSIONS:
        raise r.error(f"must be a whole number ≥ {MIN_DIMENSIONS}.", *at, "dimensions")
    contextualized = r.typed(spec.get("contextualized", False), bool, *at, "contextualized")
    return {"dimensions": dimensions, "contextualized": contextualized}


def _tool_fields(r: _Reader, name: str, spec: Any) -> dict[str, Any]:
    at = ("tools", name)
    spec = r.table(spec, *at)
    r.known(spec, TOOL_KEYS, *at)
    if "fee" not in spec:
        raise r.error("needs a fee (dollars per invocation; 0 for none).", *at)
    return {
        # Dollars per invocation → micros per 1,000 invocations, exactly.
        "fee_per_k": r.micros(spec["fee"], *at, "fee", per=1000),
        "enabled": r.typed(spec.get("enabled", True), bool, *at, "enabled"),
    }


def _preset_fields(r: _Reader, name: str, spec: Any, catalogue: Catalogue) -> dict[str, Any]:
    at = ("presets", name)
    spec = r.table(spec, *at)
    r.known(spec, PRESET_KEYS, *at)
    model = r.typed(spec.get("model"), str, *at, "model") if "model" in spec else None
    if model is None:
        raise r.error("needs the model it runs on.", *at)
    target = catalogue.models.get(model)
    if target is None:
        raise r.error(f"unknown model {model!r} (not in [models]).", *at, "model")
    if "agent" not in target["api"].split(","):
        raise r.error(f"model {model!r} is not served on the Agent API.", *at, "model")
    aliases = r.typed(spec.get("aliases", []), list, *at, "aliases")
    for alias in aliases:
        r.typed(alias, str, *at, "aliases")
    settings: dict[str, Any] = {}
    for key, kind in PRESET_SETTINGS.items():
        if key in spec:
            settings[key] = r.typed(spec[key], kind, *at, key)
    for tool in settings.get("tools", []):
        r.typed(tool, str, *at, "tools")
        if tool not in catalogue.tools:
            raise r.error(f"unknown tool {tool!r} (not in [tools]).", *at, "tools")
    for key in ("max_steps", "max_output_tokens"):
        if key in settings and settings[key] < 1:
            raise r.error("must be a whole number ≥ 1.", *at, key)
    return {
        "model": model,
        "aliases": list(aliases),
        "settings": settings,
        "enabled": r.typed(spec.get("enabled", True), bool, *at, "enabled"),
    }


def _limit_fields(r: _Reader, name: str, spec: Any, catalogue: Catalogue) -> dict[str, Any]:
    at = ("limits", name)
    spec = r.table(spec, *at)
    r.known(spec, LIMIT_KEYS, *at)
    model = catalogue.models.get(name)
    if name not in FAMILIES and (model is None or "chat" not in model["api"].split(",")):
        raise r.error(
            "unknown API family: a chat model's name (in [models]) or one of "
            f"{', '.join(FAMILIES)}.",
            *at,
        )
    values: dict[str, Any] = {"per_minute": None, "per_second": None}
    for key, column in LIMIT_WINDOWS.items():
        if key not in spec:
            continue
        if values[column] is not None:
            raise r.error("rps and qps are the same limit: give one.", *at, key)
        values[column] = _per_tier(r, spec[key], *at, key)
    if values["per_minute"] is None and values["per_second"] is None:
        raise r.error("needs rpm (requests per minute) and/or rps (per second).", *at)
    if "burst" in spec:
        burst = r.typed(spec["burst"], int, *at, "burst")
        if values["per_second"] is None or {burst} != set(values["per_second"]):
            raise r.error(
                "must equal rps at every tier (a 1-second window admits rps at once).",
                *at,
                "burst",
            )
    values["published"] = r.typed(spec.get("published", True), bool, *at, "published")
    values["enabled"] = r.typed(spec.get("enabled", True), bool, *at, "enabled")
    return values


def _per_tier(r: _Reader, value: Any, *where: str) -> list[int]:
    """A whole number ≥ 1 per usage tier (a list of TIER_COUNT), or one for every tier."""
    values = value if isinstance(value, list) else [value] * TIER_COUNT
    if len(values) != TIER_COUNT:
        raise r.error(f"must list {TIER_COUNT} limits, one per tier 0..{TIER_COUNT - 1}.", *where)
    for limit in values:
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise r.error("must be whole numbers ≥ 1 (a list per tier, or one).", *where)
    return list(values)


# --- sync --------------------------------------------------------------------------------------


def _upsert(
    manager: Any, wanted: dict[str, dict[str, Any]], result: SyncResult, label: str
) -> None:
    """Create, update and disable rows of `manager` (by name) to match `wanted`."""
    existing = {row.name: row for row in manager.select_for_update()}
    for name, values in wanted.items():
        row = existing.get(name)
        shown = name if label == "model" else f"{label} {name}"
        if row is None:
            manager.create(name=name, **values)
            result.created.append(shown)
            continue
        changed = [f for f, v in values.items() if getattr(row, f) != v]
        if changed:
            for f in changed:
                setattr(row, f, values[f])
            row.save(update_fields=[*changed, "updated_at"])
            result.updated.append(shown)
        else:
            result.unchanged.append(shown)
    for name, row in existing.items():
        if name not in wanted and row.enabled:
            row.enabled = False
            row.save(update_fields=["enabled", "updated_at"])
            result.disabled.append(name if label == "model" else f"{label} {name}")


@transaction.atomic
def catalogue_sync(*, path: str | Path = DEFAULT_FILE) -> SyncResult:
    """Make the catalogue match the file: create, update, and disable what the file lacks."""
    catalogue = read_catalogue(path)
    result = SyncResult([], [], [], [])
    _upsert(AIModel.objects, catalogue.models, result, "model")
    _upsert(ToolPrice.objects, catalogue.tools, result, "tool")
    ids = dict(AIModel.objects.values_list("name", "id"))
    presets = {
        name: {
            **{k: v for k, v in values.items() if k != "model"},
            "model_id": ids[values["model"]],
        }
        for name, values in catalogue.presets.items()
    }
    _upsert(Preset.objects, presets, result, "preset")
    _upsert(RateLimit.objects, catalogue.limits, result, "limits")
    return result

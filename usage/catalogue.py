"""Load the model catalogue from a TOML (or YAML) file; see usage/catalogue.toml."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.db import transaction

try:  # optional: only YAML catalogues need it
    import yaml
except ImportError:  # pragma: no cover - installed with the dev tools
    yaml = None  # type: ignore[assignment]

from core.money import parse_dollars
from usage.models import AIModel

DEFAULT_FILE = Path(__file__).with_name("catalogue.toml")
PRICE_FIELDS = ("input_per_m", "output_per_m", "citation_per_m", "reasoning_per_m", "search_per_k")
TEXT_FIELDS = ("upstream_base_url", "upstream_api_key_env", "upstream_model")


class CatalogueError(ValueError):
    pass


@dataclass
class SyncResult:
    created: list[str]
    updated: list[str]
    unchanged: list[str]
    disabled: list[str]


def read_file(path: str | Path) -> dict[str, dict[str, Any]]:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise CatalogueError(f"Cannot read {path}: {exc.strerror}.") from exc
    yaml_file = path.suffix in (".yaml", ".yml")
    if yaml_file and yaml is None:
        raise CatalogueError("YAML catalogues need PyYAML installed; use TOML.")
    try:
        data = (yaml.safe_load(text) or {}) if yaml_file else tomllib.loads(text)
    except Exception as exc:  # any parse error is the file's fault
        raise CatalogueError(f"{path} is not valid: {exc}") from exc
    models = data.get("models")
    if not isinstance(models, dict) or not models:
        raise CatalogueError(f"{path} has no [models.<name>] tables.")
    return models


def _micros(value: Any, where: str) -> int:
    try:
        micros = parse_dollars(value)
    except ValueError as exc:
        raise CatalogueError(f"{where}: {exc}") from exc
    if micros < 0:
        raise CatalogueError(f"{where}: prices cannot be negative.")
    return micros


def model_fields(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Turn one [models.NAME] table into AIModel field values (prices in micros)."""
    known = (
        set(PRICE_FIELDS) | set(TEXT_FIELDS) | {"request_fee_per_k", "rate_limit_rpm", "enabled"}
    )
    unknown = set(spec) - known
    if unknown:
        raise CatalogueError(f"models.{name}: unknown setting(s) {', '.join(sorted(unknown))}.")
    values: dict[str, Any] = {"enabled": bool(spec.get("enabled", True))}
    for field in PRICE_FIELDS:
        values[field] = _micros(spec.get(field, 0), f"models.{name}.{field}")
    fees = spec.get("request_fee_per_k", {})
    if not isinstance(fees, dict):
        raise CatalogueError(f"models.{name}.request_fee_per_k must be a table low/medium/high.")
    for size in ("low", "medium", "high"):
        values[f"request_{size}_per_k"] = _micros(
            fees.get(size, 0), f"models.{name}.request_fee_per_k.{size}"
        )
    for field in TEXT_FIELDS:
        values[field] = str(spec.get(field, "simulator://" if field == "upstream_base_url" else ""))
    rpm = spec.get("rate_limit_rpm", 50)
    if not isinstance(rpm, int) or rpm < 1:
        raise CatalogueError(f"models.{name}.rate_limit_rpm must be a whole number ≥ 1.")
    values["rate_limit_rpm"] = rpm
    return values


@transaction.atomic
def catalogue_sync(*, path: str | Path = DEFAULT_FILE) -> SyncResult:
    """Make the catalogue match the file: create, update, and disable what the file lacks."""
    specs = read_file(path)
    wanted = {name: model_fields(name, spec) for name, spec in specs.items()}
    result = SyncResult([], [], [], [])
    existing = {m.name: m for m in AIModel.objects.select_for_update()}
    for name, values in wanted.items():
        model = existing.get(name)
        if model is None:
            AIModel.objects.create(name=name, **values)
            result.created.append(name)
            continue
        changed = [f for f, v in values.items() if getattr(model, f) != v]
        if changed:
            for f in changed:
                setattr(model, f, values[f])
            model.save(update_fields=[*changed, "updated_at"])
            result.updated.append(name)
        else:
            result.unchanged.append(name)
    for name, model in existing.items():
        if name not in wanted and model.enabled:
            model.enabled = False
            model.save(update_fields=["enabled", "updated_at"])
            result.disabled.append(name)
    return result

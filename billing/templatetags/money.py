from __future__ import annotations

from django import template

from core.money import format_cents, format_usd, format_usd_precise

register = template.Library()


@register.filter
def usd(micros: int | None) -> str:
    """Micros → "$1,234.57" (half-cent rounds away from zero; see core/money.py)."""
    return "—" if micros is None else format_usd(int(micros))


@register.filter
def usd_precise(micros: int | None) -> str:
    return "—" if micros is None else format_usd_precise(int(micros))


@register.filter
def cents(value: int | None) -> str:
    """Whole cents → "$1,234.57" (invoice amounts are stored in cents, already rounded)."""
    return "—" if value is None else format_cents(int(value))


@register.filter
def dollars(micros: int | None) -> str:
    """Micros → "1234.50" (a form input's value; whole cents)."""
    return "" if micros is None else f"{int(micros) / 1_000_000:.2f}"

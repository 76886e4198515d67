from __future__ import annotations

from django import template

from billing.money import format_usd, format_usd_precise

register = template.Library()


@register.filter
def usd(micros: int | None) -> str:
    """Micros → "$1,234.57" (half-cent rounds away from zero; see billing/money.py)."""
    return "—" if micros is None else format_usd(int(micros))


@register.filter
def usd_precise(micros: int | None) -> str:
    return "—" if micros is None else format_usd_precise(int(micros))

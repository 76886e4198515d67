"""Money helpers. Amounts are integer micro-dollars everywhere; floats never touch money.

Display rule (the only rounding in the project's money path): an amount in micros is shown in
cents rounded half away from zero — 1,235,000 micros → $1.24 (half a cent rounds up),
-1,235,000 → -$1.24. Totals that are displayed are sums of displayed (rounded) parts, so a
total always equals the sum of the lines shown above it.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

MICROS_PER_DOLLAR = 1_000_000
MICROS_PER_CENT = 10_000


def micros_to_cents(micros: int) -> int:
    """Round micros to whole cents, half away from zero."""
    sign = -1 if micros < 0 else 1
    cents, rest = divmod(abs(micros), MICROS_PER_CENT)
    if rest * 2 >= MICROS_PER_CENT:
        cents += 1
    return sign * cents


def format_cents(cents: int) -> str:
    sign = "-" if cents < 0 else ""
    dollars, rest = divmod(abs(cents), 100)
    return f"{sign}${dollars:,}.{rest:02d}"


def format_usd(micros: int) -> str:
    """Return e.g. "$1,234.57" for an amount in micros (display rule above)."""
    return format_cents(micros_to_cents(micros))


def format_usd_precise(micros: int) -> str:
    """Return the exact amount with up to six decimals, e.g. "$0.000135" (for per-request costs)."""
    sign = "-" if micros < 0 else ""
    dollars, rest = divmod(abs(micros), MICROS_PER_DOLLAR)
    frac = f"{rest:06d}".rstrip("0")
    frac = frac.ljust(2, "0")
    return f"{sign}${dollars:,}.{frac}"


def parse_dollars(text: str | int | Decimal) -> int:
    """Parse a dollar amount such as "10", "10.5" or "0.000001" into micros, exactly.

    Raises ValueError for anything that is not a finite number with at most six decimals.
    """
    try:
        value = Decimal(str(text).strip().replace(",", "").lstrip("$"))
    except InvalidOperation:
        raise ValueError(f"“{text}” is not an amount in dollars.") from None
    if not value.is_finite():
        raise ValueError(f"“{text}” is not an amount in dollars.")
    micros = value * MICROS_PER_DOLLAR
    if micros != micros.to_integral_value():
        raise ValueError("Amounts can have at most six decimals (one micro-dollar).")
    return int(micros.quantize(Decimal(1), rounding=ROUND_HALF_UP))

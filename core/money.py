"""Money helpers. Amounts are integer micro-dollars everywhere; floats never touch money.

Display rule (the only rounding in the project's money path): an amount in micros is shown in
cents rounded half away from zero — 1,235,000 micros → $1.24 (half a cent rounds up),
-1,235,000 → -$1.24. Totals that are displayed are sums of displayed (rounded) parts, so a
total always equals the sum of the lines shown above it.
"""

from __future__ import annotations

import re
from decimal import Decimal

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


# Plain decimal notation only: digits, one optional point, up to six decimals (a micro-dollar).
# No exponents ("1e30"), no NaN/Infinity, no underscores and no non-ASCII digits, which
# Decimal() would all read but nobody types as a price.
_AMOUNT = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)", re.ASCII)
MAX_INPUT_LENGTH = 32
_NOT_AN_AMOUNT = "That is not an amount in dollars; write it like 20.00."
# The largest amount any money field takes: $1 billion (a BIGINT holds 9.2e12 dollars).
MAX_AMOUNT_MICROS = 10**15


def parse_dollars(text: str | int | Decimal) -> int:
    """Parse a dollar amount such as "10", "$1,234.50" or "0.000001" into micros, exactly.

    The one parser of amounts people type (forms, commands). Raises ValueError, with a short
    message meant for the person, for anything that is not a plain decimal number with at most
    six decimals whose size is at most MAX_AMOUNT_MICROS. "-0" is 0: callers decide the range.
    """
    if isinstance(text, bool):
        raise ValueError(_NOT_AN_AMOUNT)
    if isinstance(text, Decimal):
        if not text.is_finite():
            raise ValueError(_NOT_AN_AMOUNT)
        text = format(text, "f")
    raw = str(text).strip()
    if len(raw) > MAX_INPUT_LENGTH:
        raise ValueError("That amount is too long.")
    cleaned = raw.replace(",", "").replace("$", "", 1)
    if not _AMOUNT.fullmatch(cleaned):
        raise ValueError(_NOT_AN_AMOUNT)
    whole, _, fraction = cleaned.lstrip("+-").partition(".")
    if len(fraction.rstrip("0")) > 6:
        raise ValueError("Amounts can have at most six decimals (one micro-dollar).")
    micros = int(whole or "0") * MICROS_PER_DOLLAR + int(fraction[:6].ljust(6, "0"))
    if micros > MAX_AMOUNT_MICROS:
        raise ValueError("That amount is too large.")
    return -micros if cleaned.startswith("-") else micros

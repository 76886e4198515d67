"""The rounding rule — the only place invoice amounts are rounded.

The invoice total is the exact sum of its billed lines in micros, rounded once to cents, half
away from zero (`core.money`). That total is then shared out over the lines by the
largest-remainder method: every line gets its amount rounded down to a cent, and the cents still
missing go one each to the lines with the largest remainders (ties: the earlier line). So the
displayed lines always add up to the displayed total, and the total never drifts from the ledger
by more than half a cent — even for an invoice made of thousands of sub-cent lines.
"""

from __future__ import annotations

from billing.invoicing import InvoiceError
from core.money import MICROS_PER_CENT, micros_to_cents


def allocate_cents(amounts_micros: list[int]) -> list[int]:
    """Share the rounded total of non-negative amounts out over them (largest remainder).

    Returns cents per amount, summing exactly to `micros_to_cents(sum(amounts_micros))`.
    """
    if any(a < 0 for a in amounts_micros):
        raise InvoiceError("Only non-negative amounts are shared out.")
    total = micros_to_cents(sum(amounts_micros))
    cents = [a // MICROS_PER_CENT for a in amounts_micros]
    missing = total - sum(cents)
    order = sorted(
        range(len(amounts_micros)), key=lambda i: (-(amounts_micros[i] % MICROS_PER_CENT), i)
    )
    for i in order[:missing]:
        cents[i] += 1
    return cents

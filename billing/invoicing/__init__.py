"""Invoices: one per group and closed period, built from usage events and the ledger.

What an invoice holds
- One usage line per (model, key) of the period — requests, tokens, searches and the amount —
  labelled `MODEL (LAST4)` with the key's last four characters as they were when it was issued
  (Search API models by their API: `Search API (LAST4)`, `Search API · fast (LAST4)`).
- Late usage: events that reached the database after an earlier period's invoice was made (they
  carry their original timestamp) are billed on the next invoice as lines of their own,
  "sonar (743S) · usage from October 2026". Nothing is ever billed twice or lost: for each of the
  last `INVOICE_LATE_USAGE_PERIODS` periods the invoiced quantities are compared with the events.
- The period's credit purchases, auto top-ups, refunds, promotional credits and adjustments
  (listed, not part of the total: usage is prepaid and settled from credits).
- Opening balance + credits − usage = closing balance, to the micro-dollar.

Reconciliation: the usage lines of the period sum, in micros, to the ledger's usage debits of
the period (the gateway writes each usage event and its ledger debit in one statement with the
same timestamp). The generator checks this and refuses to issue an invoice that does not add up.

Idempotency: a session-level advisory lock per group serializes generation; an existing invoice
for the group and period is returned as it is; a unique constraint backs this up. Numbers come
from `InvoiceSequence` inside the inserting transaction, so they are gap-free per prefix and year
(`INV-2026-000123`; credit notes `CN-2026-000007`). Finalized invoices are immutable (database
trigger); corrections are credit notes.

The modules, each importing only the ones above it in this list:
- `periods`: billing periods (calendar months or ISO weeks, in UTC) and their keys.
- `allocation`: the rounding rule — the only place invoice amounts are rounded.
- `documents`: what every invoice document carries — its lines, gap-free number, bill-to and
  issuer — and how one is inserted.
- `drafts`: what an invoice says, read from one database snapshot (usage, late usage, ledger).
- `generation`: issuing the invoices of a closed period, once per group.
- `credit_notes`: corrections of issued invoices.
"""

from __future__ import annotations


class InvoiceError(ValueError):
    """An invoice that cannot be issued; the message says why."""

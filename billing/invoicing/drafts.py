"""What an invoice says, read from one database snapshot: usage, late usage and the ledger.

Nothing here writes. `draft_read` returns the lines and balances of a group's period, checked
against the ledger (see the reconciliation rule in `billing.invoicing`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import connection, transaction

from billing.invoicing import InvoiceError
from billing.invoicing.documents import DraftLine
from billing.invoicing.periods import BillingPeriod
from billing.models import CreditAccount, EntryKind, Invoice, InvoiceKind, InvoiceLine, LineSection
from groups.models import APIGroup
from keys.models import APIKey
from usage.metrics import COUNTS
from usage.models import AIModel
from usage.rollups import raw_events_from
from usage.search import display_name


@dataclass
class Draft:
    lines: list[DraftLine] = field(default_factory=list)
    opening: int = 0
    closing: int = 0
    purchases: int = 0
    refunds: int = 0
    other: int = 0
    usage: int = 0


# What a usage line sums (an InvoiceLine's fields), in the order _USAGE_SQL selects them.
_METRICS = ("requests", *COUNTS, "amount_micros")

_SUMS = ", ".join(f"sum(e.{m})" for m in COUNTS)
_USAGE_SQL = f"""
SELECT {{bucket}} e.model_id, e.api_key_id, count(*), {_SUMS},
       sum(e.cost_micros - e.tools_cost_micros)
  FROM usage_usageevent e
 WHERE e.group_id = %s AND e.created_at >= %s AND e.created_at < %s
 GROUP BY {{group_by}}
"""
# The tool fees of the Agent API, per tool and key: their own lines (`web_search (743S)`).
_TOOLS_SQL = """
SELECT t.key, e.api_key_id, sum((t.value->>'invocations')::bigint),
       sum((t.value->>'cost_micros')::bigint)
  FROM usage_usageevent e, jsonb_each(e.tool_calls) AS t
 WHERE e.group_id = %s AND e.created_at >= %s AND e.created_at < %s
 GROUP BY 1, 2
"""

# The ledger section each listed (non-usage) entry kind goes to.
_SECTION_OF = {
    EntryKind.PURCHASE: LineSection.PURCHASE,
    EntryKind.AUTO_TOP_UP: LineSection.PURCHASE,
    EntryKind.REFUND: LineSection.REFUND,
    EntryKind.PROMOTIONAL: LineSection.OTHER,
    EntryKind.ADJUSTMENT: LineSection.OTHER,
    EntryKind.EXPIRY: LineSection.OTHER,
}


@contextmanager
def _snapshot() -> Iterator[None]:
    """A read-only transaction that sees one snapshot (REPEATABLE READ) for all its queries."""
    outermost = not connection.in_atomic_block
    with transaction.atomic():
        if outermost:
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        yield


def _names(model_ids: Iterable[int], key_ids: Iterable[int]) -> tuple[dict, dict]:
    models = dict(AIModel.objects.filter(pk__in=set(model_ids)).values_list("pk", "name"))
    keys = {
        k["pk"]: (k["name"], k["last_four"])
        for k in APIKey.objects.filter(pk__in=set(key_ids)).values("pk", "name", "last_four")
    }
    return models, keys


def _labels(model_ids: Iterable[int]) -> dict[int, str]:
    """How the lines name each model (usage.search.display_name: `Search API · fast`)."""
    rows = AIModel.objects.filter(pk__in=set(model_ids)).values_list("pk", "name", "api")
    return {pk: display_name(name, api) for pk, name, api in rows}


def _usage_line(
    section: str, row: tuple, models: dict, keys: dict, service_period: BillingPeriod,
    labels: dict[int, str] | None = None,
) -> DraftLine:  # fmt: skip
    model_id, key_id, *metrics = row
    model = models[model_id]
    key_name, last_four = keys[key_id]
    label = f"{(labels or {}).get(model_id, model)} ({last_four})"
    if section == LineSection.LATE_USAGE:
        label += f" · usage from {service_period.label}"
    return DraftLine(
        section=section,
        label=label,
        model_name=model,
        key_name=key_name,
        key_last_four=last_four,
        api_key_id=key_id,
        service_period_key=service_period.key,
        **dict(zip(_METRICS, (int(v) for v in metrics), strict=True)),  # type: ignore[arg-type]
    )


def _tool_line(section: str, row: tuple, keys: dict, service_period: BillingPeriod) -> DraftLine:
    tool, key_id, invocations, amount = row
    key_name, last_four = keys[key_id]
    label = f"{tool} ({last_four})"
    if section == LineSection.LATE_USAGE:
        label += f" · usage from {service_period.label}"
    return DraftLine(
        section=section, label=label, tool=tool, key_name=key_name, key_last_four=last_four,
        api_key_id=key_id, service_period_key=service_period.key, invocations=int(invocations),
        amount_micros=int(amount),
    )  # fmt: skip


def _late_tools(
    group: APIGroup, periods: list[BillingPeriod], cursor: Any
) -> list[tuple[BillingPeriod, tuple]]:
    """(earlier period, tool row) for tool fees of earlier invoiced periods not invoiced yet."""
    invoiced: dict[tuple[str, str, int], list[int]] = defaultdict(lambda: [0, 0])
    for line in InvoiceLine.objects.filter(
        invoice__group=group,
        section__in=(LineSection.USAGE, LineSection.LATE_USAGE),
        service_period_key__in=[p.key for p in periods],
    ).exclude(tool="").values("service_period_key", "tool", "api_key_id", "invocations",
                              "amount_micros"):  # fmt: skip
        acc = invoiced[(line["service_period_key"], line["tool"], line["api_key_id"])]
        acc[0] += line["invocations"]
        acc[1] += line["amount_micros"]
    late: list[tuple[BillingPeriod, tuple]] = []
    for p in periods:
        cursor.execute(_TOOLS_SQL, [group.pk, p.start, p.end])
        for tool, key_id, invocations, amount in cursor.fetchall():
            before = invoiced.get((p.key, tool, key_id), [0, 0])
            diff = (int(invocations) - before[0], int(amount) - before[1])
            if any(diff):
                late.append((p, (tool, key_id, *diff)))
    return late


def _late_usage(
    group: APIGroup, period: BillingPeriod, cursor: Any
) -> tuple[list[tuple[BillingPeriod, tuple]], list[tuple[BillingPeriod, tuple]]]:
    """(earlier period, row) for usage of earlier invoiced periods that no invoice covers yet:
    the model × key rows and the tool × key rows."""
    lookback = settings.INVOICE_LATE_USAGE_PERIODS
    first = (
        Invoice.objects.filter(group=group, kind=InvoiceKind.INVOICE)
        .order_by("period_start")
        .values_list("period_start", flat=True)
        .first()
    )
    if first is None or lookback < 1:
        return [], []
    periods: list[BillingPeriod] = []
    p = period
    # Raw events before raw_from were dropped (billing/usage_retention.py, only once every
    # invoice that covers them was issued): there is no late usage to look for there.
    raw_from = raw_events_from()
    for _ in range(lookback):
        p = p.previous()
        if p.start < first or (raw_from is not None and p.start < raw_from):
            break
        periods.append(p)
    if not periods:
        return [], []
    invoiced: dict[tuple[str, str, int], list[int]] = defaultdict(lambda: [0] * len(_METRICS))
    for line in (
        InvoiceLine.objects.filter(
            invoice__group=group,
            section__in=(LineSection.USAGE, LineSection.LATE_USAGE),
            service_period_key__in=[p.key for p in periods],
        )
        .filter(tool="")
        .values("service_period_key", "model_name", "api_key_id", *_METRICS)
    ):
        acc = invoiced[(line["service_period_key"], line["model_name"], line["api_key_id"])]
        for i, metric in enumerate(_METRICS):
            acc[i] += line[metric]
    late: list[tuple[BillingPeriod, tuple]] = []
    for p in periods:
        cursor.execute(_USAGE_SQL.format(bucket="", group_by="1, 2"), [group.pk, p.start, p.end])
        rows = cursor.fetchall()
        if not rows:
            continue
        models, _ = _names((r[0] for r in rows), ())
        for row in rows:
            model_id, key_id, *now = (int(v) for v in row)
            before = invoiced.get((p.key, models[model_id], key_id), [0] * len(_METRICS))
            diff = [a - b for a, b in zip(now, before, strict=True)]
            if any(diff):
                late.append((p, (model_id, key_id, *diff)))
    return late, _late_tools(group, periods, cursor)


def _ledger(
    cursor: Any, account_id: int, period: BillingPeriod
) -> tuple[int, dict[str, int], list[tuple]]:
    """The balance at the period's end, its totals per entry kind, and its non-usage entries."""
    cursor.execute(
        """
        SELECT a.balance_micros - COALESCE(
            (SELECT sum(amount_micros) FROM billing_ledgerentry
              WHERE account_id = a.id AND created_at >= %s), 0)
          FROM billing_creditaccount a WHERE a.id = %s
        """,
        [period.end, account_id],
    )
    balance_end = int(cursor.fetchone()[0])
    cursor.execute(
        """
        SELECT kind, sum(amount_micros) FROM billing_ledgerentry
         WHERE account_id = %s AND created_at >= %s AND created_at < %s GROUP BY kind
        """,
        [account_id, period.start, period.end],
    )
    moves = {kind: int(total) for kind, total in cursor.fetchall()}
    cursor.execute(
        """
        SELECT kind, amount_micros, reference, description, created_at
          FROM billing_ledgerentry
         WHERE account_id = %s AND created_at >= %s AND created_at < %s AND kind <> 'usage'
         ORDER BY created_at, id
        """,
        [account_id, period.start, period.end],
    )
    return balance_end, moves, cursor.fetchall()


def _usage_lines(
    period: BillingPeriod, usage_rows: list[tuple], late_rows: list[tuple[BillingPeriod, tuple]],
    tool_rows: Sequence[tuple] = (), late_tools: Sequence[tuple[BillingPeriod, tuple]] = (),
) -> tuple[list[DraftLine], list[DraftLine]]:  # fmt: skip
    """The period's usage lines and the late-usage lines, each in the order they are shown:
    per model and key (its tokens), then per tool and key (its fees)."""
    models, keys = _names(
        [r[0] for r in usage_rows] + [r[0] for _, r in late_rows],
        [r[1] for r in usage_rows] + [r[1] for _, r in late_rows]
        + [r[1] for r in tool_rows] + [r[1] for _, r in late_tools],
    )  # fmt: skip
    labels = _labels(models)
    usage = sorted(
        [_usage_line(LineSection.USAGE, row, models, keys, period, labels) for row in usage_rows]
        + [_tool_line(LineSection.USAGE, row, keys, period) for row in tool_rows],
        key=lambda ln: (ln.tool, ln.model_name, ln.key_name, ln.key_last_four, ln.api_key_id or 0),
    )
    late = sorted(
        [_usage_line(LineSection.LATE_USAGE, row, models, keys, p, labels)
         for p, row in late_rows]
        + [_tool_line(LineSection.LATE_USAGE, row, keys, p) for p, row in late_tools],
        key=lambda ln: (ln.service_period_key, ln.tool, ln.model_name, ln.key_name,
                        ln.api_key_id or 0),
    )  # fmt: skip
    return usage, late


def _credit_lines(entries: list[tuple]) -> list[DraftLine]:
    labels = dict(EntryKind.choices)
    return [
        DraftLine(
            section=_SECTION_OF[kind],
            label=description or labels[kind],
            amount_micros=int(amount),
            occurred_at=created_at,
            reference=reference,
        )
        for kind, amount, reference, description, created_at in entries
    ]


def draft_read(group: APIGroup, period: BillingPeriod) -> Draft | None:
    """Everything the invoice says, read from one snapshot; None when there was no activity."""
    with _snapshot(), connection.cursor() as cursor:
        account = CreditAccount.objects.filter(group=group).first()
        cursor.execute(
            _USAGE_SQL.format(bucket="", group_by="1, 2"), [group.pk, period.start, period.end]
        )
        usage_rows = cursor.fetchall()
        cursor.execute(_TOOLS_SQL, [group.pk, period.start, period.end])
        tool_rows = cursor.fetchall()
        late_rows, late_tools = _late_usage(group, period, cursor)
        balance_end, moves, entries = (
            _ledger(cursor, account.pk, period) if account is not None else (0, {}, [])
        )
    if not usage_rows and not late_rows and not late_tools and not moves:
        return None

    usage, late = _usage_lines(period, usage_rows, late_rows, tool_rows, late_tools)
    period_usage = sum(ln.amount_micros for ln in usage)
    if period_usage != -moves.get(EntryKind.USAGE, 0):
        raise InvoiceError(
            f"Usage of {group.name} in {period.key} does not reconcile: events "
            f"{period_usage} micros, ledger usage debits {-moves.get(EntryKind.USAGE, 0)} micros."
        )
    late_micros = sum(ln.amount_micros for ln in late)
    draft = Draft(
        lines=usage + late + _credit_lines(entries),
        usage=period_usage + late_micros,
        purchases=moves.get(EntryKind.PURCHASE, 0) + moves.get(EntryKind.AUTO_TOP_UP, 0),
        refunds=moves.get(EntryKind.REFUND, 0),
        other=moves.get(EntryKind.PROMOTIONAL, 0)
        + moves.get(EntryKind.ADJUSTMENT, 0)
        + moves.get(EntryKind.EXPIRY, 0),
        closing=balance_end,
        # The balance the previous invoice closed with (before the late debits billed here).
        opening=balance_end - sum(moves.values()) + late_micros,
    )
    assert draft.closing == (
        draft.opening + draft.purchases + draft.refunds + draft.other - draft.usage
    )
    return draft

"""Budgets (issue 19): create, change and delete a group's or a key's budget. Every change is
audited. The gateway re-reads the hard budgets of the groups it serves every 0.5 s
(gateway/budgets.py), so a change is in force on every worker within about a second.

A key's `monthly_limit_micros` stays as it was (a hard limit on the key's calendar-month spend in
UTC, checked without a reservation); budgets are the richer control beside it — windows in the
group's time zone, group-wide or per key, hard or soft — and the two are enforced together.
"""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction

from audit.services import audit_record
from billing.models import Budget, BudgetEnforcement, BudgetWindow
from keys.models import APIKey, KeyStatus

MAX_BUDGET_MICROS = 1_000_000 * 1_000_000  # $1,000,000


class BudgetError(ValueError):
    """A budget that cannot be saved as asked; the message says why (and `field` which input)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def _validate(amount_micros: Any, window: Any, enforcement: Any) -> None:
    if not isinstance(amount_micros, int) or isinstance(amount_micros, bool):
        raise BudgetError("The amount must be a whole number of micro-dollars.", "amount")
    if amount_micros <= 0:
        raise BudgetError("The amount must be more than $0.", "amount")
    if amount_micros > MAX_BUDGET_MICROS:
        raise BudgetError("The amount can be at most $1,000,000.", "amount")
    if window not in BudgetWindow.values:
        raise BudgetError(f"The window must be one of {', '.join(BudgetWindow.values)}.", "window")
    if enforcement not in BudgetEnforcement.values:
        raise BudgetError("The enforcement must be “hard” or “soft”.", "enforcement")


def _describe(budget: Budget) -> dict[str, Any]:
    return {
        "key": budget.api_key.name if budget.api_key is not None else None,
        "amount_micros": budget.amount_micros,
        "window": budget.window,
        "enforcement": budget.enforcement,
    }


@transaction.atomic
def budget_create(
    *,
    group: Any,
    amount_micros: int,
    window: str,
    enforcement: str = BudgetEnforcement.HARD,
    api_key: APIKey | None = None,
    actor: Any | None = None,
    request: Any = None,
) -> Budget:
    """A budget of the whole group (api_key None) or of one of its keys; one per window."""
    _validate(amount_micros, window, enforcement)
    if api_key is not None:
        if api_key.group_id != group.pk:
            raise BudgetError("That API key does not belong to this group.", "key")
        if api_key.status == KeyStatus.REVOKED:
            raise BudgetError("A revoked key cannot get a budget.", "key")
    exists = Budget.objects.filter(group=group, api_key=api_key, window=window).exists()
    if exists:
        whose = "This key" if api_key is not None else "The group"
        raise BudgetError(f"{whose} already has a {window} budget: change that one.", "window")
    try:
        with transaction.atomic():
            budget = Budget.objects.create(
                group=group,
                api_key=api_key,
                amount_micros=amount_micros,
                window=window,
                enforcement=enforcement,
                created_by=actor if getattr(actor, "is_authenticated", False) else None,
            )
    except IntegrityError:  # a concurrent create of the same window
        raise BudgetError("That budget already exists.", "window") from None
    audit_record(
        group=group, actor=actor, action="budget.create", target=budget, request=request,
        data=_describe(budget),
    )  # fmt: skip
    return budget


@transaction.atomic
def budget_update(
    *,
    budget: Budget,
    amount_micros: int,
    enforcement: str,
    actor: Any | None = None,
    request: Any = None,
) -> Budget:
    """Change a budget's amount and enforcement (its owner and window stay: delete and create
    another budget to change them)."""
    _validate(amount_micros, budget.window, enforcement)
    budget = (
        Budget.objects.select_for_update(of=("self",)).select_related("api_key").get(pk=budget.pk)
    )
    changes = {
        field: [str(getattr(budget, field)), str(value)]
        for field, value in (("amount_micros", amount_micros), ("enforcement", enforcement))
        if getattr(budget, field) != value
    }
    if not changes:
        return budget
    budget.amount_micros, budget.enforcement = amount_micros, enforcement
    budget.save(update_fields=["amount_micros", "enforcement", "updated_at"])
    audit_record(
        group=budget.group, actor=actor, action="budget.update", target=budget, request=request,
        data=changes,
    )  # fmt: skip
    return budget


@transaction.atomic
def budget_delete(*, budget: Budget, actor: Any | None = None, request: Any = None) -> None:
    audit_record(
        group=budget.group, actor=actor, action="budget.delete", target=budget, request=request,
        data=_describe(budget),
    )  # fmt: skip
    budget.delete()

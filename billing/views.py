from __future__ import annotations

from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from billing.selectors import credit_account_get, ledger_transactions, tier_info, usage_by_day
from members.permissions import member_required


@member_required
@require_GET
def overview(request: HttpRequest) -> HttpResponse:
    """Billing: balance, blocked banner, tier and limits, transactions. Everyone may read."""
    account = credit_account_get(group=request.group)  # type: ignore[attr-defined]
    page = Paginator(ledger_transactions(account=account), 20).get_page(request.GET.get("page"))
    return render(
        request,
        "billing/overview.html",
        {
            "account": account,
            "blocked": account.balance_micros <= 0,
            "tier": tier_info(account=account),
            "page": page,
            "usage_days": usage_by_day(account=account),
        },
    )

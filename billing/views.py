from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib import messages
from django.core.paginator import Paginator
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.security import reauthentication_required
from billing import payments, pdf
from billing.budgets import BudgetError, budget_create, budget_delete, budget_update
from billing.forms import AutoTopUpForm, BudgetEditForm, BudgetForm, PurchaseForm
from billing.invoicing.documents import group_address, issuer_details
from billing.invoicing.periods import period_from_key
from billing.models import Payment, PaymentStatus
from billing.selectors import (
    billing_profile_get,
    budget_get_for_group,
    budgets_for_group,
    credit_account_get,
    credit_lots_for_account,
    invoice_get_for_group,
    invoices_for_group,
    ledger_transactions,
    payment_awaiting_action,
    payment_get_for_group,
    payment_method_get_for_group,
    payment_methods_for_group,
    purchases_processing,
    receipts_for_group,
    tier_info,
    usage_by_day,
)
from billing.stripe_api import StripeFailure
from billing.tasks import auto_top_up as auto_top_up_task
from core.money import format_usd
from core.replica import reading_from_replica
from keys.models import KeyStatus
from keys.selectors import api_key_get_for_group, api_keys_for_group
from members.permissions import GroupRequest, admin_required, member_required


def _stripe_js() -> dict[str, str]:
    return {
        "stripe_js_url": settings.STRIPE_JS_URL,
        "stripe_publishable_key": settings.STRIPE_PUBLISHABLE_KEY,
    }


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def allow_stripe_js(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Let the page load Stripe.js, its card frames and its API calls (Content-Security-Policy).

    Read from the settings at each request: the origins are Stripe's, or localstripe's in
    development and tests.
    """

    @wraps(view)
    def wrapper(request: GroupRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = view(request, *args, **kwargs)
        js = _origin(settings.STRIPE_JS_URL)
        api = (
            _origin(settings.STRIPE_API_BASE)
            if settings.STRIPE_API_BASE
            else "https://api.stripe.com"
        )
        response._csp_update = {  # type: ignore[attr-defined]  # django-csp's per-response hook
            "script-src": [js],
            "connect-src": [api],
            "frame-src": [js, "https://hooks.stripe.com"],  # card fields; 3-D Secure pages
        }
        return response

    return wrapper


def _to_billing(request: GroupRequest) -> HttpResponse:
    return redirect("billing:overview", group_id=request.group.public_id)


def _page(request: GroupRequest, status: int = 200, **forms: object) -> HttpResponse:
    group = request.group
    account = credit_account_get(group=group)
    profile = billing_profile_get(group=group)
    page = Paginator(ledger_transactions(account=account), 20).get_page(request.GET.get("page"))
    context = {
        "account": account,
        "profile": profile,
        "blocked": account.balance_micros <= 0,
        "tier": tier_info(account=account),
        "page": page,
        "usage_days": usage_by_day(account=account),
        "lots": credit_lots_for_account(account=account),
        "now": timezone.now(),
        "cards": payment_methods_for_group(group=group),
        "pending_payment": payment_awaiting_action(group=group),
        "processing": purchases_processing(group=group),
        "purchase_form": forms.get("purchase_form") or PurchaseForm(prefix="buy"),
        "top_up_form": forms.get("top_up_form")
        or AutoTopUpForm(
            prefix="topup",
            initial={
                "enabled": profile.auto_top_up_enabled,
                "threshold": f"{profile.auto_top_up_threshold_micros / 1e6:.2f}",
                "amount": f"{profile.auto_top_up_amount_micros / 1e6:.2f}",
            },
        ),
        "budgets": budget_context(request, "group", forms.get("budget_form")),
        **_stripe_js(),
    }
    return render(request, "billing/overview.html", context, status=status)


@member_required
@require_GET
def overview(request: GroupRequest) -> HttpResponse:
    """Billing: balance, tier and limits, cards, credits, auto top-up, transactions."""
    return _page(request)


@admin_required
@reauthentication_required
@require_GET
@allow_stripe_js
def card_new(request: GroupRequest) -> HttpResponse:
    """The card form (Stripe.js). Saving a card charges nothing."""
    try:
        client_secret = payments.card_setup_start(group=request.group)
    except StripeFailure as exc:
        messages.error(request, f"The payment provider is not available: {exc.user_message}")
        return _to_billing(request)
    return render(
        request,
        "billing/card_new.html",
        {
            "client_secret": client_secret,
            **_stripe_js(),
        },
    )


@admin_required
@reauthentication_required
@require_POST
def card_saved(request: GroupRequest) -> HttpResponse:
    """Stripe.js confirmed the SetupIntent in the browser: record the card."""
    try:
        method = payments.card_setup_complete(
            group=request.group,
            setup_intent_id=request.POST.get("setup_intent", ""),
            actor=request.user,
            request=request,
        )
    except (payments.BillingError, StripeFailure) as exc:
        messages.error(request, getattr(exc, "user_message", str(exc)))
        return redirect("billing:card_new", group_id=request.group.public_id)
    messages.success(request, f"{method} saved. Nothing was charged.")
    return _to_billing(request)


@admin_required
@reauthentication_required
@require_POST
def card_default(request: GroupRequest, card_id: str) -> HttpResponse:
    method = payment_method_get_for_group(group=request.group, stripe_id=card_id)
    payments.card_set_default(method=method, actor=request.user, request=request)
    messages.success(request, f"{method} is now the default card.")
    return _to_billing(request)


@admin_required
@reauthentication_required
@require_POST
def card_remove(request: GroupRequest, card_id: str) -> HttpResponse:
    method = payment_method_get_for_group(group=request.group, stripe_id=card_id)
    try:
        payments.card_remove(method=method, actor=request.user, request=request)
    except payments.BillingError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"{method} removed.")
    return _to_billing(request)


@admin_required
@require_POST
def buy(request: GroupRequest) -> HttpResponse:
    """Queue a credit purchase and follow it on its own page while the card is charged."""
    form = PurchaseForm(request.POST, prefix="buy")
    if not form.is_valid():
        return _page(request, status=422, purchase_form=form)
    try:
        payment = payments.purchase(
            group=request.group,
            amount_micros=form.cleaned_data["amount"],
            actor=request.user,
            request=request,
        )
    except payments.BillingError as exc:
        form.add_error("amount", str(exc))
        return _page(request, status=422, purchase_form=form)
    return redirect(
        "billing:payment", group_id=request.group.public_id, payment_id=payment.public_id
    )


@admin_required
@require_GET
def payment(request: GroupRequest, payment_id: str) -> HttpResponse:
    """A credit purchase's state: "processing" (htmx polls this page, a link reloads it) until
    the charge settles it, then the outcome on the Billing page (or the bank's confirmation)."""
    payment = payment_get_for_group(group=request.group, public_id=payment_id)
    if payment.status == PaymentStatus.CREATING:
        template = "billing/payment.html#payment-state" if request.htmx else "billing/payment.html"
        return render(request, template, {"payment": payment})
    if request.htmx:  # settled: load the full page (this URL again), which says how it went
        return HttpResponse(headers={"HX-Redirect": request.get_full_path()})
    if payment.status == PaymentStatus.REQUIRES_ACTION:
        return redirect(
            "billing:complete", group_id=request.group.public_id, payment_id=payment.public_id
        )
    if payment.status == PaymentStatus.SUCCEEDED:
        messages.success(request, f"{format_usd(payment.amount_micros)} of credits added.")
    else:
        messages.error(
            request, f"The payment was declined: {payment.error_message} Nothing was charged."
        )
    return _to_billing(request)


@admin_required
@require_http_methods(["GET", "POST"])
@allow_stripe_js
def complete(request: GroupRequest, payment_id: str) -> HttpResponse:
    """Finish a payment the bank wants confirmed (3-D Secure), on-session with Stripe.js."""
    payment = payment_get_for_group(group=request.group, public_id=payment_id)
    if payment.status != PaymentStatus.REQUIRES_ACTION or not payment.stripe_payment_intent_id:
        return _to_billing(request)
    if request.method == "POST":
        payment = payments.payment_confirm(payment=payment)
        if payment.status == PaymentStatus.SUCCEEDED:
            messages.success(request, f"{format_usd(payment.amount_micros)} of credits added.")
        elif payment.status == PaymentStatus.FAILED:
            messages.error(request, f"The payment failed: {payment.error_message}")
        return _to_billing(request)
    return render(
        request,
        "billing/complete.html",
        {
            "payment": payment,
            "client_secret": payments.payment_client_secret(payment=payment),
            **_stripe_js(),
        },
    )


@admin_required
@reauthentication_required
@require_POST
def auto_top_up(request: GroupRequest) -> HttpResponse:
    form = AutoTopUpForm(request.POST, prefix="topup")
    if form.is_valid():
        try:
            payments.auto_top_up_configure(
                group=request.group,
                enabled=form.cleaned_data["enabled"],
                threshold_micros=form.cleaned_data["threshold"],
                amount_micros=form.cleaned_data["amount"],
                actor=request.user,
                request=request,
            )
        except payments.BillingError as exc:
            form.add_error(exc.field, str(exc))
        else:
            messages.success(
                request,
                "Auto top-up saved." if form.cleaned_data["enabled"] else "Auto top-up is off.",
            )
            if form.cleaned_data["enabled"]:  # the balance may be under the threshold already
                auto_top_up_task.delay_on_commit(request.group.pk)
            return _to_billing(request)
    return _page(request, status=422, top_up_form=form)


# --- Invoice history -----------------------------------------------------------------------


@member_required
@require_GET
@reading_from_replica()
def invoices(request: GroupRequest) -> HttpResponse:
    """Invoice history: invoices and credit notes, and receipts of credit purchases."""
    tab = "receipts" if request.GET.get("tab") == "receipts" else "invoices"
    if tab == "receipts":
        rows: Any = receipts_for_group(group=request.group)
    else:
        rows = invoices_for_group(group=request.group)
    page = Paginator(rows, 24).get_page(request.GET.get("page"))
    return render(request, "billing/invoices.html", {"tab": tab, "page": page})


@member_required
@require_GET
def invoice(request: GroupRequest, invoice_id: str) -> HttpResponse:
    doc = invoice_get_for_group(group=request.group, public_id=invoice_id)
    lines = list(doc.lines.all())
    return render(
        request,
        "billing/invoice.html",
        {
            "invoice": doc,
            "period": period_from_key(doc.period_key),
            "billed": [ln for ln in lines if ln.billed],
            "credits": [ln for ln in lines if not ln.billed],
            "credit_notes": doc.credit_notes.all(),
        },
    )


@member_required
@require_GET
def invoice_pdf(request: GroupRequest, invoice_id: str) -> HttpResponse:
    doc = invoice_get_for_group(group=request.group, public_id=invoice_id)
    return pdf.pdf_response(pdf.invoice_pdf(doc), f"{doc.number}.pdf")


def _receipt_payment(request: GroupRequest, payment_id: str) -> Payment:
    return payment_get_for_group(
        group=request.group, public_id=payment_id, status=PaymentStatus.SUCCEEDED
    )


def _issuer() -> tuple[str, str, str]:
    fields = issuer_details()
    return fields["issuer_name"], fields["issuer_address"], fields["issuer_tax_id"]


@member_required
@require_GET
def receipt(request: GroupRequest, payment_id: str) -> HttpResponse:
    payment = _receipt_payment(request, payment_id)
    name, address, tax_id = _issuer()
    return render(
        request,
        "billing/receipt.html",
        {
            "payment": payment,
            "issuer_name": name,
            "issuer_address": address,
            "issuer_tax_id": tax_id,
            "bill_to_address": group_address(request.group),
        },
    )


@member_required
@require_GET
def receipt_pdf(request: GroupRequest, payment_id: str) -> HttpResponse:
    payment = _receipt_payment(request, payment_id)
    return pdf.pdf_response(
        pdf.receipt_pdf(payment, issuer=_issuer()), f"receipt-{payment.public_id}.pdf"
    )


# --- Budgets (group budgets on this page; key budgets on the API Keys page) ------------------


def budget_context(request: GroupRequest, scope: str, form: Any = None) -> dict[str, Any]:
    """The budgets panel of the Billing page (scope "group") or the API Keys page ("keys")."""
    group = request.group
    keys = scope == "keys"
    active = [k for k in api_keys_for_group(group=group) if k.status == KeyStatus.ACTIVE]
    return {
        "budget_scope": scope,
        "budget_rows": budgets_for_group(group=group, keys=keys),
        "budget_form": form or BudgetForm(prefix=f"budget-{scope}", keys=active if keys else None),
        "budget_zone": group.time_zone,
    }


def keys_page_budgets(request: GroupRequest) -> dict[str, Any]:
    """The API Keys page's section (keys.views.page_sections): each key's budgets."""
    return {"key_budgets": budget_context(request, "keys")}


def _budgets_panel(
    request: GroupRequest, scope: str, status: int = 200, form: Any = None
) -> HttpResponse:
    if request.htmx:
        context = {"budgets": budget_context(request, scope, form)}
        return render(request, "billing/_budgets.html", context, status=status)
    if status >= 400 and scope == "group":
        return _page(request, status=status, budget_form=form)
    if scope == "keys":
        return redirect("keys:list", group_id=request.group.public_id)
    return _to_billing(request)


def _scope(request: GroupRequest) -> str:
    return "keys" if request.POST.get("scope") == "keys" else "group"


@admin_required
@require_POST
def budget_add(request: GroupRequest) -> HttpResponse:
    """Create a budget of the group, or of one of its keys (scope "keys")."""
    scope = _scope(request)
    group = request.group
    active = [k for k in api_keys_for_group(group=group) if k.status == KeyStatus.ACTIVE]
    form = BudgetForm(request.POST, prefix=f"budget-{scope}",
                      keys=active if scope == "keys" else None)  # fmt: skip
    if form.is_valid():
        data = form.cleaned_data
        key = api_key_get_for_group(group=group, public_id=data["key"]) if scope == "keys" else None
        try:
            budget_create(
                group=group, api_key=key, amount_micros=data["amount"], window=data["window"],
                enforcement=data["enforcement"], actor=request.user, request=request,
            )  # fmt: skip
        except BudgetError as exc:
            form.add_error(exc.field if exc.field in form.fields else None, str(exc))
        else:
            messages.success(request, "Budget saved.")
            return _budgets_panel(request, scope)
    return _budgets_panel(request, scope, status=422, form=form)


@admin_required
@require_POST
def budget_edit(request: GroupRequest, budget_id: int) -> HttpResponse:
    """Change a budget's amount and enforcement."""
    budget = budget_get_for_group(group=request.group, budget_id=budget_id)
    scope = "keys" if budget.api_key_id else "group"
    form = BudgetEditForm(request.POST, prefix=f"budget-{budget.pk}")
    if form.is_valid():
        try:
            budget_update(
                budget=budget, amount_micros=form.cleaned_data["amount"],
                enforcement=form.cleaned_data["enforcement"], actor=request.user, request=request,
            )  # fmt: skip
        except BudgetError as exc:
            messages.error(request, str(exc))
            return _budgets_panel(request, scope, status=422)
        messages.success(request, "Budget saved.")
        return _budgets_panel(request, scope)
    messages.error(request, "; ".join(str(e) for errors in form.errors.values() for e in errors))
    return _budgets_panel(request, scope, status=422)


@admin_required
@require_POST
def budget_remove(request: GroupRequest, budget_id: int) -> HttpResponse:
    budget = budget_get_for_group(group=request.group, budget_id=budget_id)
    scope = "keys" if budget.api_key_id else "group"
    budget_delete(budget=budget, actor=request.user, request=request)
    messages.success(request, "Budget deleted.")
    return _budgets_panel(request, scope)

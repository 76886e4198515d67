from __future__ import annotations

from django import forms
from django.conf import settings

from core.money import parse_dollars


class DollarField(forms.CharField):
    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        kwargs.setdefault("widget", forms.TextInput(attrs={"inputmode": "decimal"}))
        super().__init__(*args, **kwargs)

    def clean(self, value):  # type: ignore[no-untyped-def]
        raw = super().clean(value)
        if raw in (None, ""):
            return None
        try:
            micros = parse_dollars(raw)  # refuses exponents, NaN, sub-micro and huge amounts
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from exc
        if micros < 0:
            raise forms.ValidationError("The amount can't be negative.")
        if micros % 10_000:
            raise forms.ValidationError("Use whole cents, like 20.00.")
        return micros


class PurchaseForm(forms.Form):
    amount = DollarField(label="Amount (USD)", help_text="")

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.fields["amount"].help_text = (
            f"From ${settings.BILLING_MIN_PURCHASE:,} to ${settings.BILLING_MAX_PURCHASE:,}. "
            "Charged to your default card now."
        )


class AutoTopUpForm(forms.Form):
    enabled = forms.BooleanField(required=False, label="Turn on auto top-up")
    threshold = DollarField(label="When the balance falls below (USD)")
    amount = DollarField(label="Add this amount (USD)")


class BudgetForm(forms.Form):
    """A new budget: of the whole group or (scope "keys") of one of its active keys."""

    key = forms.ChoiceField(label="API key", required=True)
    amount = DollarField(label="Amount (USD)")
    window = forms.ChoiceField(
        label="Window",
        choices=[
            ("daily", "Daily"),
            ("weekly", "Weekly (from Monday)"),
            ("monthly", "Monthly"),
            ("lifetime", "Lifetime"),
        ],  # fmt: skip
        help_text="Windows start at midnight in the group's time zone.",
    )
    enforcement = forms.ChoiceField(
        label="When it is spent",
        choices=[("hard", "Refuse requests (hard)"), ("soft", "Alerts only (soft)")],
    )

    def __init__(self, *args, keys=None, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        if keys is None:  # a group budget
            del self.fields["key"]
        else:
            field = self.fields["key"]
            assert isinstance(field, forms.ChoiceField)
            field.choices = [(k.public_id, k.name) for k in keys]

    def clean_amount(self) -> int:
        amount = self.cleaned_data.get("amount")
        if not amount:
            raise forms.ValidationError("The amount must be more than $0.")
        return int(amount)


class BudgetEditForm(forms.Form):
    amount = DollarField(label="Amount (USD)")
    enforcement = BudgetForm.base_fields["enforcement"]

    def clean_amount(self) -> int:
        amount = self.cleaned_data.get("amount")
        if not amount:
            raise forms.ValidationError("The amount must be more than $0.")
        return int(amount)

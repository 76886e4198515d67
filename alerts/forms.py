from __future__ import annotations

import re
from typing import Any

from django import forms

from alerts.models import AlertKind, PayloadFormat
from alerts.selectors import budgets_for_group, memberships_for_group, webhook_endpoints_for_group
from billing.forms import DollarField


class BudgetChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: Any) -> str:
        who = f"key “{obj.api_key.name}”" if obj.api_key_id else "Whole group"
        return f"{who}: ${obj.amount_micros / 1_000_000:,.2f} {obj.get_window_display().lower()}"


class MemberChoiceField(forms.ModelMultipleChoiceField):
    def label_from_instance(self, obj: Any) -> str:
        return f"{obj.user.email} ({obj.get_role_display()})"


class AlertForm(forms.Form):
    name = forms.CharField(
        max_length=100,
        widget=forms.TextInput(attrs={"placeholder": "e.g. 80% of the monthly budget"}),
    )
    kind = forms.ChoiceField(
        choices=AlertKind.choices, widget=forms.RadioSelect, initial=AlertKind.BUDGET,
        label="Threshold",
    )  # fmt: skip
    budget = BudgetChoiceField(
        queryset=None, required=False, help_text="For a budget alert: the budget it watches."
    )
    percent = forms.IntegerField(
        required=False, min_value=1, max_value=1000, label="Percentage of the budget",
        help_text="Fires once per budget window when the spend reaches this share (e.g. 50, 80, 100).",
    )  # fmt: skip
    balance_threshold = DollarField(
        required=False, label="Balance below (USD)",
        help_text="For a balance alert: fires when the credit balance falls below this; re-arms "
        "when it is back above (a purchase).",
    )  # fmt: skip
    members = MemberChoiceField(
        queryset=None, required=False, widget=forms.CheckboxSelectMultiple,
        to_field_name="public_id", label="E-mail these members",
    )  # fmt: skip
    extra_emails = forms.CharField(
        required=False, max_length=2000, label="Other e-mail addresses",
        widget=forms.Textarea(attrs={"rows": 2, "placeholder": "ops@example.com, finance@example.com"}),
    )  # fmt: skip
    send_email = forms.BooleanField(required=False, initial=True, label="Send e-mail")
    webhooks: forms.ModelMultipleChoiceField = forms.ModelMultipleChoiceField(
        queryset=None, required=False, widget=forms.CheckboxSelectMultiple,
        to_field_name="public_id", label="Post to these webhook endpoints",
    )  # fmt: skip
    enabled = forms.BooleanField(required=False, initial=True, label="Enabled")

    def __init__(self, *args: Any, group: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["budget"].queryset = budgets_for_group(group=group)  # type: ignore[attr-defined]
        self.fields["members"].queryset = memberships_for_group(group=group)  # type: ignore[attr-defined]
        self.fields["webhooks"].queryset = webhook_endpoints_for_group(group=group)  # type: ignore[attr-defined]

    def clean_extra_emails(self) -> list[str]:
        raw = self.cleaned_data.get("extra_emails") or ""
        return [part for part in re.split(r"[\s,;]+", raw) if part]


class WebhookEndpointForm(forms.Form):
    name = forms.CharField(
        max_length=100, widget=forms.TextInput(attrs={"placeholder": "e.g. Ops Slack"})
    )
    url = forms.CharField(
        max_length=500, label="URL",
        widget=forms.URLInput(attrs={"placeholder": "https://hooks.example.com/portal"}),
        help_text="Each delivery is a POST signed with the endpoint's secret (Portal-Signature).",
    )  # fmt: skip
    payload_format = forms.ChoiceField(
        choices=PayloadFormat.choices, initial=PayloadFormat.JSON, label="Payload"
    )


class WebhookEndpointEditForm(WebhookEndpointForm):
    enabled = forms.BooleanField(required=False, label="Enabled")

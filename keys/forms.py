from __future__ import annotations

from datetime import UTC, datetime, time
from typing import Any

from django import forms
from django.utils import timezone

from core.money import parse_dollars
from keys.services import MAX_MONTHLY_LIMIT_MICROS


class APIKeyForm(forms.Form):
    name = forms.CharField(
        max_length=100,
        error_messages={"required": "Give the key a name."},
        widget=forms.TextInput(attrs={"placeholder": "e.g. Production server"}),
    )
    expires_on = forms.DateField(
        required=False,
        label="Expires on",
        help_text="Optional. The key stops working at the start of this day (UTC).",
        widget=forms.DateInput(attrs={"type": "date"}),
    )
    monthly_limit = forms.CharField(
        required=False,
        label="Monthly spend limit (USD)",
        help_text="Optional. Requests are refused once the key has spent this much in a calendar month.",
        widget=forms.TextInput(attrs={"inputmode": "decimal", "placeholder": "e.g. 50.00"}),
    )

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        if not name:
            raise forms.ValidationError("Give the key a name.")
        return name

    def clean_expires_on(self) -> Any:
        day = self.cleaned_data.get("expires_on")
        if day is None:
            return None
        moment = datetime.combine(day, time(0), tzinfo=UTC)
        if moment <= timezone.now():
            raise forms.ValidationError("The expiry date must be in the future.")
        return moment

    def clean_monthly_limit(self) -> int | None:
        raw = (self.cleaned_data.get("monthly_limit") or "").strip()
        if not raw:
            return None
        try:
            micros = parse_dollars(raw)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from exc
        if micros <= 0:
            raise forms.ValidationError("A monthly limit must be more than $0.")
        if micros > MAX_MONTHLY_LIMIT_MICROS:
            raise forms.ValidationError("That limit is larger than this portal supports.")
        return micros

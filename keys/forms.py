from __future__ import annotations

from datetime import UTC, datetime, time
from typing import Any

from django import forms
from django.utils import timezone

from core.money import parse_dollars
from keys import restrictions
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


class RestrictionsForm(forms.Form):
    """A key's allowlists (keys/restrictions.py); an empty field means "all"."""

    models = forms.CharField(
        required=False,
        label="Allowed models",
        help_text="Optional. Model names separated by commas, e.g. sonar, sonar-pro. Empty: all.",
        widget=forms.TextInput(attrs={"placeholder": "e.g. sonar, sonar-pro"}),
    )
    apis = forms.MultipleChoiceField(
        required=False,
        label="Allowed APIs",
        choices=[(api, restrictions.API_LABELS[api]) for api in restrictions.APIS],
        help_text="Optional. None ticked: all.",
        widget=forms.CheckboxSelectMultiple,
    )
    tools = forms.CharField(
        required=False,
        label="Allowed tools",
        help_text="Optional. Agent API tool types, e.g. web_search, fetch_url. Empty: all.",
        widget=forms.TextInput(attrs={"placeholder": "e.g. web_search"}),
    )
    ip_ranges = forms.CharField(
        required=False,
        label="Allowed client IP ranges",
        help_text="Optional. CIDR ranges or addresses, IPv4 or IPv6, separated by commas or new "
        "lines, e.g. 10.0.0.0/8. Empty: any address.",
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "e.g. 10.0.0.0/8, 2001:db8::/32"}),
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        try:
            data["restrictions"] = restrictions.clean(
                models=data.get("models"),
                apis=data.get("apis"),
                tools=data.get("tools"),
                ip_ranges=data.get("ip_ranges"),
            )
        except restrictions.RestrictionError as exc:
            self.add_error(exc.field if exc.field in self.fields else None, str(exc))
        return data

    @classmethod
    def initial_for(cls, key: Any) -> dict[str, Any]:
        r = restrictions.of_key(key)
        return {
            "models": ", ".join(r.models),
            "apis": list(r.apis),
            "tools": ", ".join(r.tools),
            "ip_ranges": "\n".join(r.ip_ranges),
        }


GRACE_CHOICES = [
    (0, "Stop at once"),
    (15 * 60, "15 minutes"),
    (3600, "1 hour"),
    (6 * 3600, "6 hours"),
    (24 * 3600, "24 hours"),
]


class RegenerateForm(forms.Form):
    grace_seconds = forms.TypedChoiceField(
        required=False,
        coerce=int,
        empty_value=None,
        choices=GRACE_CHOICES,
        initial=0,
        label="Keep the old secret working for",
        help_text="While your clients move to the new secret. Both work until then.",
    )

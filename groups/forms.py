from __future__ import annotations

import re
from functools import lru_cache
from zoneinfo import available_timezones

from django import forms
from django_countries import countries

from groups.models import APIGroup
from groups.tax_ids import TaxIdError, validate_tax_id

# Common formats shown as help text. Numbers are checked per country with python-stdnum
# (groups/tax_ids.py); where stdnum knows no number for the country, only characters and length.
TAX_ID_EXAMPLES = {
    "US": "EIN, e.g. 12-3456789",
    "GB": "VAT, e.g. GB123456789",
    "DE": "USt-IdNr., e.g. DE123456789",
    "FR": "TVA, e.g. FRXX999999999",
    "NL": "BTW, e.g. NL123456789B01",
    "ES": "NIF/IVA, e.g. ESX12345678",
    "IT": "Partita IVA, e.g. IT12345678901",
    "IE": "VAT, e.g. IE1234567WA",
    "CA": "BN/GST, e.g. 123456789RT0001",
    "AU": "ABN, e.g. 12 345 678 901",
    "IN": "GSTIN, e.g. 22AAAAA0000A1Z5",
    "JP": "Corporate number, e.g. T1234567890123",
    "CH": "UID/MWST, e.g. CHE-123.456.789 MWST",
    "BR": "CNPJ, e.g. 12.345.678/0001-95",
}
TAX_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 .\-/]{1,30}[A-Za-z0-9]$")


@lru_cache(maxsize=1)
def time_zones() -> frozenset[str]:
    """The IANA time zone names zoneinfo knows (and UTC)."""
    return frozenset(available_timezones() | {"UTC"})


class APIGroupForm(forms.ModelForm):
    class Meta:
        model = APIGroup
        fields = [
            "name",
            "description",
            "address_line1",
            "address_line2",
            "city",
            "state",
            "postal_code",
            "country",
            "tax_id",
            "time_zone",
        ]
        widgets = {"description": forms.Textarea(attrs={"rows": 3})}
        labels = {"time_zone": "Time zone"}
        help_texts = {
            "tax_id": "Letters, digits, spaces and . - / only. Common formats: "
            + "; ".join(f"{c}: {v}" for c, v in list(TAX_ID_EXAMPLES.items())[:6])
            + "."
        }

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        if not name:
            raise forms.ValidationError("Give the organization a name.")
        return name

    def clean_tax_id(self) -> str:
        tax_id = " ".join(self.cleaned_data.get("tax_id", "").split())
        if not tax_id:
            return ""
        if len(tax_id) < 3 or len(tax_id) > 32:
            raise forms.ValidationError("A tax ID has 3 to 32 characters.")
        if not TAX_ID_RE.match(tax_id):
            raise forms.ValidationError(
                "Use only letters, digits, spaces and . - / (starting and ending with a letter or digit)."
            )
        tax_id = tax_id.upper()
        country = str(self.cleaned_data.get("country") or "")
        try:
            validate_tax_id(tax_id, country, TAX_ID_EXAMPLES)
        except TaxIdError as exc:
            raise forms.ValidationError(str(exc)) from None
        return tax_id

    def clean_time_zone(self) -> str:
        """An IANA time zone zoneinfo knows; left empty, the group keeps the one it has."""
        name = (self.cleaned_data.get("time_zone") or "").strip()
        if not name:
            return self.instance.time_zone or "UTC"
        if name not in time_zones():
            raise forms.ValidationError(
                "Choose an IANA time zone such as Europe/Paris, America/New_York or UTC."
            )
        return name

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        zone = self.fields["time_zone"]
        zone.required = False
        zone.widget = forms.Select(choices=[(z, z) for z in sorted(time_zones())])
        zone.help_text = "Budget windows (daily, weekly, monthly) start at midnight here."
        # Tailor the tax ID help to the country being entered (or saved).
        country = str(self.data.get("country") or getattr(self.instance, "country", "") or "")
        example = TAX_ID_EXAMPLES.get(country)
        if example:
            self.fields["tax_id"].help_text = f"For {countries.name(country)}: {example}."


class SecurityForm(forms.Form):
    admins_require_mfa = forms.BooleanField(
        required=False,
        label="Admins must use two-factor authentication",
        help_text="Admins without an authenticator app (TOTP) are sent to set one up before they "
        "can use this group's pages. Management keys are not affected.",
    )

from __future__ import annotations

from django import forms

from management.models import ManagementRole


class ManagementKeyForm(forms.Form):
    name = forms.CharField(
        max_length=100,
        error_messages={"required": "Give the key a name."},
        widget=forms.TextInput(attrs={"placeholder": "e.g. Terraform, Finance export"}),
    )
    role = forms.ChoiceField(
        choices=ManagementRole.choices,
        initial=ManagementRole.READ_ONLY,
        help_text="Admin keys can change the group (keys, members, details); Read-only keys "
        "can only read.",
    )

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        if not name:
            raise forms.ValidationError("Give the key a name.")
        return name

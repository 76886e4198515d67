from __future__ import annotations

from django import forms

from groups.models import APIGroup


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
        ]
        widgets = {"description": forms.Textarea(attrs={"rows": 3})}

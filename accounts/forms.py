from __future__ import annotations

from django import forms
from django.http import HttpRequest

from accounts.models import User, time_zone_choices


class SignupForm(forms.Form):
    """Extra fields on allauth's sign-up form."""

    name = forms.CharField(
        max_length=150,
        required=False,
        label="Full name",
        widget=forms.TextInput(attrs={"autocomplete": "name", "placeholder": "Ada Lovelace"}),
    )

    def signup(self, request: HttpRequest, user: User) -> None:
        user.name = self.cleaned_data.get("name", "")
        user.save(update_fields=["name"])


class ProfileForm(forms.ModelForm):
    time_zone = forms.ChoiceField(
        choices=time_zone_choices,
        help_text="Usage charts and times are shown in this time zone.",
    )

    class Meta:
        model = User
        fields = ["name", "time_zone"]

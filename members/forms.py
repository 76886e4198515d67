from __future__ import annotations

from django import forms

from members.models import Role


class InviteForm(forms.Form):
    email = forms.EmailField(
        label="E-mail address",
        widget=forms.EmailInput(
            attrs={"placeholder": "teammate@example.com", "autocomplete": "off"}
        ),
    )
    role = forms.ChoiceField(choices=Role.choices, initial=Role.MEMBER)


HAND_KEYS_TO_HELP = "Hand their management keys to another Admin; left empty, the keys are revoked."


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices)
    hand_keys_to = forms.CharField(required=False, max_length=24, help_text=HAND_KEYS_TO_HELP)


class RemoveForm(forms.Form):
    hand_keys_to = forms.CharField(required=False, max_length=24, help_text=HAND_KEYS_TO_HELP)


class MemberFilterForm(forms.Form):
    role = forms.ChoiceField(choices=[("", "All roles"), *Role.choices], required=False)
    q = forms.CharField(required=False, max_length=254, label="Search by e-mail")

from __future__ import annotations

from groups.models import APIGroup


def api_group_for_form(*, group: APIGroup) -> APIGroup:
    """A fresh copy of the group for a form to validate into (a rejected edit must not change
    the `request.group` the rest of the page renders from)."""
    return APIGroup.objects.get(pk=group.pk)

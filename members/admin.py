from __future__ import annotations

from django.contrib import admin

from members.models import Membership


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "group", "role", "created_at"]
    list_filter = ["role"]
    search_fields = ["user__email", "group__name"]
